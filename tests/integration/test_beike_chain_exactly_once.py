"""The reference warehouse's chains at 2,000 events/s across SIGKILLs: ODS ->
1-second dedup window -> lookup enrichment -> 1-minute TUMBLE, cumulative
Top-N of the day and the updating GMV per day and city, while `strata run`
is killed at random moments and restarted.

Every late table of every layer stays empty (the generator makes no late
records, and disorder stays within the watermark delay: a row that is
normal output of the layer upstream is never late), and every table equals
the reference computed from the generator's truth file
(tests/integration/beike_reference.py): each record once, each window once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import defaultdict
from decimal import Decimal


import beike_reference as ref
from beike_reference import HOUR, MINUTE, US, iso, ts_us
from conftest import create_topic, free_port, unique
from layered import consume
from beike_run import LATE_TABLES, PARTITIONS, WAREHOUSE, send_heartbeats, table, wait_for_watermarks


def test_the_chain_at_2000_events_per_second_equals_the_reference_across_sigkills(tmp_path, strata_bin, kafka, rng):
    root = tmp_path / "data"
    prefix = unique("chain") + "_"
    env = dict(os.environ, KAFKA_BOOTSTRAP=kafka, STRATA_STORAGE_ROOT=str(root), BEIKE_TOPIC_PREFIX=prefix,
               STRATA_FLIGHT_LISTEN=f"127.0.0.1:{free_port()}", STRATA_DASHBOARD=f"127.0.0.1:{free_port()}")
    for stream in ["deals", "itineraries"]:
        create_topic(kafka, f"{prefix}{stream}", PARTITIONS)
    # 20 minutes of event time at 40 s of event time per second of wall
    # time, 2,000 events/s; on-time records up to 2 s out of order (the
    # ODS watermark delay is 3 s), duplicates and broken records among them.
    wall = int(time.time()) * US
    start = wall - 2 * HOUR
    count, step_ms = 60_000, 20
    truth_file = tmp_path / "truth.jsonl"
    gen = subprocess.Popen(
        [strata_bin, "--log-format", "json", "gen", "beike", "--topic", prefix, "--dims", str(root / "dims"),
         "--count", str(count), "--rate", "2000", "--start", iso(start), "--step-ms", str(step_ms),
         "--partitions", str(PARTITIONS), "--malformed", "0.002", "--duplicates", "0.02",
         "--disorder-secs", "2", "--seed", str(rng.randrange(1_000_000)), "--truth", str(truth_file)],
        env=env, stdout=subprocess.PIPE, stderr=open(tmp_path / "gen.log", "w"))
    runs: list[subprocess.Popen] = []

    def start_run() -> subprocess.Popen:
        log = open(tmp_path / f"run-{len(runs) + 1}.log", "w")
        proc = subprocess.Popen([strata_bin, "--log-format", "json", "run", str(WAREHOUSE)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        runs.append(proc)
        return proc

    try:
        # Killed at random moments while the generator produces, at least
        # three times; each run gets to commit some epochs first.
        kills = 0
        while kills < 3 or gen.poll() is None:
            proc = start_run()
            time.sleep(rng.uniform(2.0, 7.0))
            assert proc.poll() is None, (tmp_path / f"run-{len(runs)}.log").read_text()[-3000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            kills += 1
        assert gen.wait(timeout=120) == 0, (tmp_path / "gen.log").read_text()[-2000:]
        final = start_run()
        end = start + count * step_ms * 1000
        last_minute = end - end % MINUTE + MINUTE
        send_heartbeats(kafka, prefix, last_minute + MINUTE)
        wait_for_watermarks(root, last_minute, final, tmp_path / f"run-{len(runs)}.log", timeout=300)
        final.send_signal(signal.SIGTERM)
        assert final.wait(timeout=60) == 0
    finally:
        for proc in runs + [gen]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert kills >= 3

    truth = ref.load_truth(truth_file, prefix)
    dims = ref.load_dims(root)
    assert not [e for e in truth.deals + truth.itineraries if e.kind in ("late", "future")]

    # Nothing on time was set aside as late, in any layer.
    for kind, name in LATE_TABLES:
        assert table(root, kind, name) == [], f"{name}: on-time rows were set aside as late"

    # Each record once in ODS (by position), each malformed one once in the
    # dead-letter table.
    for stream, ods in [("deals", "ods_deals"), ("itineraries", "ods_itineraries")]:
        records = {(m.partition(), m.offset()): m.value()
                   for m in consume(kafka, f"{prefix}{stream}", PARTITIONS)}
        broken = {e.value.encode() for e in (truth.deals if stream == "deals" else truth.itineraries)
                  if e.kind == "malformed"}
        rows = table(root, "ods", ods)
        positions = [(r["_kafka_partition"], r["_kafka_offset"]) for r in rows]
        assert len(positions) == len(set(positions)), f"{ods}: a record landed twice"
        assert set(positions) == {p for p, v in records.items() if v not in broken}
        dead = table(root, "ods", f"{ods}_dead_letter")
        assert sorted((r["partition"], r["offset"]) for r in dead) == sorted(
            p for p, v in records.items() if v in broken)

    deals = ref.deduplicated_deals(truth)
    dwd = {(r["deal_id"], r["event_type"]): r["copies"] for r in table(root, "dwd", "dwd_deals")}
    assert dwd == {k: n for k, (_, n) in deals.items()}
    assert len(table(root, "dwd", "dwd_deals_wide")) == len(deals)

    minutes = table(root, "dws", "dws_store_minute")
    got = {(ts_us(r["window_start"]), r["store_id"]): [r["gmv"], r["paid_deals"], r["created_deals"],
                                                      r["signed_deals"], r["cancelled_deals"]] for r in minutes}
    assert len(got) == len(minutes), "a window was emitted twice"
    assert got == ref.store_minute(deals, dims)

    gmv = {(r["event_day"], r["city_name"]): [r["gmv"], r["paid_deals"]]
           for r in table(root, "ads", "ads_city_gmv_today")}
    assert gmv == ref.city_gmv(deals, dims)
    per_day = defaultdict(Decimal)
    for r in minutes:
        per_day[(ref.day_of(ts_us(r["window_start"])), r["city_name"])] += r["gmv"]
    assert {k: v for k, v in per_day.items() if v} == {k: v[0] for k, v in gmv.items()}

    for layer, key in [("ads_top_stores_today", "store_id"), ("ads_top_agents_today", "agent_id")]:
        ranks = defaultdict(list)
        for r in table(root, "ads", layer):
            ranks[ts_us(r["window_end"])].append((r["rank"], r[key], r["gmv"], r["paid_deals"]))
        assert len(ranks) >= 15, f"{layer}: {len(ranks)} rankings"
        for end, rows in ranks.items():
            assert sorted(rows) == ref.top_10_so_far(deals, dims, key, end), (layer, iso(end))
