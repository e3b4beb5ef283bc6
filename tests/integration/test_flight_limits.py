"""No Flight SQL request may kill the server, stall the pipeline beside it
or lock out other clients: hostile statements and handles, abandoned and
memory-hungry queries, many heavy scans at once, with real clients (ADBC,
pyarrow.flight) against `strata run` (pipeline and server in one process)
or `strata serve`.

The pipeline's health is read from its checkpoint manifests: each epoch's
manifest records when it was written (`created_at_ms`); a stalled pipeline
shows as a gap between consecutive epochs.
"""

import json
import os
import random
import signal
import socket
import subprocess
import threading
import time

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from deltalake import write_deltalake
from flightsql import flightsql_pb2 as sql_pb2
from google.protobuf import any_pb2

from conftest import _STARTED, create_topic, free_port, make_records, produce_in_background, unique, wait_until

USER, PASSWORD = "bi", "limits-pw"
INTERVAL_S = 1.0
# Small limits, so the tests reach them quickly.
LIMITS = """
  limits:
    query_threads: 1
    concurrent_queries: 4
    queued_queries: 64
    queue_timeout: 120s
    query_timeout: {timeout}
    query_memory: 64MiB
    memory: 256MiB
    spill: 256MiB
    generated_rows: 1000000
    expression_depth: 1000
    prepared_per_user: 8
    parameter_bytes: 1MiB"""
MEMORY_BUDGET = 256 << 20
# The process itself (code, tables' logs, the pipeline, buffers in flight)
# on top of what queries may hold.
RSS_MARGIN = 160 << 20


def big_table(rows: int, width: int = 0) -> pa.Table:
    return pa.table({
        "id": pa.array(range(rows), pa.int64()),
        "s": [f"value-{i:08d}-{i * 7919 % 100_003:06d}" + "x" * width for i in range(rows)],
        "v": pa.array([(i * 37 % 1000) / 1000 for i in range(rows)], pa.float64()),
    })


class Process:
    """A `strata run` or `strata serve` of a warehouse file, its logs in a file."""

    def __init__(self, strata_bin, dir, command, topic=None, kafka="127.0.0.1:1", timeout="30s"):
        self.dir = dir
        self.port = free_port()
        layers = f"""
  - name: ods_deals
    kind: ods
    source: {{topic: {topic}, schema: deal, start: earliest}}""" if topic else " []"
        (dir / "warehouse.yaml").write_text(f"""warehouse: limits
storage:
  root: ./data
kafka:
  bootstrap_servers: {kafka}
checkpoint:
  interval: {int(INTERVAL_S * 1000)}ms
  retain: 100000
serve:
  listen: 127.0.0.1:{self.port}
  users:
    - {{username: {USER}, password: "${{TEST_LIMITS_PASSWORD}}"}}{LIMITS.format(timeout=timeout)}
schemas:
  deal:
    event_time: event_time
    fields:
      - {{name: deal_id, type: string, nullable: false}}
      - {{name: event_type, type: string, nullable: false}}
      - {{name: amount, type: "decimal(18,2)"}}
      - {{name: city, type: string}}
      - {{name: event_time, type: timestamp}}
layers:{layers}
""")
        self.log = dir / f"{command}.log"
        self.proc = subprocess.Popen(
            [strata_bin, "--log-format", "json", command, str(dir / "warehouse.yaml")],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
            env={**os.environ, "TEST_LIMITS_PASSWORD": PASSWORD, "RUST_LOG": "info"},
        )
        _STARTED.append(self.proc)

        def listening():
            self.assert_alive()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_until(listening, 60, "the Flight SQL server to listen")

    def assert_alive(self):
        assert self.proc.poll() is None, f"strata exited with {self.proc.returncode}:\n" + \
            self.log.read_text(errors="replace")[-4000:]

    @property
    def uri(self):
        return f"grpc://127.0.0.1:{self.port}"

    def connect(self):
        return flight_sql.connect(self.uri, db_kwargs={"username": USER, "password": PASSWORD}, autocommit=True)

    def flight(self):
        client = flight.FlightClient(self.uri)
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(USER, PASSWORD)], timeout=120)
        return client, options

    def status(self):
        client, options = self.flight()
        [result] = list(client.do_action(flight.Action("strata.query_status", b""), options))
        return json.loads(result.body.to_pybytes())

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    # -- the process, from /proc ---------------------------------------------

    def memory(self, field):
        """VmRSS or VmHWM (peak), bytes."""
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field}")

    def query_cpu_seconds(self):
        """CPU time of the query threads (named strata-query)."""
        ticks = 0
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                if open(f"/proc/{self.proc.pid}/task/{tid}/comm").read().strip() != "strata-query":
                    continue
                fields = open(f"/proc/{self.proc.pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


class Epochs:
    """Watches the pipeline's manifests and keeps each epoch's commit time."""

    def __init__(self, dir):
        self.dir = dir / "data" / "_strata" / "checkpoints" / "limits"
        self.times = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self):
        while not self.stopping.is_set():
            if self.dir.exists():
                for path in self.dir.glob("*.json"):
                    epoch = int(path.stem)
                    if epoch not in self.times:
                        try:
                            self.times[epoch] = json.loads(path.read_text())["created_at_ms"] / 1000
                        except (OSError, ValueError, KeyError):
                            pass  # being written
            self.stopping.wait(0.1)

    def count(self):
        return len(self.times)

    def latest(self):
        return max(self.times.values(), default=0)

    def worst_gap(self, since):
        """The longest time between consecutive epochs committed after `since`
        (including from the last epoch to now)."""
        times = sorted(t for t in self.times.values() if t >= since)
        gaps = [b - a for a, b in zip(times, times[1:])] + [time.time() - times[-1]] if times else [float("inf")]
        return max(gaps)

    def stop(self):
        self.stopping.set()
        self.thread.join()


