"""Redeploying a changed DWS layer while data flows, against a reference
computed from the produced records:

- a compatible change (an aggregate added): `strata plan` says so, the run
  keeps the state of the open windows (their counts equal the reference
  over every record), and the new aggregate counts the rows read after
  the restart;
- an incompatible change (the window size): `strata plan` says so with the
  choices, `strata run` refuses without touching the storage root (the
  same files, sizes and mtimes), and `--reset-state LAYER --from TIME`
  rebuilds the layer from the log equal to the reference of the new SQL.

Needs: the shared broker (memory storage) from scripts/test.
"""

import json
import os
import pathlib
import random
import subprocess
from collections import defaultdict

from conftest import Strata, create_topic, produce, produce_in_background, unique, wait_until
from layered import (
    BASE_US, MINUTE, SECOND, LayeredWarehouse, as_sent, disordered_deals, iso, sentinels, tumble, window_rows,
)

PARTITIONS = 2
DELAY = 10 * SECOND
LAYER = "dws_city_minute"


def dws(size_minutes: int, aggregates: str) -> str:
    return f"""  - name: {LAYER}
    kind: dws
    inputs: [ods_deals]
    sql: >
      SELECT window_start, window_end, city, {aggregates}
      FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '{size_minutes}' MINUTE))
      GROUP BY window_start, window_end, city
"""


def deploy(wh: LayeredWarehouse, layers: str) -> None:
    """Rewrites the file with other layers (same warehouse, same root)."""
    wh.layers = layers
    wh.__post_init__()


def watermark(deals, partitions: int) -> int:
    """The ODS watermark once every deal is read: the slowest partition's
    newest event time minus the delay."""
    newest = defaultdict(lambda: -(2**62))
    for d, s in zip(deals, as_sent(deals, partitions)):
        newest[s.partition] = max(newest[s.partition], d.ts)
    return min(newest[p] for p in range(partitions)) - DELAY


def reference(deals, size: int, closed_until: int) -> dict[tuple, dict]:
    """(window_start, window_end, city) -> deals and gmv, for every window
    the watermark has closed."""
    out = defaultdict(lambda: {"deals": 0, "gmv": 0})
    for d in deals:
        for start, end in tumble(d.ts, size):
            if end <= closed_until:
                out[(start, end, d.city)]["deals"] += 1
                out[(start, end, d.city)]["gmv"] += d.amount
    return dict(out)


def table_windows(wh: LayeredWarehouse) -> dict[tuple, dict]:
    t = wh.table("dws", LAYER)
    return {} if t is None else window_rows(t, "city")


