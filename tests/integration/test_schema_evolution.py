"""Schema evolution: a topic's records gain a field, and the schema with
them; restarted with the new file, the ODS table gains the column in place
(old rows read it as null, new rows have the value), nothing is lost or
doubled, and a Flight SQL client of a server that kept running sees the
new column. A widened type (decimal(18,2) -> decimal(20,2)) rewrites the
table on restart, every row kept in the wider type, exactly once. A change
that is not a widening is refused, untouched.

Needs: the shared broker (memory storage) from scripts/test.
"""

import json
import os
import socket
import subprocess

import adbc_driver_flightsql.dbapi as flight_sql
from deltalake import DeltaTable

from conftest import (
    _STARTED, Sent, Strata, Warehouse, check_exactly_once, create_topic, free_port, make_records, produce, unique,
    wait_until,
)

PARTITIONS = 2
EVENT_TIME_FIELD = "      - {name: event_time, type: timestamp}\n"


def with_field(wh: Warehouse, field: str) -> None:
    """Rewrites the file with `field` added to the schema's fields."""
    wh.write()
    text = wh.path.read_text()
    assert EVENT_TIME_FIELD in text
    wh.path.write_text(text.replace(EVENT_TIME_FIELD, EVENT_TIME_FIELD + field))


def with_agents(records: list[Sent]) -> list[Sent]:
    """The same deals, each naming its agent (a field the schema lacked)."""
    out = []
    for i, s in enumerate(records):
        value = json.loads(s.value)
        value["agent"] = f"agent-{i % 7}"
        out.append(Sent(key=s.key, value=json.dumps(value).encode(), partition=s.partition))
    return out


