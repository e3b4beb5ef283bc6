"""A GROUP BY without windows: an updating result, upserted into its Delta
table by the GROUP BY keys at every checkpoint (one MERGE per epoch, made
idempotent by the epoch's txn), across SIGKILLs.

Needs: the shared broker (memory storage) from scripts/test.
"""

from __future__ import annotations

from collections import defaultdict

from deltalake import DeltaTable

from conftest import Strata, create_topic, produce_in_background, unique, wait_until
from layered import SECOND, LayeredWarehouse, as_sent, disordered_deals

PARTITIONS = 2

LAYERS = """
  - name: ads_city_totals
    kind: ads
    inputs: [ods_deals]
    sql: >
      SELECT city, COUNT(*) AS deals, SUM(amount) AS gmv, MAX(amount) AS top_deal,
             COUNT(DISTINCT agent) AS agents
      FROM ods_deals GROUP BY city
"""


def test_group_by_without_windows_is_upserted_once_per_key_across_sigkills(tmp_path, strata_bin, kafka, rng):
    topic = unique("deals")
    create_topic(kafka, topic, partitions=PARTITIONS)
    wh = LayeredWarehouse(tmp_path, kafka, topic, LAYERS, interval="300ms")
    deals = disordered_deals(10_000, rng, step_us=100_000, jitter_us=SECOND)
    thread, failure = produce_in_background(kafka, topic, as_sent(deals, PARTITIONS), chunk=1_000, pause=0.4)
    strata = Strata(strata_bin, wh)
    path = wh.table_path("ads", "ads_city_totals")
    versions_at_kill = strata.kill_at_random_moments(
        rng, 4, (1.0, 2.5),
        observe=lambda: DeltaTable(str(path)).version() if (path / "_delta_log").exists() else -1)
    thread.join()
    assert not failure, failure
    strata.start()

    want = defaultdict(list)
    for d in deals:
        want[d.city].append(d)
    expected = {c: (len(ds), sum(d.amount for d in ds), max(d.amount for d in ds), len({d.agent for d in ds}))
                for c, ds in want.items()}

    def current():
        t = wh.table("ads", "ads_city_totals")
        if t is None:
            return {}
        return {c: (n, g, m, a) for c, n, g, m, a in zip(*(t.column(k).to_pylist()
                for k in ["city", "deals", "gmv", "top_deal", "agents"]))}

    wait_until(lambda: (strata.assert_alive(), current() == expected)[1], 120, "the totals to match")
    assert strata.stop() == 0, strata.log()[-3000:]
    table = wh.table("ads", "ads_city_totals")
    cities = table.column("city").to_pylist()
    assert len(cities) == len(set(cities)), "one row per key"
    assert current() == expected
    # The table was updated in place over many epochs (MERGE commits), and
    # the kills landed while it was being updated.
    history = DeltaTable(str(wh.table_path("ads", "ads_city_totals"))).history()
    assert sum(1 for h in history if h.get("operation") == "MERGE") >= 5, [h.get("operation") for h in history]
    assert max(versions_at_kill) > 0, versions_at_kill
