"""`strata backfill` while records stream in, as they do in production:
producers stamp records with the time they send them (the producer's
default), which is not their event time, and the live pipeline keeps
committing while ranges are swapped under it.

- Events sent a day, or ten minutes, after their event time are replayed
  from where the ODS table found them in Kafka (offsets-for-times on event
  times finds other records), and the range comes out right.
- A Kafka replay that cannot see the range (wrong offsets, a re-created
  topic) refuses to swap and leaves the table byte-identical; so does a
  replay with an empty result, unless --allow-empty, saying how many rows
  a swap would delete, or, when the live table has none in the range
  either, that the range is the likelier mistake.
- Ten backfills in a row under a stream of 2,000 events/s: the live
  pipeline never stops, every epoch is committed once, the table is right.

Every expected table is a plain-Python reference over the records sent
(10-second tumbling windows per city), never read back from Strata.

Needs: a broker of the test's own on sqlite storage for Kafka replays (the
memory storage misreports partitions' end offsets, which a Kafka replay is
placed by; see BROKER.md); the shared one for the 2,000 events/s stream.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import subprocess
import threading
import time
from collections import defaultdict
from decimal import Decimal
from types import SimpleNamespace

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from deltalake import DeltaTable

from conftest import _STARTED, Sent, Strata, create_topic, produce, unique, wait_until
from layered import (
    CITIES, MINUTE, SECOND, Deal, LayeredWarehouse, as_sent, disordered_deals, iso, micros, sentinels, tumble,
)

PARTITIONS = 2
WINDOW = 10 * SECOND
DELAY = 3 * SECOND
DAY = 24 * 3600 * SECOND
BIG = Decimal(3000)

SQL_V1 = ("SELECT window_start, window_end, city, COUNT(*) AS deals, SUM(amount) AS gmv "
          "FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '10' SECOND)) "
          "GROUP BY window_start, window_end, city")
# The "bug fix": only big deals count.
SQL_V2 = SQL_V1.replace("GROUP BY", "WHERE amount >= 3000 GROUP BY")
# A query whose result for any range is empty.
SQL_NONE = SQL_V1.replace("GROUP BY", "WHERE amount < 0 GROUP BY")

LAYER = """
  - name: dws_city
    kind: dws
    inputs: [ods_deals]
    sql: "{sql}"
"""
# The same, reading the topic itself: no ODS table knows where its records are.
DIRECT = """
  - name: dws_direct
    kind: dws
    inputs: [{{topic: {topic}, schema: deal, name: deals}}]
    watermark: {{delay: 3s, idle_timeout: 5s}}
    sql: "{sql}"