@pytest.fixture
def warehouse(tmp_path):
    # Long strings: distinct pairs of them fill memory fast.
    write_deltalake(str(tmp_path / "data" / "ods" / "big"), big_table(3_000, width=200))
    write_deltalake(str(tmp_path / "data" / "ods" / "wide"), big_table(200_000))
    return tmp_path


@pytest.fixture
def running(warehouse, strata_bin, kafka, rng):
    """`strata run` with an ODS pipeline fed all along, and its epochs."""
    topic = unique("deals")
    create_topic(kafka, topic, partitions=2)
    records = make_records(40_000, partitions=2, malformed_every=0, rng=rng)
    producer, errors = produce_in_background(kafka, topic, records, chunk=400, pause=0.1)
    strata = Process(strata_bin, warehouse, "run", topic=topic, kafka=kafka)
    epochs = Epochs(warehouse)
    wait_until(lambda: (strata.assert_alive(), epochs.count() >= 3)[1], 90, "the pipeline's first epochs")
    yield strata, epochs
    epochs.stop()
    producer.join()
    assert not errors, errors
    assert strata.stop() == 0, strata.log.read_text(errors="replace")[-3000:]


def code_of(error) -> str:
    text = str(error)
    for code in ["INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "UNAVAILABLE", "NOT_FOUND",
                 "INTERNAL", "UNAUTHENTICATED"]:
        camel = "".join(w.capitalize() for w in code.split("_"))
        if code in text or camel in text:
            return code
    return text