def plan(strata_bin: str, wh: LayeredWarehouse) -> dict:
    done = subprocess.run([strata_bin, "plan", str(wh.path), "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = subprocess.run([strata_bin, "plan", str(wh.path)], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    print(text.stdout)
    return {layer["layer"]: layer for layer in json.loads(done.stdout)["layers"]}


def listing(root: pathlib.Path) -> list[tuple]:
    """Every file and directory under `root`, with sizes and mtimes."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = pathlib.Path(dirpath) / name
            st = path.stat()
            out.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
    return sorted(out)


def wait_windows(wh: LayeredWarehouse, strata: Strata, want: dict, what: str):
    wait_until(lambda: (strata.assert_alive(), set(want) <= set(table_windows(wh)))[1], 180, what)


def test_compatible_and_incompatible_changes_of_a_window_layer(tmp_path, strata_bin, own_broker):
    # Its own broker on sqlite storage: the state reset places its replay by
    # each partition's end, which the memory storage answers wrongly (the
    # last batch's first offset + 1; BROKER.md).
    kafka = own_broker.bootstrap
    rng = random.Random(23)
    topic = unique("deals")
    create_topic(kafka, topic, partitions=PARTITIONS)
    wh = LayeredWarehouse(tmp_path, kafka, topic, dws(1, "COUNT(*) AS deals"),
                          watermark="{delay: 10s, idle_timeout: 5m}")
    # Deals one a second, up to 2 s out of order; each phase ends
    # mid-minute, so windows are open across every restart.
    phase1 = disordered_deals(630, rng, SECOND, 2 * SECOND)
    phase2 = disordered_deals(300, rng, SECOND, 2 * SECOND, first=630)
    phase3 = disordered_deals(300, rng, SECOND, 2 * SECOND, first=930)

    # Version 1: COUNT(*) per city and minute.
    strata = Strata(strata_bin, wh, "--no-serve").start()
    thread, errors = produce_in_background(kafka, topic, as_sent(phase1, PARTITIONS), chunk=90, pause=0.3)
    thread.join()
    assert not errors, errors
    w1 = watermark(phase1, PARTITIONS)
    wait_windows(wh, strata, reference(phase1, MINUTE, w1), "version 1's closed windows")
    assert strata.stop() == 0, strata.log()[-3000:]
    open_at_restart = {k[:2] for k in reference(phase1, MINUTE, 2**62)} - {k[:2] for k in reference(phase1, MINUTE, w1)}
    assert open_at_restart, "no window was open at the restart"

    # Version 2 adds an aggregate: a compatible change.
    deploy(wh, dws(1, "COUNT(*) AS deals, SUM(amount) AS gmv"))
    planned = plan(strata_bin, wh)
    assert planned["ods_deals"]["verdict"] == "unchanged", planned
    entry = planned[LAYER]
    assert entry["verdict"] == "compatible", entry
    assert entry["state"]["fresh"] == ["sum(ods_deals.amount)"], entry
    assert entry["state"]["kept"] == ["count(Int64(1))"], entry
    assert any("gains nullable column(s) gmv" in c for c in entry["changes"]), entry
    strata = Strata(strata_bin, wh, "--no-serve").start()
    thread, errors = produce_in_background(kafka, topic, as_sent(phase2, PARTITIONS), chunk=60, pause=0.3)
    thread.join()
    assert not errors, errors
    seen = phase1 + phase2
    w2 = watermark(seen, PARTITIONS)
    want = reference(seen, MINUTE, w2)
    wait_windows(wh, strata, want, "version 2's closed windows")
    assert strata.stop() == 0, strata.log()[-3000:]
    assert "state of its kept aggregates restored" in strata.log()
    got = table_windows(wh)
    assert set(got) == set(want)
    # Every window's count is exact, the windows open at the restart too.
    assert {k: v["deals"] for k, v in got.items()} == {k: v["deals"] for k, v in want.items()}
    # The new aggregate counts the rows read since the restart: all of a
    # later window's, part of a window open at the restart.
    after = reference(phase2, MINUTE, w2)
    spanning = 0
    for k, row in got.items():
        if k[1] <= w1:
            continue  # emitted by version 1, before the column existed
        assert row["gmv"] == after.get(k, {"gmv": 0})["gmv"] or (row["gmv"] is None and k not in after), (k, row)
        spanning += k[:2] in open_at_restart and row["deals"] > after.get(k, {"deals": 0})["deals"]
    assert spanning, "no window spanned the restart"

    # Version 3 changes the window size: incompatible.
    deploy(wh, dws(2, "COUNT(*) AS deals, SUM(amount) AS gmv"))
    entry = plan(strata_bin, wh)[LAYER]
    assert entry["verdict"] == "incompatible", entry
    assert "tumble 1m" in entry["problems"][0] and "tumble 2m" in entry["problems"][0], entry
    assert any(f"--reset-state {LAYER}" in c for c in entry["choices"]), entry
    root = wh.dir / "data"
    before = listing(root)
    refused = Strata(strata_bin, wh, "--no-serve").start()
    assert refused.wait(120) == 2, refused.log()[-3000:]
    assert f"--reset-state {LAYER}" in refused.log(), refused.log()[-3000:]
    assert listing(root) == before, "a refused run changed the storage root"

    # Rebuilt from the log with the new window, then on with new records.
    strata = Strata(strata_bin, wh, "--no-serve", "--reset-state", LAYER, "--from", iso(BASE_US - MINUTE)).start()
    thread, errors = produce_in_background(kafka, topic, as_sent(phase3, PARTITIONS), chunk=60, pause=0.3)
    thread.join()
    assert not errors, errors
    produce(kafka, topic, sentinels(PARTITIONS, BASE_US + 3 * 3600 * SECOND))
    everything = phase1 + phase2 + phase3
    want = reference(everything, 2 * MINUTE, 2**62)
    wait_windows(wh, strata, want, "version 3's windows")
    assert strata.stop() == 0, strata.log()[-3000:]
    got = table_windows(wh)
    assert {k: (v["deals"], v["gmv"]) for k, v in got.items()} == {k: (v["deals"], v["gmv"]) for k, v in want.items()}
    assert "state reset" in strata.log()


def test_a_sql_layer_gaining_a_column(tmp_path, strata_bin, own_broker):
    """A DWD layer's SQL gains a nullable column: `strata plan` calls it a
    compatible change, the run merges the column into the table, rows
    written before read it as null and later rows have the value."""
    # Bounded runs stop at each partition's end, which the memory storage
    # answers wrongly (BROKER.md): its own broker, on sqlite.
    kafka = own_broker.bootstrap
    rng = random.Random(7)
    topic = unique("deals")
    create_topic(kafka, topic, partitions=PARTITIONS)
    dwd = """  - name: dwd_deals
    kind: dwd
    inputs: [ods_deals]
    sql: SELECT deal_id, {columns}, event_time FROM ods_deals
"""
    wh = LayeredWarehouse(tmp_path, kafka, topic, dwd.format(columns="city"))
    first = disordered_deals(200, rng, SECOND, 0)
    second = disordered_deals(200, rng, SECOND, 0, first=200)
    produce(kafka, topic, as_sent(first, PARTITIONS))
    strata = Strata(strata_bin, wh, "--no-serve", "--bounded").start()
    assert strata.wait(120) == 0, strata.log()[-3000:]
    assert wh.count("dwd", "dwd_deals") == len(first)

    deploy(wh, dwd.format(columns="city, amount"))
    entry = plan(strata_bin, wh)["dwd_deals"]
    assert entry["verdict"] == "compatible", entry
    assert any("gains nullable column(s) amount" in c for c in entry["changes"]), entry
    produce(kafka, topic, as_sent(second, PARTITIONS))
    strata = Strata(strata_bin, wh, "--no-serve", "--bounded").start()
    assert strata.wait(120) == 0, strata.log()[-3000:]
    rows = wh.table("dwd", "dwd_deals").to_pylist()
    assert len(rows) == len(first) + len(second)
    amounts = {d.deal_id: d.amount for d in second}
    for row in rows:
        assert row["amount"] == amounts.get(row["deal_id"]), row
