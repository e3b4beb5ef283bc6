"""Harness for Strata's integration tests.

The tests drive the real `strata` binary against a real Kafka-compatible
broker (nisshi), and check the Delta tables it writes with the `deltalake`
package from PyPI. `scripts/test` builds the binary, starts a broker with
memory storage and sets:

  STRATA_BIN          the strata binary
  STRATA_TEST_KAFKA   host:port of the shared broker (memory storage)
  STRATA_NISSHI_BIN   the broker binary, for tests that need their own
                      broker (sqlite storage: restarts, timestamp seeks)
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from deltalake import DeltaTable


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests with scripts/test", pytrace=False)
    return value


@pytest.fixture(scope="session")
def strata_bin() -> str:
    return _env("STRATA_BIN")


@pytest.fixture(scope="session")
def kafka() -> str:
    return _env("STRATA_TEST_KAFKA")


@pytest.fixture
def rng(request) -> random.Random:
    """A seeded RNG; the seed is printed so a failing run can be replayed
    with STRATA_TEST_SEED."""
    seed = int(os.environ.get("STRATA_TEST_SEED", time.time_ns() % 1_000_000))
    print(f"{request.node.name}: STRATA_TEST_SEED={seed}")
    return random.Random(seed)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for f in futures.values():
        f.result(timeout=30)


@dataclass
class Sent:
    """A record as produced, with where the broker put it."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int = -1