"""


def now_us() -> int:
    return time.time_ns() // 1000


class Stream:
    """Deals produced at `rate` per second by a thread, each dated `lag`
    (up to a second more) before it is sent, with the producer's default
    timestamps. Keeps every deal sent with its position."""

    def __init__(self, bootstrap: str, topic: str, rate: int, lag_us: int, rng: random.Random, first: int):
        self.bootstrap, self.topic, self.rate, self.lag_us = bootstrap, topic, rate, lag_us
        self.rng = random.Random(rng.random())
        self.next_id = first
        self.sent: list[tuple[Deal, Sent]] = []
        self.lock = threading.Lock()
        self.errors: list = []
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def start(self) -> "Stream":
        self.stopping.clear()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=120)
        assert not self.errors, self.errors[:3]

    def deals(self) -> list[Deal]:
        with self.lock:
            return [d for d, _ in self.sent]

    def positions(self) -> list[Sent]:
        with self.lock:
            return [s for _, s in self.sent]

    def _run(self):
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5})
        started, produced = time.monotonic(), 0

        def delivered(sent: Sent):
            def callback(err, msg):
                if err is not None:
                    self.errors.append(err)
                else:
                    sent.offset = msg.offset()
            return callback

        while not self.stopping.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while produced < due:
                i = self.next_id
                self.next_id += 1
                deal = Deal(deal_id=f"d{i:08d}", city=self.rng.choice(CITIES), agent=f"a{self.rng.randrange(40):03d}",
                            amount=Decimal(self.rng.randint(100, 900_000)) / 100,
                            ts=now_us() - self.lag_us - self.rng.randint(0, SECOND))
                sent = as_sent([deal], PARTITIONS)[0]
                while True:
                    try:
                        producer.produce(self.topic, key=sent.key, value=sent.value, partition=sent.partition,
                                         on_delivery=delivered(sent))
                        break
                    except BufferError:
                        producer.poll(0.05)
                with self.lock:
                    self.sent.append((deal, sent))
                produced += 1
            producer.poll(0)
            time.sleep(0.01)
        assert producer.flush(60) == 0


def reference(deals: list[Deal], sql: str, closed_us: int) -> dict[tuple, tuple]:
    """(window_end, city) -> (window_start, deals, gmv) of the windows
    closed by `closed_us`."""
    groups = defaultdict(list)
    for d in deals:
        if (sql == SQL_V2 and d.amount < BIG) or sql == SQL_NONE:
            continue
        for start, end in tumble(d.ts, WINDOW):
            if end <= closed_us:
                groups[(end, d.city)].append(d)
    return {k: (k[0] - WINDOW, len(v), sum(x.amount for x in v)) for k, v in groups.items()}


def within(rows: dict, frm: int, to: int) -> dict:
    return {k: v for k, v in rows.items() if frm < k[0] <= to}


def outside(rows: dict, frm: int, to: int) -> dict:
    return {k: v for k, v in rows.items() if not frm < k[0] <= to}


class Live:
    """A topic of the test's own broker, `strata run` with the v1 SQL over
    it, and deals streaming in."""

    def __init__(self, tmp: pathlib.Path, strata_bin: str, broker, rng: random.Random, rate: int, lag_us: int,
                 layer: str = "dws_city"):
        self.bin, self.broker, self.tmp, self.layer = strata_bin, broker, tmp, layer
        self.topic = unique("streaming")
        create_topic(broker.bootstrap, self.topic, PARTITIONS)
        template, source = (LAYER, "ods_deals") if layer == "dws_city" else (DIRECT, "deals")

        def text(sql: str) -> str:
            return template.format(sql=sql.replace("TABLE ods_deals", f"TABLE {source}"), topic=self.topic)

        self.wh = LayeredWarehouse(tmp, broker.bootstrap, self.topic, text(SQL_V1),
                                   watermark="{delay: 3s, idle_timeout: 5s}")
        self.files = {}
        for name, sql in [("v1", SQL_V1), ("v2", SQL_V2), ("none", SQL_NONE)]:
            self.files[name] = tmp / f"warehouse_{name}.yaml"
            self.files[name].write_text(self.wh.path.read_text().replace(text(SQL_V1), text(sql)))
        self.sql = {name: sql for name, sql in [("v1", SQL_V1), ("v2", SQL_V2), ("none", SQL_NONE)]}
        self.stream = Stream(broker.bootstrap, self.topic, rate, lag_us, rng, first=1_000_000)
        self.live = Strata(strata_bin, self.wh).start()
        self.runs = 0

    def table_path(self) -> pathlib.Path:
        return self.wh.table_path("dws", self.layer)

    def rows(self) -> dict[tuple, tuple]:
        t = self.wh.table("dws", self.layer)
        if t is None:
            return {}
        out = {}
        for start, end, city, n, gmv in zip(micros(t["window_start"]), micros(t["window_end"]),
                                            t["city"].to_pylist(), t["deals"].to_pylist(), t["gmv"].to_pylist()):
            assert (end, city) not in out, f"window {iso(end)} {city} twice"
            out[(end, city)] = (start, n, gmv)
        return out

    def wait_closed(self, until_us: int, timeout: float = 180):
        """Until the live table holds a window ending after `until_us`."""
        wait_until(lambda: any(k[0] > until_us for k in self.rows()), timeout,
                   f"the live pipeline to close {iso(until_us)}")

    def backfill(self, frm: int, to: int, *extra: str, file: str = "v2") -> tuple[int, str, dict | None]:
        """Runs `strata backfill` to its end: (exit status, log, summary)."""
        self.runs += 1
        name = f"backfill-{self.runs}"
        log_path, out_path = self.tmp / f"{name}.log", self.tmp / f"{name}.out"
        with open(log_path, "wb") as log, open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [self.bin, "--log-format", "json", "backfill", str(self.files[file]), self.layer,
                 "--from", iso(frm), "--to", iso(to), *extra],
                stdout=out, stderr=log, env={**os.environ, "RUST_LOG": "info"})
            _STARTED.append(proc)
            rc = proc.wait(timeout=300)
        text = out_path.read_text()
        return rc, log_path.read_text(errors="replace"), json.loads(text) if rc == 0 and text.strip() else None

    def snapshot(self) -> tuple:
        """The table's version, files (name and size) and rows."""
        path = self.table_path()
        files = sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*") if p.is_file())
        return DeltaTable(str(path)).version(), files, self.rows()