def run_adbc(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def hostile_statements(rng: random.Random):
    """The statements that once crashed the server, and generated variants."""
    chain = lambda n, op, term: f" {op} ".join(term(i) for i in range(n))  # noqa: E731
    yield "SELECT " + chain(400, "+", lambda i: "1")
    yield "SELECT " + chain(250, "||", lambda i: "'a'")
    yield "SELECT count(*) FROM ods.big WHERE id IN (" + ", ".join(str(i) for i in range(2_500)) + ")"
    yield "SELECT count(*) FROM ods.big WHERE " + chain(2_000, "OR", lambda i: f"id = {i}")
    yield "SELECT count(DISTINCT value) FROM generate_series(1, 5000000000)"
    yield "SELECT range(1, 5000000000)"
    for _ in range(30):
        n = rng.choice([10, 300, 1_001, 3_000, 20_000])
        op = rng.choice(["+", "*", "-", "||", "AND", "OR", "="])
        term = rng.choice([lambda i: "1", lambda i: "id", lambda i: f"id = {i}", lambda i: "'x'"])
        where = chain(n, op, term)
        yield rng.choice([f"SELECT {where}", f"SELECT count(*) FROM ods.big WHERE {where}",
                          f"SELECT {where} FROM ods.big LIMIT 1"])


def test_hostile_statements_and_handles_leave_the_server_and_pipeline_running(running, rng):
    strata, epochs = running
    started = time.time()
    codes = {}
    with strata.connect() as conn:
        for sql in hostile_statements(rng):
            try:
                run_adbc(conn, sql)
                codes["OK"] = codes.get("OK", 0) + 1
            except adbc_driver_flightsql.dbapi.Error as e:
                code = code_of(e)
                assert code in {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, (sql[:200], str(e)[:500])
                codes[code] = codes.get(code, 0) + 1
            strata.assert_alive()
    assert codes.get("INVALID_ARGUMENT") and codes.get("RESOURCE_EXHAUSTED") and codes.get("OK"), codes

    # Raw handles over pyarrow.flight: a real one runs; random and edited
    # ones (thousands) are refused, as GetFlightInfo commands and as tickets.
    client, options = strata.flight()
    handle = prepare(client, options, "SELECT count(*) AS n FROM ods.big WHERE id < 100")
    assert execute_handle(client, options, handle).column("n").to_pylist() == [100]
    refused = 0
    for i in range(3_000):
        if i % 2:
            junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 2 * len(handle))))
        else:
            junk = bytearray(handle)
            junk[rng.randrange(len(junk))] ^= rng.randrange(1, 256)
            junk = bytes(junk)
        with pytest.raises((flight.FlightError, pa.ArrowInvalid)) as err:
            if i % 3:
                execute_handle(client, options, junk)
            else:
                client.do_get(flight.Ticket(pack(sql_pb2.CommandPreparedStatementQuery(
                    prepared_statement_handle=junk))), options).read_all()
        assert "not a statement handle" in str(err.value), err.value
        refused += 1
    assert refused == 3_000
    strata.assert_alive()

    # Afterwards: SELECT 1 answers at once, and the pipeline kept its pace.
    t = time.monotonic()
    with strata.connect() as conn:
        assert run_adbc(conn, "SELECT 1 AS one").column("one").to_pylist() == [1]
    assert time.monotonic() - t < 2.0
    wait_until(lambda: epochs.latest() > time.time() - INTERVAL_S * 2, 10, "an epoch after the requests")
    assert epochs.worst_gap(started) <= 2 * INTERVAL_S, sorted(epochs.times.items())[-20:]


def pack(message) -> bytes:
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped.SerializeToString()


def prepare(client, options, sql) -> bytes:
    action = flight.Action("CreatePreparedStatement", pack(sql_pb2.ActionCreatePreparedStatementRequest(query=sql)))
    [result] = list(client.do_action(action, options))
    wrapped = any_pb2.Any()
    wrapped.ParseFromString(result.body.to_pybytes())
    prepared = sql_pb2.ActionCreatePreparedStatementResult()
    wrapped.Unpack(prepared)
    return prepared.prepared_statement_handle


def execute_handle(client, options, handle) -> pa.Table:
    descriptor = flight.FlightDescriptor.for_command(pack(
        sql_pb2.CommandPreparedStatementQuery(prepared_statement_handle=handle)))
    info = client.get_flight_info(descriptor, options)
    return client.do_get(info.endpoints[0].ticket, options).read_all()


def test_parameters_kept_per_user_are_bounded(warehouse, strata_bin):
    """150 binds of ~1 MiB (the issue pinned 221 MB this way) keep at most
    `prepared_per_user` parameter sets; a bind over the limit is refused."""
    server = Process(strata_bin, warehouse, "serve")
    client, options = server.flight()
    payload = "x" * ((1 << 20) - 4096)
    for i in range(150):
        handle = prepare(client, options, "SELECT count(*) FROM ods.big WHERE s <> ?")
        descriptor = flight.FlightDescriptor.for_command(pack(
            sql_pb2.CommandPreparedStatementQuery(prepared_statement_handle=handle)))
        params = pa.table({"$1": [payload + str(i)]})
        writer, reader = client.do_put(descriptor, params.schema, options)
        writer.write_table(params)
        writer.done_writing()
        reader.read()
        writer.close()
    kept = server.status()["kept_parameter_bytes"]
    assert kept <= 8 * (1 << 20), kept
    too_big = pa.table({"$1": ["y" * (2 << 20)]})
    writer, reader = client.do_put(descriptor, too_big.schema, options)
    with pytest.raises(pa.ArrowInvalid) as err:
        writer.write_table(too_big)
        writer.done_writing()
        reader.read()
        writer.close()
    assert "parameter_bytes" in str(err.value), err.value
    server.assert_alive()