def produce(bootstrap: str, topic: str, records: list[Sent], timestamp_ms: int | None = None,
            timestamps_ms: list[int] | None = None, transactional: bool = False) -> list[Sent]:
    """Produces `records` to their partitions and fills in their offsets;
    `timestamp_ms` stamps every record, `timestamps_ms` each its own.
    `transactional`: in one committed transaction, so each partition ends
    with a transaction marker (as topics Strata publishes do)."""
    config = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    if transactional:
        config["transactional.id"] = unique("test-producer")
    producer = Producer(config)
    if transactional:
        producer.init_transactions(30)
        producer.begin_transaction()
    errors = []

    def delivered(sent: Sent):
        def callback(err, msg):
            if err is not None:
                errors.append(err)
            else:
                sent.offset = msg.offset()

        return callback

    for i, sent in enumerate(records):
        stamp = timestamps_ms[i] if timestamps_ms is not None else timestamp_ms
        kwargs = {"timestamp": stamp} if stamp is not None else {}
        while True:
            try:
                producer.produce(
                    topic, key=sent.key, value=sent.value, partition=sent.partition,
                    on_delivery=delivered(sent), **kwargs,
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if transactional:
        producer.commit_transaction(60)
    remaining = producer.flush(60)
    assert remaining == 0, f"{remaining} records not delivered"
    assert not errors, errors
    return records


@dataclass
class Warehouse:
    """A warehouse file with one ODS layer over `topic`, in a temp dir."""

    dir: pathlib.Path
    bootstrap: str
    topic: str
    layer: str = "ods_deals"
    start: str = "earliest"
    interval: str = "200ms"
    group_id: str | None = None
    # 0: the Flight SQL server `strata run` starts takes any free port.
    serve_port: int = 0
    # Appended to the file (top-level sections such as `maintenance:`).
    extra: str = ""
    path: pathlib.Path = field(init=False)

    def __post_init__(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "warehouse.yaml"
        self.write()

    def write(self):
        group = f"\n      group_id: {self.group_id}" if self.group_id else ""
        self.path.write_text(
            f"""warehouse: test
storage:
  root: ./data
kafka:
  bootstrap_servers: {self.bootstrap}
serve:
  listen: 127.0.0.1:{self.serve_port}
checkpoint:
  interval: {self.interval}
schemas:
  deal:
    event_time: event_time
    fields:
      - {{name: deal_id, type: string, nullable: false}}
      - {{name: event_type, type: string, nullable: false}}
      - {{name: amount, type: "decimal(18,2)"}}
      - {{name: city, type: string}}
      - {{name: event_time, type: timestamp}}
layers:
  - name: {self.layer}
    kind: ods
    source:
      topic: {self.topic}
      schema: deal
      start: "{self.start}"{group}
{self.extra}"""
        )

    @property
    def table_path(self) -> pathlib.Path:
        return self.dir / "data" / "ods" / self.layer

    @property
    def dead_letter_path(self) -> pathlib.Path:
        return self.dir / "data" / "ods" / f"{self.layer}_dead_letter"

    @property
    def checkpoint_dir(self) -> pathlib.Path:
        # One checkpoint per dataflow: the warehouse, named "test".
        return self.dir / "data" / "_strata" / "checkpoints" / "test"

    @staticmethod
    def _read(path: pathlib.Path, columns=None):
        if not (path / "_delta_log").exists():
            return None
        return DeltaTable(str(path)).to_pyarrow_table(columns=columns)

    def rows(self, columns=None):
        return self._read(self.table_path, columns)

    def dead_letters(self, columns=None):
        return self._read(self.dead_letter_path, columns)

    def row_count(self) -> int:
        t = self.rows(columns=["deal_id"])
        return 0 if t is None else t.num_rows

    def dead_letter_count(self) -> int:
        t = self.dead_letters(columns=["offset"])
        return 0 if t is None else t.num_rows

    def manifest_epochs(self) -> list[int]:
        if not self.checkpoint_dir.exists():
            return []
        return sorted(int(p.stem) for p in self.checkpoint_dir.glob("*.json"))

    def manifest_rows(self, epoch: int, table: pathlib.Path) -> int:
        """Rows the manifest of `epoch` records for `table`."""
        manifest = json.loads((self.checkpoint_dir / f"{epoch:020}.json").read_text())
        want = os.path.realpath(table)
        return sum(s["rows"] for s in manifest["sinks"]
                   if os.path.realpath(urllib.parse.urlparse(s["table"]).path) == want)

    def txn_version(self, path: pathlib.Path) -> int | None:
        return DeltaTable(str(path)).transaction_version(self.layer)


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _kill_leftovers():
    """A failing test must not leave a `strata` or broker process behind."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


class Strata:
    """A `strata run` process, its logs in a file."""

    def __init__(self, binary: str, warehouse: Warehouse, *extra: str):
        self.binary = binary
        self.warehouse = warehouse
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self, **env: str) -> "Strata":
        """Starts `strata run`; keyword arguments are extra environment
        variables (e.g. STRATA_FAILPOINT)."""
        self.runs += 1
        log = open(self.warehouse.dir / f"strata-{self.runs}.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, "--log-format", "json", "run", str(self.warehouse.path), *self.extra],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info"), **env},
        )
        _STARTED.append(self.proc)
        return self

    def kill9(self):
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM and wait: a clean stop commits the last epoch."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def wait(self, timeout: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill_at_random_moments(self, rng: random.Random, kills: int, lifetime: tuple[float, float],
                               until: threading.Thread | None = None, observe=lambda: None) -> list:
        """Starts the process and SIGKILLs it after a random `lifetime`
        (seconds), `kills` times and on while `until` (a producer) runs.
        Returns what `observe()` says after each kill."""
        seen = []
        while len(seen) < kills or (until is not None and until.is_alive()):
            self.start()
            time.sleep(rng.uniform(*lifetime))
            self.assert_alive()
            self.kill9()
            seen.append(observe())
        return seen

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.warehouse.dir.glob("strata-*.log"))
        )

    def assert_alive(self):
        if not self.running():
            raise AssertionError(f"strata exited with {self.proc.returncode}:\n{self.log()[-4000:]}")


def produce_in_background(bootstrap: str, topic: str, records: list[Sent], chunk: int, pause: float):
    """Produces `records` in chunks with pauses, so the pipeline sees a
    stream over several epochs. Returns (thread, errors)."""
    errors: list[Exception] = []

    def run():
        try:
            for start in range(0, len(records), chunk):
                produce(bootstrap, topic, records[start:start + chunk])
                time.sleep(pause)
        except Exception as e:  # reported by the caller
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


class Broker:
    """A broker of the test's own, on sqlite storage: it survives restarts
    and answers offsets-for-times correctly (see BROKER.md)."""

    def __init__(self, data_dir: pathlib.Path):
        self.binary = _env("STRATA_NISSHI_BIN")
        self.port = free_port()
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Broker":
        self.starts += 1
        log = open(self.data_dir / f"broker-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, "broker",
             "--listener-url", f"tcp://127.0.0.1:{self.port}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}",
             # nisshi resolves the sqlite path against its working directory.
             "--storage-engine", "sqlite://broker.db"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir,
        )
        _STARTED.append(self.proc)

        def listening():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                assert self.proc.poll() is None, "the broker exited at start"
                return False

        wait_until(listening, 20, "the broker to listen")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def own_broker(tmp_path):
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.stop()


# -- records -----------------------------------------------------------------

MALFORMED_KINDS = [
    lambda i: b'{"deal_id": "bad' + str(i).encode(),                       # truncated JSON
    lambda i: b"not json " + str(i).encode(),                                # not JSON at all
    lambda i: json.dumps({"deal_id": f"m{i}", "event_type": "paid", "amount": "lots",
                          "event_time": "2026-11-21T08:00:00Z"}).encode(),  # wrong type
    lambda i: json.dumps({"deal_id": f"m{i}", "event_type": "paid"}).encode(),  # no event time
    lambda i: None,                                                          # tombstone
    lambda i: b"[" + str(i).encode() + b"]",                                 # not an object
    lambda i: b"\xff\xfe" + str(i).encode(),                                 # not UTF-8
]


def deal(i: int, rng: random.Random) -> bytes:
    city = rng.choice(["beijing", "shanghai", "shenzhen", "hangzhou"])
    return json.dumps({
        "deal_id": f"d{i:08d}",
        "event_type": rng.choice(["created", "signed", "paid", "cancelled"]),
        "amount": f"{rng.uniform(1e5, 9e6):.2f}",
        "city": city,
        # In the past, so that no row is future-dated, whenever the tests run.
        "event_time": f"2026-10-{rng.randint(1, 31):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
    }).encode()


def make_records(n: int, partitions: int, malformed_every: int, rng: random.Random, first: int = 0) -> list[Sent]:
    """`n` records spread over `partitions`; every `malformed_every`-th is
    malformed, cycling through the kinds of breakage."""
    out = []
    for i in range(first, first + n):
        if malformed_every and i % malformed_every == malformed_every - 1:
            value = MALFORMED_KINDS[(i // malformed_every) % len(MALFORMED_KINDS)](i)
        else:
            value = deal(i, rng)
        out.append(Sent(key=f"k{i}".encode(), value=value, partition=i % partitions))
    return out


def is_valid(sent: Sent) -> bool:
    return sent.value is not None and sent.value.startswith(b'{"deal_id": "d')


def check_exactly_once(wh: Warehouse, sent: list[Sent]) -> None:
    """The table holds each valid record once, the dead-letter table each
    malformed one once, with its raw bytes and position, and both tables'
    txn version is the last committed epoch that added rows to them."""
    valid = [s for s in sent if is_valid(s)]
    bad = [s for s in sent if not is_valid(s)]
    rows = wh.rows()
    assert rows is not None, "no table was written"
    ids = rows.column("deal_id").to_pylist()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} rows are duplicates"
    assert sorted(ids) == sorted(json.loads(s.value)["deal_id"] for s in valid)
    # Each row holds its record's fields, as sent, at the record's position.
    columns = ["deal_id", "event_type", "amount", "city", "event_time", "_kafka_topic",
               "_kafka_partition", "_kafka_offset", "event_date"]
    got = {row[0]: row for row in zip(*(rows.column(c).to_pylist() for c in columns))}
    for s in valid:
        v = json.loads(s.value)
        at = datetime.fromisoformat(v["event_time"].replace("Z", "+00:00"))
        want = (v["deal_id"], v["event_type"], Decimal(v["amount"]), v["city"], at, wh.topic,
                s.partition, s.offset, at.date())
        assert got[v["deal_id"]] == want, f"row {got[v['deal_id']]} for record {want}"

    dead = wh.dead_letters()
    got_dead = [] if dead is None else list(zip(
        dead.column("partition").to_pylist(), dead.column("offset").to_pylist(),
        dead.column("raw").to_pylist(), dead.column("topic").to_pylist(),
        dead.column("reason").to_pylist(),
    ))
    assert len(got_dead) == len(bad), f"dead letters: {len(got_dead)}, malformed sent: {len(bad)}"
    assert sorted((p, o, r) for p, o, r, _, _ in got_dead) == sorted((s.partition, s.offset, s.value) for s in bad)
    assert all(t == wh.topic and reason for _, _, _, t, reason in got_dead)

    epochs = wh.manifest_epochs()
    assert epochs, "no checkpoint manifest"
    for path in (wh.table_path, wh.dead_letter_path):
        # A table is committed only in the epochs that add rows to it.
        txn = wh.txn_version(path)
        assert txn is None or txn <= epochs[-1], (path, txn, epochs)
        with_rows = [e for e in epochs if wh.manifest_rows(e, path)]
        if with_rows:
            assert txn == with_rows[-1], (path, txn, with_rows)
