"""`strata backfill`: a DWS layer's SQL changes, a range of its table is
recomputed from the log and swapped in while the live pipeline runs.

Every expected table is a plain-Python reference over the records sent
(5-minute tumbling windows per city, from Flink's definition), never read
back from Strata.

Needs: a broker of the test's own on sqlite storage (offsets-for-times is
wrong on memory storage, see BROKER.md), so volumes stay in the thousands.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import threading
import time
from collections import defaultdict
from decimal import Decimal

import adbc_driver_flightsql.dbapi as flight_sql
from confluent_kafka.admin import AdminClient
from deltalake import DeltaTable

from conftest import Strata, _STARTED, create_topic, free_port, produce, unique, wait_until
from layered import (
    BASE_US, MINUTE, SECOND, SENTINEL_CITY, LayeredWarehouse, as_sent, disordered_deals, iso, micros,
    sentinels, tumble,
)

PARTITIONS = 2
WINDOW = 5 * MINUTE
BIG = Decimal(3000)
FROM_US, TO_US = BASE_US + 20 * MINUTE, BASE_US + 40 * MINUTE
# Windows ending at or before this are closed by the first sentinels.
CLOSED_US = BASE_US + 65 * MINUTE

SQL_V1 = ("SELECT window_start, window_end, city, COUNT(*) AS deals, SUM(amount) AS gmv "
          "FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '5' MINUTE)) "
          "GROUP BY window_start, window_end, city")
# The "bug fix": only big deals count.
SQL_V2 = SQL_V1.replace("GROUP BY", "WHERE amount >= 3000 GROUP BY")

LAYER = """
  - name: dws_city
    kind: dws
    inputs: [ods_deals]
    sql: "{sql}"
