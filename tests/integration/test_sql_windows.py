"""Window table functions over a real stream: each layer's Delta table
equals a plain-Python reference over the same records, out-of-order
records (within the watermark delay) included.

Needs: the shared broker (memory storage) from scripts/test.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from decimal import Decimal

import pytest
from deltalake import DeltaTable

from conftest import Strata, create_topic, produce, unique, wait_until
from layered import (
    AGGREGATES, MINUTE, SECOND, SENTINEL_CITY, LayeredWarehouse, as_sent, cumulate, disordered_deals,
    grouped, hop, sentinels, sessions, summary, tumble, window_rows,
)

PARTITIONS = 4
GAP = 30 * SECOND

LAYERS = f"""
  - name: dws_tumble
    kind: dws
    inputs: [ods_deals]
    sql: >
      SELECT window_start, window_end, city, {AGGREGATES}
      FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
      GROUP BY window_start, window_end, city
  - name: dws_hop
    kind: dws
    inputs: [ods_deals]
    sql: >
      SELECT window_start, window_end, city, {AGGREGATES}
      FROM TABLE(HOP(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '30' SECOND, INTERVAL '2' MINUTE))
      GROUP BY window_start, window_end, city
  - name: dws_cumulate
    kind: dws
    inputs: [ods_deals]
    sql: >
      SELECT window_start, window_end, city, {AGGREGATES}
      FROM TABLE(CUMULATE(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '20' SECOND, INTERVAL '1' MINUTE))
      GROUP BY window_start, window_end, city
  - name: dws_session
    kind: dws
    inputs: [ods_deals]
    sql: >
      SELECT window_start, window_end, agent, {AGGREGATES}
      FROM TABLE(SESSION(TABLE ods_deals PARTITION BY agent, DESCRIPTOR(event_time), INTERVAL '30' SECOND))
      GROUP BY window_start, window_end, agent
  - name: dws_approx
    kind: dws
    inputs: [ods_deals]
    sql: >
      SELECT window_start, window_end, city, COUNT(*) AS deals,
             APPROX_DISTINCT(agent) AS uv,
             APPROX_PERCENTILE_CONT(0.75) WITHIN GROUP (ORDER BY CAST(amount AS DOUBLE)) AS p75
      FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '5' MINUTE))
      GROUP BY window_start, window_end, city
  - name: dwd_agent_running
    kind: dwd
    inputs: [ods_deals]
    sql: >
      SELECT deal_id, agent, event_time,
             SUM(amount) OVER w AS gmv_2m, COUNT(*) OVER w AS deals_2m
      FROM ods_deals
      WINDOW w AS (PARTITION BY agent ORDER BY event_time
                   RANGE BETWEEN INTERVAL '2' MINUTE PRECEDING AND CURRENT ROW)
