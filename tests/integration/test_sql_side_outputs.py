"""Side outputs: late, future-dated and filter-rejected records each land in
their own Delta table, counted exactly, and every record is accounted for.

Needs: the shared broker (memory storage) from scripts/test.
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal

from conftest import Sent, Strata, create_topic, produce, unique, wait_until
from layered import BASE_US, MINUTE, SECOND, Deal, LayeredWarehouse, as_sent, micros, read_topic, sentinels

LAYERS = """
  - name: dwd_deals
    kind: dwd
    inputs: [ods_deals]
    filter: amount > 100
    keep_rejected: true
    side_topics: {{rejected: {rejected}, delivery: exactly_once}}
    sql: SELECT deal_id, city, agent, amount, event_time FROM ods_deals
  - name: dws_city
    kind: dws
    inputs: [dwd_deals]
    side_topics: {{late: {late}}}
    sql: >
      SELECT window_start, window_end, city, COUNT(*) AS deals
      FROM TABLE(TUMBLE(TABLE dwd_deals, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
      GROUP BY window_start, window_end, city
"""


def test_late_future_and_rejected_records_are_counted_exactly(tmp_path, strata_bin, kafka, rng):
    topic = unique("deals")
    create_topic(kafka, topic, partitions=1)
    # Every side table is also published to a topic of its own.
    side_topics = {side: unique(side) for side in ["rejected", "late", "future", "dead_letter"]}
    for t in side_topics.values():
        create_topic(kafka, t, partitions=1)
    wh = LayeredWarehouse(
        tmp_path, kafka, topic, LAYERS.format(**side_topics), watermark="{delay: 5s, idle_timeout: 30s}",
        ods_extra=f"    side_topics: {{future: {side_topics['future']}, dead_letter: {side_topics['dead_letter']}}}\n")
    now_us = time.time_ns() // 1000

    def deal(i: int, ts: int, amount: Decimal | None = None) -> Deal:
        return Deal(f"d{i:06d}", rng.choice(["beijing", "shanghai"]), "a000",
                    amount if amount is not None else Decimal(rng.randint(200, 90_000)), ts)

    # Phase 1: ten minutes of deals, a second apart; every 10th too small
    # for the filter; every 25th dated two hours ahead of the clock.
    on_time, rejected, future = [], [], []
    for i in range(600):
        if i % 25 == 24:
            future.append(deal(i, now_us + 2 * 60 * MINUTE))
        elif i % 10 == 9:
            rejected.append(deal(i, BASE_US + i * SECOND, Decimal(rng.randint(1, 100))))
        else:
            on_time.append(deal(i, BASE_US + i * SECOND))
    phase1 = sorted(on_time + rejected + future, key=lambda d: d.deal_id)
    produce(kafka, topic, as_sent(phase1, 1))
    malformed = produce(kafka, topic, [Sent(key=None, value=b"not json %d" % i, partition=0) for i in range(7)])

    strata = Strata(strata_bin, wh).start()
    # The watermark passes 09:59 - 5 s: windows up to 08:09 close.
    wait_until(lambda: (strata.assert_alive(), wh.count("dws", "dws_city") >= 2 * 9)[1], 60, "closed windows")

    # Phase 2: deals dated in windows that have closed: late.
    late = [deal(1000 + i, BASE_US + rng.randrange(0, 8 * 60) * SECOND) for i in range(137)]
    produce(kafka, topic, as_sent(late, 1))
    # Then a sentinel that closes every window.
    produce(kafka, topic, sentinels(1, BASE_US + 60 * MINUTE))
    wait_until(lambda: (strata.assert_alive(), wh.count("dws", "dws_city_late") >= len(late))[1], 60, "late rows")
    wait_until(lambda: (strata.assert_alive(), wh.count("dws", "dws_city") >= 2 * 10)[1], 60, "every window")
    assert strata.stop() == 0, strata.log()[-3000:]

    # Future-dated records: only in the ODS layer's future table.
    future_rows = wh.table("ods", "ods_deals_future")
    assert sorted(future_rows.column("deal_id").to_pylist()) == sorted(d.deal_id for d in future)
    assert set(future_rows.column("_strata_reason").to_pylist()) == {"event time too far in the future"}
    ods_ids = wh.table("ods", "ods_deals").column("deal_id").to_pylist()
    assert len(ods_ids) == len(set(ods_ids))
    assert set(ods_ids) == {d.deal_id for d in on_time + rejected + late} | {"s0"}

    # Rejected by the filter: in dwd_deals_rejected, with the reason.
    rejected_rows = wh.table("dwd", "dwd_deals_rejected")
    # (The sentinel's amount is 0: rejected too, yet its time still moved
    # the watermark, which flows on whatever the filter drops.)
    assert sorted(rejected_rows.column("deal_id").to_pylist()) == sorted([d.deal_id for d in rejected] + ["s0"])
    assert set(rejected_rows.column("_strata_reason").to_pylist()) == {"rejected by filter: amount > 100"}
    dwd_ids = wh.table("dwd", "dwd_deals").column("deal_id").to_pylist()
    assert sorted(dwd_ids) == sorted(d.deal_id for d in on_time + late)

    # Late at the window layer: in dws_city_late with the watermark they
    # missed; not counted in any window.
    late_rows = wh.table("dws", "dws_city_late")
    assert sorted(late_rows.column("deal_id").to_pylist()) == sorted(d.deal_id for d in late)
    watermarks = micros(late_rows.column("_strata_watermark"))
    assert all(w > t for w, t in zip(watermarks, micros(late_rows.column("event_time")))), "late rows must be behind the watermark"

    # The windows count exactly the on-time deals (the future-dated ones
    # did not drag event time forward: nothing on time was late).
    dws = wh.table("dws", "dws_city")
    got = {(s, c): n for s, c, n in zip(micros(dws.column("window_start")), dws.column("city").to_pylist(),
                                        dws.column("deals").to_pylist())}
    want = Counter((d.ts - d.ts % MINUTE, d.city) for d in on_time)
    assert got == dict(want)

    assert sorted(wh.table("ods", "ods_deals_dead_letter").column("offset").to_pylist()) == sorted(
        m.offset for m in malformed)

    # The side topics carry the same rows as the side tables.
    for side, (kind, table, key) in {
        "rejected": ("dwd", "dwd_deals_rejected", "deal_id"),
        "late": ("dws", "dws_city_late", "deal_id"),
        "future": ("ods", "ods_deals_future", "deal_id"),
        "dead_letter": ("ods", "ods_deals_dead_letter", "offset"),
    }.items():
        published = [v for v, _ in read_topic(kafka, side_topics[side], 1, idle=1.5)]
        rows = wh.table(kind, table)
        assert sorted(str(v[key]) for v in published) == sorted(str(x) for x in rows.column(key).to_pylist()), side
        assert all(v["_strata_reason"] for v in published if side != "dead_letter"), side