def serve(strata_bin: str, wh: Warehouse) -> subprocess.Popen:
    proc = subprocess.Popen(
        [strata_bin, "--log-format", "json", "serve", str(wh.path)],
        stdout=open(wh.dir / "serve.log", "wb"), stderr=subprocess.STDOUT, env=os.environ.copy(),
    )
    _STARTED.append(proc)

    def listening():
        assert proc.poll() is None, (wh.dir / "serve.log").read_text()
        try:
            socket.create_connection(("127.0.0.1", wh.serve_port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_until(listening, 30, "the Flight SQL server to listen")
    return proc


def test_a_new_nullable_field_is_merged_into_the_table(tmp_path, strata_bin, kafka, rng):
    topic = unique("deals")
    create_topic(kafka, topic, partitions=PARTITIONS)
    before = produce(kafka, topic, make_records(1_000, PARTITIONS, malformed_every=0, rng=rng))
    wh = Warehouse(tmp_path, kafka, topic, serve_port=free_port())
    strata = Strata(strata_bin, wh, "--no-serve").start()
    wait_until(lambda: (strata.assert_alive(), wh.row_count() >= len(before))[1], 120, "the first rows")
    assert strata.stop() == 0, strata.log()[-3000:]
    server = serve(strata_bin, wh)
    try:
        conn = flight_sql.connect(f"grpc://127.0.0.1:{wh.serve_port}", autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM ods.ods_deals")
            columns = cur.fetch_arrow_table().column_names
        assert "agent" not in columns and "deal_id" in columns

        # The records gain `agent`, the schema with them.
        after = produce(kafka, topic, with_agents(make_records(1_000, PARTITIONS, 0, rng, first=1_000)))
        with_field(wh, "      - {name: agent, type: string}\n")
        strata = Strata(strata_bin, wh, "--no-serve").start()
        sent = before + after
        wait_until(lambda: (strata.assert_alive(), wh.row_count() >= len(sent))[1], 120, "every row")
        assert strata.stop() == 0, strata.log()[-3000:]
        check_exactly_once(wh, sent)

        rows = wh.rows(columns=["deal_id", "agent"]).to_pylist()
        want = {json.loads(s.value)["deal_id"]: json.loads(s.value).get("agent") for s in sent}
        assert {r["deal_id"]: r["agent"] for r in rows} == want
        assert sum(1 for r in rows if r["agent"] is None) == len(before)

        # The same client, the same server: the new column is there.
        def agents_served():
            with conn.cursor() as cur:
                cur.execute("SELECT deal_id, agent FROM ods.ods_deals")
                return cur.fetch_arrow_table().to_pylist()
        assert {r["deal_id"]: r["agent"] for r in agents_served()} == want
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM ods.ods_deals WHERE agent IS NOT NULL")
            assert cur.fetch_arrow_table().column("n")[0].as_py() == len(after)
        conn.close()
    finally:
        server.terminate()
        server.wait(30)


def with_big_amounts(records: list[Sent]) -> list[Sent]:
    """The same deals, every third with an amount of 17 integer digits,
    which decimal(18,2) cannot hold and decimal(20,2) can."""
    out = []
    for i, s in enumerate(records):
        value = json.loads(s.value)
        if i % 3 == 0:
            value["amount"] = f"{12_345_678_901_234_567 + i}.25"
        out.append(Sent(key=s.key, value=json.dumps(value).encode(), partition=s.partition))
    return out


def first_run(tmp_path, strata_bin: str, kafka: str, rng, n: int) -> tuple[Warehouse, list[Sent], int]:
    """`n` deals landed by a run that then stops: the warehouse, what was
    sent, and the table's version."""
    topic = unique("deals")
    create_topic(kafka, topic, partitions=PARTITIONS)
    sent = produce(kafka, topic, make_records(n, PARTITIONS, malformed_every=0, rng=rng))
    wh = Warehouse(tmp_path, kafka, topic)
    strata = Strata(strata_bin, wh, "--no-serve").start()
    wait_until(lambda: (strata.assert_alive(), wh.row_count() >= len(sent))[1], 120, "the first rows")
    assert strata.stop() == 0, strata.log()[-3000:]
    return wh, sent, DeltaTable(str(wh.table_path)).version()


def test_a_widened_decimal_rewrites_the_table_keeping_every_row(tmp_path, strata_bin, kafka, rng):
    wh, before, old_version = first_run(tmp_path, strata_bin, kafka, rng, 1_000)
    topic = wh.topic
    wh.write()
    wh.path.write_text(wh.path.read_text().replace('type: "decimal(18,2)"', 'type: "decimal(20,2)"'))
    planned = subprocess.run([strata_bin, "plan", str(wh.path)], capture_output=True, text=True, timeout=120)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "widens `amount` decimal(18,2) -> decimal(20,2)" in planned.stdout, planned.stdout
    assert DeltaTable(str(wh.table_path)).version() == old_version, "plan changed the table"

    # Deals with amounts only the wider type holds, before and while it runs.
    after = produce(kafka, topic, with_big_amounts(make_records(500, PARTITIONS, 0, rng, first=1_000)))
    strata = Strata(strata_bin, wh, "--no-serve").start()
    wait_until(lambda: (strata.assert_alive(), wh.row_count() >= len(before) + len(after))[1], 120,
               "the rows after the rewrite")
    more = produce(kafka, topic, with_big_amounts(make_records(500, PARTITIONS, 0, rng, first=1_500)))
    sent = before + after + more
    wait_until(lambda: (strata.assert_alive(), wh.row_count() >= len(sent))[1], 120, "every row")
    assert strata.stop() == 0, strata.log()[-3000:]
    assert "rewrote the table in the wider types" in strata.log()

    table = DeltaTable(str(wh.table_path))
    amount = table.schema().to_arrow().field("amount").type
    assert "Decimal128(20, 2)" in str(amount), amount
    check_exactly_once(wh, sent)
    rewrites = [h for h in table.history() if "strata.widen" in h]
    assert len(rewrites) == 1, table.history()
    assert rewrites[0]["strata.widen"]["rows"] == len(before)
    assert rewrites[0]["strata.widen"]["from_version"] == old_version


def test_a_type_change_is_refused_and_the_table_untouched(tmp_path, strata_bin, kafka, rng):
    wh, sent, version = first_run(tmp_path, strata_bin, kafka, rng, 300)

    wh.write()
    wh.path.write_text(wh.path.read_text().replace("{name: city, type: string}", "{name: city, type: int}"))
    strata = Strata(strata_bin, wh, "--no-serve").start()
    assert strata.wait(60) == 2, strata.log()[-3000:]
    assert "column `city` is string in the table but the layer now writes integer" in strata.log()
    assert DeltaTable(str(wh.table_path)).version() == version
    check_exactly_once(wh, sent)