"""


@pytest.fixture(scope="module")
def windows_run(tmp_path_factory, strata_bin, kafka):
    """One dataflow, four windowed layers over the same ODS layer, fed
    disordered deals in bursts (so windows close across several epochs),
    then a sentinel per partition that closes every window."""
    seed = int(os.environ.get("STRATA_TEST_SEED", random.randrange(1_000_000)))
    print(f"windows_run: STRATA_TEST_SEED={seed}")
    rng = random.Random(seed)
    topic = unique("deals")
    create_topic(kafka, topic, partitions=PARTITIONS)
    # ~1 deal every 700 ms over ~70 minutes, each up to 8 s early: agents'
    # deals are sparse enough to form many sessions.
    deals = disordered_deals(6_000, rng, step_us=700_000, jitter_us=8 * SECOND)
    wh = LayeredWarehouse(tmp_path_factory.mktemp("windows"), kafka, topic, LAYERS)
    want = {
        "dws_tumble": grouped(deals, lambda t: tumble(t, MINUTE), lambda d: d.city),
        "dws_hop": grouped(deals, lambda t: hop(t, 30 * SECOND, 2 * MINUTE), lambda d: d.city),
        "dws_cumulate": grouped(deals, lambda t: cumulate(t, 20 * SECOND, MINUTE), lambda d: d.city),
        "dws_session": sessions(deals, GAP),
        "dws_approx": grouped(deals, lambda t: tumble(t, 5 * MINUTE), lambda d: d.city),
    }
    strata = Strata(strata_bin, wh).start()
    for chunk in range(0, len(deals), 1_000):
        produce(kafka, topic, as_sent(deals[chunk:chunk + 1_000], PARTITIONS))
        time.sleep(0.5)
    produce(kafka, topic, sentinels(PARTITIONS, deals[-1].ts + 24 * 60 * MINUTE))

    def complete():
        strata.assert_alive()
        return (all(wh.count("dws", name) >= len(w) for name, w in want.items())
                and wh.count("dwd", "dwd_agent_running") >= len(deals))

    wait_until(complete, 120, "every window to be emitted")
    assert strata.stop() == 0, strata.log()[-3000:]
    want["dwd_agent_running"] = deals
    return wh, want


def check(wh: LayeredWarehouse, name: str, key: str, want: dict[tuple, list]):
    table = wh.table("dws", name)
    assert table is not None, f"{name} wrote nothing"
    got = window_rows(table, key)
    assert not [k for k in got if k[2] in (SENTINEL_CITY, "zz")], "the sentinels' windows must still be open"
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, f"{name}: {len(missing)} windows missing ({missing[:3]}), {len(extra)} extra ({extra[:3]})"
    wrong = []
    for k, ds in want.items():
        expected = summary(ds)
        row = got[k]
        actual = {name: row[name] for name in expected}
        if actual != expected:
            wrong.append((k, expected, actual))
        avg = sum(d.amount for d in ds) / len(ds)
        if abs(Decimal(str(row["avg_amount"])) - avg) > Decimal("0.01"):
            wrong.append((k, "avg", avg, row["avg_amount"]))
    assert not wrong, f"{name}: {len(wrong)} of {len(want)} windows differ, e.g. {wrong[:2]}"
    return len(want)


def test_tumble_equals_the_reference(windows_run):
    wh, want = windows_run
    assert check(wh, "dws_tumble", "city", want["dws_tumble"]) > 250


def test_hop_equals_the_reference(windows_run):
    wh, want = windows_run
    assert check(wh, "dws_hop", "city", want["dws_hop"]) > 500


def test_cumulate_equals_the_reference(windows_run):
    wh, want = windows_run
    assert check(wh, "dws_cumulate", "city", want["dws_cumulate"]) > 750


def test_session_equals_the_reference(windows_run):
    wh, want = windows_run
    sessions = want["dws_session"]
    # The data must make both multi-deal sessions and single-deal ones.
    assert sum(len(v) > 1 for v in sessions.values()) > 100, "too few multi-deal sessions"
    assert sum(len(v) == 1 for v in sessions.values()) > 100, "too few single-deal sessions"
    check(wh, "dws_session", "agent", sessions)


def test_windows_were_emitted_over_several_epochs(windows_run):
    """Results are appended as the watermark passes window ends, not all at
    the end: the tumble table has several versions with rows."""
    wh, _ = windows_run
    path = str(wh.table_path("dws", "dws_tumble"))
    latest = DeltaTable(path).version()
    rows = [DeltaTable(path, version=v).to_pyarrow_table(columns=["city"]).num_rows for v in range(latest + 1)]
    growth = [b for a, b in zip(rows, rows[1:]) if b > a]
    assert len(growth) >= 3, rows


def p75(values: list[float]) -> float:
    """The 75th percentile, interpolated between closest ranks."""
    xs = sorted(values)
    rank = 0.75 * (len(xs) - 1)
    low = int(rank)
    high = min(low + 1, len(xs) - 1)
    return xs[low] + (xs[high] - xs[low]) * (rank - low)


def test_approximate_aggregates_are_close_to_exact(windows_run):
    """APPROX_DISTINCT (HyperLogLog) and APPROX_PERCENTILE_CONT (t-digest),
    their sketches kept in the window state."""
    wh, want = windows_run
    table = wh.table("dws", "dws_approx")
    assert table is not None
    got = window_rows(table, "city")
    assert set(got) == set(want["dws_approx"])
    checked = 0
    for k, ds in want["dws_approx"].items():
        row = got[k]
        assert row["deals"] == len(ds)
        exact_uv = len({d.agent for d in ds})
        assert abs(row["uv"] - exact_uv) <= max(1, exact_uv * 0.05), (k, row["uv"], exact_uv)
        if len(ds) < 20:
            continue  # t-digest interpolates differently between a few points
        checked += 1
        amounts = [float(d.amount) for d in ds]
        spread = max(amounts) - min(amounts)
        assert abs(row["p75"] - p75(amounts)) <= 0.05 * spread, (k, row["p75"], p75(amounts))
    assert checked > 40


def test_over_aggregation_equals_the_reference(windows_run):
    """OVER (PARTITION BY agent ORDER BY event_time RANGE 2 minutes): one
    row per deal, emitted once the watermark passes it."""
    wh, want = windows_run
    deals = want["dwd_agent_running"]
    table = wh.table("dwd", "dwd_agent_running")
    ids = table.column("deal_id").to_pylist()
    assert len(ids) == len(set(ids)) == len(deals), "one row per deal, once"
    by_agent = defaultdict(list)
    for d in deals:
        by_agent[d.agent].append(d)
    expected = {}
    for d in deals:
        frame = [o for o in by_agent[d.agent] if d.ts - 2 * MINUTE <= o.ts <= d.ts]
        expected[d.deal_id] = (sum(o.amount for o in frame), len(frame))
    got = dict(zip(ids, zip(table.column("gmv_2m").to_pylist(), table.column("deals_2m").to_pylist())))
    wrong = [(k, expected[k], got[k]) for k in expected if got.get(k) != expected[k]]
    assert not wrong, f"{len(wrong)} of {len(expected)} rows differ, e.g. {wrong[:3]}"
