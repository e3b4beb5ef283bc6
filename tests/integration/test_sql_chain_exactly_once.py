"""Three layers in one dataflow (ODS -> DWD -> DWS), SIGKILLed at random
moments while a producer writes: every table holds every row exactly once,
and the DWS windows equal a reference over all the records.

Needs: the shared broker (memory storage) from scripts/test.
"""

from __future__ import annotations

from collections import defaultdict

from conftest import Strata, create_topic, produce, produce_in_background, unique, wait_until
from layered import MINUTE, SECOND, LayeredWarehouse, as_sent, disordered_deals, micros, sentinels

PARTITIONS = 4

LAYERS = """
  - name: dwd_deals
    kind: dwd
    inputs: [ods_deals]
    sql: >
      SELECT deal_id, upper(city) AS city, agent, amount, event_time,
             date_trunc('hour', event_time) AS event_hour
      FROM ods_deals
  - name: dws_city_minute
    kind: dws
    inputs: [dwd_deals]
    sql: >
      SELECT window_start, window_end, city, COUNT(*) AS deals, SUM(amount) AS gmv,
             COUNT(DISTINCT agent) AS agents
      FROM TABLE(TUMBLE(TABLE dwd_deals, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
      GROUP BY window_start, window_end, city
"""


def test_a_three_layer_chain_is_exactly_once_across_sigkills(tmp_path, strata_bin, kafka, rng):
    topic = unique("deals")
    create_topic(kafka, topic, partitions=PARTITIONS)
    deals = disordered_deals(24_000, rng, step_us=100_000, jitter_us=5 * SECOND)
    wh = LayeredWarehouse(tmp_path, kafka, topic, LAYERS, interval="300ms",
                          watermark="{delay: 10s, idle_timeout: 60s}")
    thread, failure = produce_in_background(kafka, topic, as_sent(deals, PARTITIONS), chunk=1_000, pause=0.4)
    strata = Strata(strata_bin, wh)
    at_kill = strata.kill_at_random_moments(
        rng, 6, (1.0, 3.0), until=thread,
        observe=lambda: (wh.count("ods", "ods_deals"), wh.count("dwd", "dwd_deals"),
                         wh.count("dws", "dws_city_minute")))
    kills = len(at_kill)
    thread.join()
    assert not failure, failure
    # The kills landed mid-stream, with all three tables part-written.
    assert sum(1 for o, d, s in at_kill if 0 < o < len(deals) and 0 < d and 0 < s) >= 3, at_kill

    produce(kafka, topic, sentinels(PARTITIONS, deals[-1].ts + 60 * MINUTE))
    want = defaultdict(list)
    for d in deals:
        want[(d.ts - d.ts % MINUTE, d.city.upper())].append(d)
    strata.start()
    wait_until(lambda: (strata.assert_alive(), wh.count("dws", "dws_city_minute") >= len(want))[1], 180,
               "every window")
    assert strata.stop() == 0, strata.log()[-3000:]
    print(f"kills={kills} (ods, dwd, dws) rows at each kill: {at_kill}")

    ids = {d.deal_id for d in deals} | {f"s{p}" for p in range(PARTITIONS)}
    for kind, name in [("ods", "ods_deals"), ("dwd", "dwd_deals")]:
        got = wh.table(kind, name).column("deal_id").to_pylist()
        assert len(got) == len(set(got)), f"{name}: {len(got) - len(set(got))} duplicate rows"
        assert set(got) == ids, f"{name}: {len(ids - set(got))} missing"
    dwd = wh.table("dwd", "dwd_deals")
    assert set(dwd.column("city").to_pylist()) <= {"BEIJING", "SHANGHAI", "SHENZHEN", "HANGZHOU", "ZZ_SENTINEL"}

    dws = wh.table("dws", "dws_city_minute")
    keys = list(zip(micros(dws.column("window_start")), dws.column("city").to_pylist()))
    assert len(keys) == len(set(keys)), "a window was emitted twice"
    got = {k: (n, g, a) for k, n, g, a in zip(keys, dws.column("deals").to_pylist(),
                                              dws.column("gmv").to_pylist(), dws.column("agents").to_pylist())}
    expected = {k: (len(ds), sum(d.amount for d in ds), len({d.agent for d in ds})) for k, ds in want.items()}
    assert got == expected
    # Disorder stayed within the delay, restarts included: nothing was late.
    assert wh.count("dws", "dws_city_minute_late") == 0