def test_an_abandoned_cross_join_stops_using_cpu_within_a_second(warehouse, strata_bin):
    server = Process(strata_bin, warehouse, "serve")
    client, _ = server.flight()
    token = client.authenticate_basic_token(USER, PASSWORD)
    # Runs for minutes and sends nothing until it ends; the client gives up
    # after 3 s (its deadline), as a BI tool's cancel button does.
    query = "SELECT count(*) FROM ods.wide a CROSS JOIN ods.wide b WHERE a.v * b.v > 0.25"
    impatient = flight.FlightCallOptions(headers=[token], timeout=3)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(
        sql_pb2.CommandStatementQuery(query=query))), flight.FlightCallOptions(headers=[token]))
    cpu_at_start = server.query_cpu_seconds()
    with pytest.raises(flight.FlightTimedOutError):
        client.do_get(info.endpoints[0].ticket, impatient).read_all()
    gave_up = time.monotonic()
    assert server.query_cpu_seconds() - cpu_at_start > 0.5, "the query was not busy"

    def idle():
        before = server.query_cpu_seconds()
        time.sleep(0.2)
        return server.query_cpu_seconds() - before < 0.02

    wait_until(idle, 10, "the query threads to go idle", interval=0)
    stopped_after = time.monotonic() - gave_up - 0.2
    assert stopped_after < 1.0, f"the query ran on for {stopped_after:.2f} s"
    wait_until(lambda: server.status()["running"] == 0, 5, "the query to count as stopped")
    assert server.status()["memory_bytes"] == 0
    with server.connect() as conn:
        assert run_adbc(conn, "SELECT 1 AS one").column("one").to_pylist() == [1]


def test_a_memory_hungry_query_fails_within_the_budget(warehouse, strata_bin):
    server = Process(strata_bin, warehouse, "serve")
    with server.connect() as conn:
        run_adbc(conn, "SELECT count(*) FROM ods.big a CROSS JOIN ods.big b WHERE a.id = 0")
        baseline = server.memory("VmRSS")
        with pytest.raises(adbc_driver_flightsql.dbapi.Error) as err:
            run_adbc(conn, "SELECT count(DISTINCT a.s || b.s) FROM ods.big a CROSS JOIN ods.big b")
        # Its aggregation spills to disk, then fails: RESOURCE_EXHAUSTED.
        assert code_of(err.value) == "RESOURCE_EXHAUSTED", err.value
        assert "query_memory" in str(err.value), err.value
        peak = server.memory("VmHWM")
        assert peak < baseline + MEMORY_BUDGET + RSS_MARGIN, (baseline >> 20, peak >> 20)
        assert server.status()["memory_bytes"] == 0
        assert run_adbc(conn, "SELECT 1 AS one").column("one").to_pylist() == [1]


def test_16_concurrent_heavy_scans_do_not_stall_epochs(running):
    strata, epochs = running
    started = time.time()
    failures = []

    def scan():
        try:
            client, options = strata.flight()
            info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(
                sql_pb2.CommandStatementQuery(query="SELECT id, s, v FROM ods.wide ORDER BY s DESC"))), options)
            table = client.do_get(info.endpoints[0].ticket, options).read_all()
            assert table.num_rows == 200_000
        except Exception as e:  # reported below
            failures.append(e)

    scans = [threading.Thread(target=scan) for _ in range(16)]
    for t in scans:
        t.start()
    for t in scans:
        t.join()
    assert not failures, failures[:3]
    assert epochs.worst_gap(started) <= 2 * INTERVAL_S, sorted(epochs.times.items())[-30:]


def test_timeouts_and_a_full_queue(warehouse, strata_bin):
    server = Process(strata_bin, warehouse, "serve", timeout="10s")
    client, options = server.flight()
    # (count(*) alone would come from the tables' statistics)
    long_query = "SELECT count(*) FROM ods.wide a CROSS JOIN ods.wide b WHERE a.v > b.v"
    results = {}

    def run(name, sql):
        try:
            with server.connect() as conn:
                results[name] = run_adbc(conn, sql).num_rows
        except adbc_driver_flightsql.dbapi.Error as e:
            results[name] = code_of(e)

    # Four slots busy with queries that run past the timeout...
    long = [threading.Thread(target=run, args=(f"long{i}", long_query)) for i in range(4)]
    for t in long:
        t.start()
    wait_until(lambda: server.status()["running"] == 4, 30, "four queries to run")
    # ... so SELECT 1 waits its turn and runs when a slot frees.
    quick = threading.Thread(target=run, args=("quick", "SELECT 1"))
    quick.start()
    wait_until(lambda: server.status()["queued"] == 1, 30, "a query to queue")
    for t in long + [quick]:
        t.join(timeout=120)
        assert not t.is_alive(), "a query outlived its timeout"
    assert [results[f"long{i}"] for i in range(4)] == ["DEADLINE_EXCEEDED"] * 4, results
    assert results["quick"] == 1, results
    server.assert_alive()