def window_after(us: int) -> int:
    return (us // WINDOW + 1) * WINDOW


def test_events_sent_long_after_their_time_are_replayed_from_where_the_ods_table_found_them(
        tmp_path, strata_bin, own_broker, rng):
    # A day old, then ten minutes late: either way Kafka's timestamps (when
    # the producer sent them) are far from the event times.
    for lag in [DAY, 10 * MINUTE]:
        s = Live(tmp_path / f"lag{lag // SECOND}", strata_bin, own_broker, rng, rate=100, lag_us=lag)
        s.stream.start()
        # Four windows, from two windows into the stream.
        frm = window_after(now_us() - lag) + WINDOW
        to = frm + 4 * WINDOW
        s.wait_closed(to + WINDOW)
        before = s.rows()
        assert within(before, frm, to), "the live pipeline computed the range"

        rc, log, summary = s.backfill(frm, to)
        assert rc == 0, log[-4000:]
        after = s.rows()
        deals = s.stream.deals()
        expected = within(reference(deals, SQL_V2, to), frm, to)
        assert len(expected) == 4 * len(CITIES), "every window of the range, every city"
        assert within(after, frm, to) == expected
        assert within(before, frm, to) != expected, "the new SQL must change the range"
        # Windows outside the range are untouched, and were right.
        assert {k: after[k] for k in outside(before, frm, to)} == outside(before, frm, to)
        v1 = reference(deals, SQL_V1, to + WINDOW)
        assert {k: v for k, v in outside(before, frm, to).items() if k in v1} == outside(v1, frm, to)
        source = summary["sources"][0]
        assert source["from"].startswith("kafka: Kafka holds the range: offsets from the ODS table"), source
        assert "read all" in source["coverage"], source
        assert summary["tables"][0]["rows"] == len(expected)
        s.live.assert_alive()
        s.stream.stop()
        assert s.live.stop() == 0


def test_without_an_ods_table_offsets_for_times_is_widened_by_the_lag_the_live_pipeline_saw(
        tmp_path, strata_bin, own_broker, rng):
    s = Live(tmp_path, strata_bin, own_broker, rng, rate=100, lag_us=DAY, layer="dws_direct")
    s.stream.start()
    frm = window_after(now_us() - DAY) + WINDOW
    to = frm + 4 * WINDOW
    s.wait_closed(to + WINDOW)
    rc, log, summary = s.backfill(frm, to)
    assert rc == 0, log[-4000:]
    expected = within(reference(s.stream.deals(), SQL_V2, to), frm, to)
    assert len(expected) == 4 * len(CITIES)
    assert within(s.rows(), frm, to) == expected
    source = summary["sources"][0]
    assert "offsets-for-times" in source["from"] and "feeds no ODS table" in source["from"], source
    # The margin: a day, as the live pipeline saw it (to the second).
    assert "margin for the lag between Kafka and event time: 8640" in source["from"], source
    assert source["coverage"].startswith("no ODS table to count against"), source
    s.live.assert_alive()
    s.stream.stop()
    assert s.live.stop() == 0


def test_a_kafka_replay_that_cannot_see_the_range_refuses_and_changes_nothing(tmp_path, strata_bin, own_broker, rng):
    s = Live(tmp_path, strata_bin, own_broker, rng, rate=100, lag_us=DAY)
    s.stream.start()
    frm = window_after(now_us() - DAY) + WINDOW
    to = frm + 4 * WINDOW
    s.wait_closed(to + WINDOW)
    # From here only a backfill changes the table; records go on streaming.
    assert s.live.stop() == 0
    held = s.snapshot()
    assert within(held[2], frm, to)

    # Wrong offsets: each partition from the middle of the range's records.
    ods = DeltaTable(str(s.wh.table_path("ods", "ods_deals"))).to_pyarrow_table(
        columns=["_kafka_partition", "_kafka_offset", "event_time"])
    times = micros(ods["event_time"])
    middle = {}
    for p in range(PARTITIONS):
        offsets = sorted(o for part, o, t in zip(ods["_kafka_partition"].to_pylist(),
                                                  ods["_kafka_offset"].to_pylist(), times)
                         if part == p and frm <= t < to)
        middle[p] = offsets[len(offsets) // 2]
    given = ",".join(f"{s.topic}:{p}:{o}" for p, o in middle.items())
    rc, log, _ = s.backfill(frm, to, "--from-offsets", given)
    assert rc != 0
    assert "did not cover the range" in log and "not read: offsets" in log, log[-3000:]
    assert "--replay-from ods" in log and "Nothing was swapped" in log, log[-3000:]
    assert s.snapshot() == held

    # The topic is re-created (as if retention had passed) and refilled:
    # its offsets hold other records now.
    s.stream.stop()
    sent_before = len(s.stream.positions())
    admin = AdminClient({"bootstrap.servers": own_broker.bootstrap})
    for f in admin.delete_topics([s.topic]).values():
        f.result(timeout=30)
    wait_until(lambda: s.topic not in admin.list_topics(timeout=5).topics, 30, "the topic to go")
    create_topic(own_broker.bootstrap, s.topic, PARTITIONS)
    s.stream.start()
    wait_until(lambda: len(s.stream.positions()) > sent_before + 500, 60, "records in the new topic")
    rc, log, _ = s.backfill(frm, to, "--replay-from", "kafka")
    assert rc != 0
    assert "Kafka no longer holds the range" in log and "--replay-from ods" in log, log[-3000:]
    assert s.snapshot() == held

    # A result with no row for the range is refused unless asked for, and
    # says how many rows a swap would have deleted.
    rc, log, _ = s.backfill(frm, to, file="none")
    assert rc != 0 and "--allow-empty" in log, log[-3000:]
    assert f"would delete the {len(within(held[2], frm, to))} rows the live table has" in log, log[-3000:]
    assert s.snapshot() == held
    # Over a range the live table has no row of either (it ends before the
    # first window holding records), the refusal points at the range.
    early = (frm - 20 * WINDOW, frm - 10 * WINDOW)
    assert within(held[2], *early) == {}
    rc, log, _ = s.backfill(*early, "--replay-from", "ods", file="v1")
    assert rc != 0 and "--allow-empty" in log, log[-3000:]
    assert "no row there either" in log and "check --from and --to" in log, log[-3000:]
    assert s.snapshot() == held
    rc, log, summary = s.backfill(frm, to, "--allow-empty", file="none")
    assert rc == 0, log[-3000:]
    assert summary["sources"][0]["from"].startswith("ods table"), summary
    version, _, rows = s.snapshot()
    assert version == held[0] + 1
    assert within(rows, frm, to) == {}
    assert outside(rows, frm, to) == outside(held[2], frm, to)
    s.stream.stop()


def delta_log_txns(path: pathlib.Path, app_id: str) -> list[int]:
    """The txn versions of `app_id`'s commits, in log order."""
    out = []
    for entry in sorted((path / "_delta_log").glob("*.json")):
        for line in entry.read_text().splitlines():
            action = json.loads(line)
            if "txn" in action and action["txn"]["appId"] == app_id:
                out.append(action["txn"]["version"])
    return out


def test_ten_backfills_in_a_row_under_a_stream_of_2000_events_per_second(tmp_path, strata_bin, kafka, rng):
    # The shared broker (memory storage): on sqlite storage a fetch from an
    # early offset takes 20-30 s under this load, so the replays read the
    # ODS table; what is tested here is the live pipeline under the swaps.
    broker = SimpleNamespace(bootstrap=kafka)
    s = Live(tmp_path, strata_bin, broker, rng, rate=2000, lag_us=DAY)
    # Ten minutes of history, sent now (so logged a day after it happened),
    # then the stream, a day old as it arrives.
    history_start = window_after(now_us() - DAY - 15 * MINUTE)
    history = disordered_deals(6000, rng, step_us=100_000, jitter_us=SECOND, start_us=history_start)
    sent = produce(kafka, s.topic, as_sent(history, PARTITIONS))
    s.stream.start()
    frm, to = history_start + 2 * MINUTE, history_start + 8 * MINUTE
    s.wait_closed(history_start + 10 * MINUTE)

    # v1 and v2 in turn, v2 last: each swap changes the range.
    for i in range(10):
        name = "v1" if i % 2 == 0 else "v2"
        rc, log, summary = s.backfill(frm, to, "--replay-from", "ods", file=name)
        assert rc == 0, log[-4000:]
        assert within(s.rows(), frm, to) == within(reference(history, s.sql[name], to), frm, to), f"backfill {i}"
        s.live.assert_alive()

    # The stream ends; sentinels close every window of it.
    s.stream.stop()
    streamed = s.stream.deals()
    closing = max(d.ts for d in streamed) + MINUTE
    tail = produce(kafka, s.topic, sentinels(PARTITIONS, closing))
    closed = closing - DELAY
    everything = history + streamed
    expected = outside(reference(everything, SQL_V1, closed), frm, to)
    expected.update(within(reference(everything, SQL_V2, closed), frm, to))
    wait_until(lambda: s.rows() == expected, 180, "the live pipeline to close every window")
    s.live.assert_alive()
    assert s.live.stop() == 0

    # Exactly once: every record in the ODS table once, every epoch of
    # each table committed once, and the tables at the last manifest.
    ods = DeltaTable(str(s.wh.table_path("ods", "ods_deals"))).to_pyarrow_table(
        columns=["_kafka_partition", "_kafka_offset"])
    positions = list(zip(ods["_kafka_partition"].to_pylist(), ods["_kafka_offset"].to_pylist()))
    assert len(positions) == len(set(positions)), "a record landed twice"
    produced = sent + s.stream.positions() + tail
    assert set(positions) == {(x.partition, x.offset) for x in produced}
    last_epoch = max(int(p.stem) for p in s.wh.checkpoint_dir.glob("*.json"))
    for kind, layer in [("ods", "ods_deals"), ("dws", "dws_city")]:
        # Each epoch that added rows to a table committed once, in order
        # (an epoch that adds nothing makes no commit).
        txns = delta_log_txns(s.wh.table_path(kind, layer), layer)
        assert txns == sorted(set(txns)) and set(txns) <= set(range(1, last_epoch + 1)), (layer, txns)
        assert DeltaTable(str(s.wh.table_path(kind, layer))).transaction_version(layer) == txns[-1]
    # The live commits lost races to the swaps, and went on.
    assert "another writer committed first" in s.live.log()
    history_commits = [c for c in DeltaTable(str(s.table_path())).history() if "strata.backfill" in c]
    assert len(history_commits) == 10