"""


def reference(deals, big_only: bool) -> dict[tuple, tuple]:
    """(window_end, city) -> (window_start, deals, gmv) over closed windows."""
    groups = defaultdict(list)
    for d in deals:
        if big_only and d.amount < BIG:
            continue
        for start, end in tumble(d.ts, WINDOW):
            if end <= CLOSED_US:
                groups[(end, d.city)].append(d)
    return {k: (k[0] - WINDOW, len(v), sum(x.amount for x in v)) for k, v in groups.items()}


def table_rows(wh: LayeredWarehouse) -> dict[tuple, tuple]:
    t = wh.table("dws", "dws_city")
    assert t is not None
    out = {}
    for start, end, city, n, gmv in zip(micros(t["window_start"]), micros(t["window_end"]),
                                        t["city"].to_pylist(), t["deals"].to_pylist(), t["gmv"].to_pylist()):
        assert (end, city) not in out, f"window {iso(end)} {city} twice"
        out[(end, city)] = (start, n, gmv)
    return out


def in_range(rows: dict) -> dict:
    return {k: v for k, v in rows.items() if FROM_US < k[0] <= TO_US}


def outside(rows: dict) -> dict:
    return {k: v for k, v in rows.items() if not FROM_US < k[0] <= TO_US and k[0] <= CLOSED_US}


def version(wh: LayeredWarehouse) -> int:
    return DeltaTable(str(wh.table_path("dws", "dws_city"))).version()


class Setup:
    """Deals of an hour on a topic of the test's own broker, the live
    pipeline (v1 SQL) run until every window of the hour closed, and a v2
    file over the same storage."""

    def __init__(self, tmp: pathlib.Path, strata_bin: str, broker, rng: random.Random, keep_running: bool,
                 count: int = 2400):
        self.bin = strata_bin
        self.broker = broker
        self.topic = unique("backfill")
        create_topic(broker.bootstrap, self.topic, PARTITIONS)
        self.deals = disordered_deals(count, rng, step_us=3600 * SECOND // count, jitter_us=2 * SECOND)
        self.flight_port = free_port()
        self.wh = LayeredWarehouse(tmp, broker.bootstrap, self.topic, LAYER.format(sql=SQL_V1),
                                   watermark="{delay: 10s, idle_timeout: 5s}")
        text = self.wh.path.read_text().replace("listen: 127.0.0.1:0", f"listen: 127.0.0.1:{self.flight_port}")
        self.wh.path.write_text(text)
        self.v2 = tmp / "warehouse_v2.yaml"
        self.v2.write_text(text.replace(SQL_V1, SQL_V2))
        # Producers stamp records with their event time. The sentinels go in
        # a transaction, so each partition ends with a transaction marker,
        # which a look-up of the newest record must read past.
        produce(broker.bootstrap, self.topic, as_sent(self.deals, PARTITIONS),
                timestamps_ms=[d.ts // 1000 for d in self.deals])
        produce(broker.bootstrap, self.topic, sentinels(PARTITIONS, BASE_US + 70 * MINUTE),
                timestamps_ms=[(BASE_US + 70 * MINUTE) // 1000] * PARTITIONS, transactional=True)
        self.v1_ref = reference(self.deals, big_only=False)
        self.v2_ref = reference(self.deals, big_only=True)
        self.live = Strata(strata_bin, self.wh).start()
        wait_until(lambda: self.closed_rows() == self.v1_ref, 120, "the live pipeline to close the hour")
        if not keep_running:
            assert self.live.stop() == 0

    def closed_rows(self) -> dict:
        if self.wh.table("dws", "dws_city") is None:
            return {}
        return {k: v for k, v in table_rows(self.wh).items() if k[0] <= CLOSED_US}

    def backfill(self, *extra: str, file: pathlib.Path | None = None, env: dict | None = None,
                 name: str = "backfill") -> subprocess.Popen:
        log = open(self.wh.dir / f"{name}.log", "wb")
        out = open(self.wh.dir / f"{name}.out", "wb")
        proc = subprocess.Popen(
            [self.bin, "--log-format", "json", "backfill", str(file or self.v2), "dws_city",
             "--from", iso(FROM_US), "--to", iso(TO_US), *extra],
            stdout=out, stderr=log, env={**os.environ, "RUST_LOG": "info", **(env or {})},
        )
        _STARTED.append(proc)
        return proc

    def finished(self, proc: subprocess.Popen, name: str = "backfill", timeout: float = 120) -> dict:
        rc = proc.wait(timeout=timeout)
        log = (self.wh.dir / f"{name}.log").read_text(errors="replace")
        assert rc == 0, f"backfill exited {rc}:\n{log[-4000:]}"
        return json.loads((self.wh.dir / f"{name}.out").read_text())

    def log(self, name: str = "backfill") -> str:
        return (self.wh.dir / f"{name}.log").read_text(errors="replace")

    def staging(self) -> list[pathlib.Path]:
        root = self.wh.dir / "data" / "_strata" / "backfill"
        # `<layer>.lock` stays: the run's lock, released by the kernel.
        return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def flight_range_rows(port: int) -> frozenset:
    with flight_sql.connect(f"grpc://127.0.0.1:{port}", autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("SELECT window_end, city, deals, gmv FROM dws.dws_city")
        table = cur.fetch_arrow_table()
    ends = micros(table["window_end"])
    return frozenset((e, c, n, g) for e, c, n, g in zip(ends, table["city"].to_pylist(), table["deals"].to_pylist(),
                                                      table["gmv"].to_pylist()) if FROM_US < e <= TO_US)


def as_set(rows: dict) -> frozenset:
    return frozenset((k[0], k[1], v[1], v[2]) for k, v in rows.items())


def test_new_sql_replaces_exactly_the_range_while_the_live_pipeline_runs(tmp_path, strata_bin, own_broker, rng):
    s = Setup(tmp_path, strata_bin, own_broker, rng, keep_running=True)
    old = table_rows(s.wh)
    assert in_range(old) != in_range(s.v2_ref), "the new SQL must change the range"
    before = version(s.wh)

    # Readers poll the range over Flight SQL all through the backfill.
    seen: list[frozenset] = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            seen.append(flight_range_rows(s.flight_port))
            time.sleep(0.05)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_until(lambda: len(seen) > 0, 30, "a first Flight SQL read")
    # The live pipeline keeps working: later deals, and sentinels that
    # close their windows, arrive during the backfill.
    later = disordered_deals(200, rng, step_us=2 * SECOND, jitter_us=SECOND, first=2400)
    later_sent = as_sent(later, PARTITIONS) + sentinels(PARTITIONS, BASE_US + 90 * MINUTE)
    producer = threading.Thread(target=produce, args=(own_broker.bootstrap, s.topic, later_sent),
                                kwargs={"timestamps_ms": [d.ts // 1000 for d in later] + [(BASE_US + 90 * MINUTE) // 1000] * PARTITIONS})
    producer.start()
    summary = s.finished(s.backfill())
    producer.join()
    wait_until(lambda: flight_range_rows(s.flight_port) == as_set(in_range(s.v2_ref)), 30, "the new rows served")
    stop.set()
    reader.join()

    assert summary["sources"][0]["from"].startswith("kafka"), summary
    assert summary["tables"][0]["rows"] == len(in_range(s.v2_ref))
    after = table_rows(s.wh)
    assert in_range(after) == in_range(s.v2_ref)
    assert outside(after) == outside(old), "a row outside the range changed"
    # The live pipeline went on meanwhile, and its windows after the first
    # hour are there.
    wait_until(lambda: any(k[0] > CLOSED_US + 5 * MINUTE for k in table_rows(s.wh)), 60, "later windows")
    s.live.assert_alive()
    # Every read saw the old rows of the range or the new, never a mix.
    old_set, new_set = as_set(in_range(old)), as_set(in_range(s.v2_ref))
    mixed = [r for r in seen if r not in (old_set, new_set)]
    assert not mixed, f"{len(mixed)} of {len(seen)} reads saw a mix"
    assert seen[0] == old_set and seen[-1] == new_set
    backfill_commits = [c for c in DeltaTable(str(s.wh.table_path("dws", "dws_city"))).history()
                        if "strata.backfill" in c]
    assert len(backfill_commits) == 1 and backfill_commits[0]["operation"] == "WRITE", backfill_commits
    assert version(s.wh) > before
    assert s.staging() == [], "the staging tables were left behind"

    # Idempotent: the same backfill again gives the same table.
    s.finished(s.backfill(name="again"), name="again")
    again = table_rows(s.wh)
    assert in_range(again) == in_range(s.v2_ref)
    assert outside(again) == outside(old)
    s.live.stop()


def test_a_range_older_than_the_topic_is_replayed_from_the_ods_table(tmp_path, strata_bin, own_broker, rng):
    s = Setup(tmp_path, strata_bin, own_broker, rng, keep_running=False)
    from_kafka = s.finished(s.backfill(name="kafka"), name="kafka")
    assert from_kafka["sources"][0]["from"].startswith("kafka"), from_kafka
    kafka_rows = in_range(table_rows(s.wh))
    assert kafka_rows == in_range(s.v2_ref)

    # The topic is deleted and created again (a migration, an accident):
    # it now holds only records newer than the range.
    admin = AdminClient({"bootstrap.servers": own_broker.bootstrap})
    for f in admin.delete_topics([s.topic]).values():
        f.result(timeout=30)
    wait_until(lambda: s.topic not in admin.list_topics(timeout=5).topics, 30, "the topic to go")
    create_topic(own_broker.bootstrap, s.topic, PARTITIONS)
    newer = disordered_deals(20, rng, step_us=SECOND, jitter_us=0, first=9000, start_us=BASE_US + 120 * MINUTE)
    produce(own_broker.bootstrap, s.topic, as_sent(newer, PARTITIONS), timestamps_ms=[d.ts // 1000 for d in newer])

    # Back to the old SQL, then the new one again: both from the ODS table.
    v1_run = s.finished(s.backfill(file=s.wh.path, name="ods_v1"), name="ods_v1")
    assert v1_run["sources"][0]["from"].startswith("ods table"), v1_run
    assert "no longer holds" in v1_run["sources"][0]["from"], v1_run
    assert in_range(table_rows(s.wh)) == in_range(s.v1_ref)
    v2_run = s.finished(s.backfill(name="ods_v2"), name="ods_v2")
    assert v2_run["sources"][0]["from"].startswith("ods table"), v2_run
    assert in_range(table_rows(s.wh)) == kafka_rows, "the ODS replay differs from the Kafka replay"
    assert outside(table_rows(s.wh)) == outside(s.v1_ref)

    # Forcing Kafka now says why it cannot, and changes nothing.
    held = version(s.wh)
    proc = s.backfill("--replay-from", "kafka", name="forced")
    assert proc.wait(timeout=60) != 0
    assert "Kafka no longer holds the range" in s.log("forced")
    assert version(s.wh) == held


def test_a_killed_or_interrupted_backfill_leaves_the_table_and_a_rerun_completes(tmp_path, strata_bin, own_broker, rng):
    s = Setup(tmp_path, strata_bin, own_broker, rng, keep_running=False)
    old, held = table_rows(s.wh), version(s.wh)

    # Crashes at chosen steps: at the first staging checkpoint (mid-replay,
    # or at its end when the whole replay fits one epoch: however fast the
    # machine), and with every row staged but before the swap.
    for point in ["after_manifest:*", "before_swap:1"]:
        proc = s.backfill(env={"STRATA_FAILPOINT": point}, name=point.split(":")[0])
        assert proc.wait(timeout=120) < 0, s.log(point.split(":")[0])[-3000:]
        assert "STRATA_FAILPOINT" in s.log(point.split(":")[0])
        assert version(s.wh) == held and table_rows(s.wh) == old, f"the table changed at {point}"
    assert s.staging(), "a killed run leaves its staging (the next run removes it)"

    # SIGKILL at a moment of the replay.
    proc = s.backfill(name="sigkill")
    wait_until(lambda: "replaying into staging tables" in s.log("sigkill"), 60, "the replay to start")
    time.sleep(rng.uniform(0.1, 0.4))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    now = table_rows(s.wh)
    assert now == old or (in_range(now) == in_range(s.v2_ref) and outside(now) == outside(old)), "a partial swap"

    # A second backfill of the layer while one runs is refused (it would
    # remove the running one's staging as abandoned).
    proc = s.backfill(name="sigint")
    wait_until(lambda: "replaying into staging tables" in s.log("sigint"), 60, "the replay to start")
    second = subprocess.run([s.bin, "backfill", str(s.v2), "dws_city", "--from", iso(FROM_US), "--to", iso(TO_US)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode != 0 and "another `strata backfill` of `dws_city` is running" in second.stderr, \
        second.stderr
    # Ctrl-C: the staging run stops, the table is untouched.
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=60)
    if rc == 130:
        assert "no table was changed" in s.log("sigint")
        assert table_rows(s.wh) == now
    else:  # the signal came after the swap
        assert rc == 0 and in_range(table_rows(s.wh)) == in_range(s.v2_ref)

    # A re-run completes, and removes what the killed runs left.
    summary = s.finished(s.backfill(name="rerun"), name="rerun")
    after = table_rows(s.wh)
    assert in_range(after) == in_range(s.v2_ref)
    assert outside(after) == outside(old)
    assert summary["replayed"] > 0
    assert s.staging() == []


def test_backfill_refuses_ranges_the_live_pipeline_has_not_closed(tmp_path, strata_bin, own_broker, rng):
    s = Setup(tmp_path, strata_bin, own_broker, rng, keep_running=False)
    held = version(s.wh)
    proc = subprocess.run(
        [strata_bin, "backfill", str(s.v2), "dws_city", "--from", iso(FROM_US), "--to", iso(BASE_US + 100 * MINUTE)],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "has closed `dws_city` only up to" in proc.stderr, proc.stderr
    proc = subprocess.run([strata_bin, "backfill", str(s.v2), "nope", "--from", iso(FROM_US)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "its layers are: ods_deals, dws_city" in proc.stderr, proc.stderr
    proc = subprocess.run([strata_bin, "backfill", str(s.v2), "dws_city", "--from", "yesterday"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "2026-11-20T10:00:00Z" in proc.stderr, proc.stderr
    assert version(s.wh) == held
