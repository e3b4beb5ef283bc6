"""Lookup-join options beyond test_lookup_join.py's: a dimension query held
past its `timeout`, Redis rows stored as JSON (`format: json`), and a Delta
dimension that is another layer's table (`delta: {layer: ...}`). Each is
checked against a plain-Python join of the rows the test wrote.

Needs: the shared broker from scripts/test, and PostgreSQL and Redis
binaries (Debian packages, installed by scripts/test).
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from decimal import Decimal

import pyarrow as pa

from conftest import Sent, Strata, create_topic, produce, unique, wait_until
from dimension_dbs import postgres, redis_server  # noqa: F401 (fixtures)
from layered import BASE_US, LayeredWarehouse, as_sent, disordered_deals, iso
from test_lookup_join import AGENTS, DIM_SCHEMAS, PARTITIONS, agent_rows, enriched, load_agents, lookups


def test_a_lookup_held_past_its_timeout_fails_as_the_policy_says_and_the_layer_goes_on(
        tmp_path, strata_bin, kafka, rng, postgres):
    """While the test holds a lock on the agents table, PostgreSQL queues
    Strata's lookups (no error, no answer). After `timeout: 1s` each lookup
    fails as a timeout, and `dead_letter` sets its rows aside with the
    reason while the lock is still held; once it is released, lookups
    answer again."""
    topic = unique("deals")
    create_topic(kafka, topic, PARTITIONS)
    load_agents(postgres)
    wh = LayeredWarehouse(tmp_path, kafka, topic, """
  - name: dwd_deals
    kind: dwd
    inputs: [ods_deals]
    lookup_failure: dead_letter
    sql: >
      SELECT d.deal_id, d.agent, a.agent_name, d._kafka_topic, d._kafka_partition, d._kafka_offset
      FROM ods_deals d
      LEFT JOIN agents FOR SYSTEM_TIME AS OF d.proc_time AS a ON d.agent = a.agent
""", extra_schemas=DIM_SCHEMAS, extra_top=f"""dimensions:
  - name: agents
    schema: agent
    key: agent
    postgres: {{url: "{postgres.url}", table: agents}}
    timeout: 1s
""")
    batches = [disordered_deals(300, rng, step_us=100_000, jitter_us=0, agents=AGENTS, first=300 * i)
               for i in range(3)]

    def dead() -> list[dict]:
        t = wh.table("dwd", "dwd_deals_dead_letter")
        return [] if t is None else t.to_pylist()

    def out() -> int:
        return len(enriched(wh)) + len(dead())

    strata = Strata(strata_bin, wh).start()
    produce(kafka, topic, as_sent(batches[0], PARTITIONS))
    wait_until(lambda: (strata.assert_alive(), len(enriched(wh)) >= 300)[1], 60, "the first deals")

    holder = subprocess.Popen(
        ["psql", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        holder.stdin.write("BEGIN;\nLOCK TABLE agents IN ACCESS EXCLUSIVE MODE;\n")
        holder.stdin.flush()

        def lock_held() -> bool:
            return postgres.sql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON l.relation = c.oid "
                                "WHERE c.relname = 'agents' AND l.mode = 'AccessExclusiveLock' "
                                "AND l.granted").strip() == "1"

        wait_until(lock_held, 20, "the test's lock on agents")
        produce(kafka, topic, as_sent(batches[1], PARTITIONS))
        wait_until(lambda: (strata.assert_alive(), out() >= 600)[1], 60, "the held deals to come out")
        # They came out while the query was still held: by the timeout.
        assert lock_held() and holder.poll() is None
        timeouts = lookups(wh)["agents"]["timeouts"]
        holder.stdin.write("COMMIT;\n")
        holder.stdin.close()
        assert holder.wait(timeout=20) == 0, holder.stderr.read()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()

    produce(kafka, topic, as_sent(batches[2], PARTITIONS))
    wait_until(lambda: (strata.assert_alive(), out() >= 900)[1], 60, "the deals after the lock")
    assert strata.stop() == 0, strata.log()[-3000:]

    got, letters = enriched(wh), dead()
    held = {d.deal_id for d in batches[1]}
    dead_ids = [json.loads(r["raw"])["deal_id"] for r in letters]
    assert sorted(dead_ids) == sorted(held), "exactly the deals read while the lookup was held"
    assert set(got) == {d.deal_id for b in (batches[0], batches[2]) for d in b}
    for r in letters:
        assert "took longer than 1s" in r["reason"] and "agents" in r["reason"], r
        assert r["topic"] == topic and r["offset"] >= 0, r
    agents = agent_rows()
    for d in batches[0] + batches[2]:
        assert got[d.deal_id]["agent_name"] == agents.get(d.agent, {}).get("agent_name"), d.deal_id
    assert timeouts >= 1, "the manifest counts the timeouts"


CITY_SCHEMA = """  city_info:
    fields:
      - {name: city, type: string, nullable: false}
      - {name: population, type: bigint}
      - {name: tier, type: int}
      - {name: area_km2, type: double}
      - {name: coastal, type: boolean}
      - {name: updated, type: timestamp}
      - {name: gdp, type: "decimal(18,2)"}
      - {name: nickname, type: string}
"""

# As stored in Redis: JSON numbers, booleans, strings and nulls; hangzhou is
# missing; shenzhen's object also holds its key and a field the schema lacks.
CITY_JSON = {
    "beijing": {"population": 21893095, "tier": 1, "area_km2": 16410.54, "coastal": False,
                "updated": "2026-01-02T03:04:05.250000Z", "gdp": 4161.05, "nickname": "Jing"},
    "shanghai": {"population": 24870895, "tier": 1, "area_km2": 6340.5, "coastal": True,
                 "updated": "2025-12-31T23:59:59Z", "gdp": "4721.88", "nickname": None},
    "shenzhen": {"city": "shenzhen", "population": 17494398, "tier": 1, "area_km2": 1997.47, "coastal": True,
                 "updated": "2026-06-01T00:00:00Z", "gdp": 3460.64, "nickname": "Peng", "mayor": "unknown"},
}


def city_reference(city: str) -> dict:
    """The row a deal of `city` must get, typed as the schema declares."""
    v = CITY_JSON.get(city)
    if v is None:
        return {k: None for k in ("population", "tier", "area_km2", "coastal", "updated", "gdp", "nickname")}
    return {
        "population": v["population"], "tier": v["tier"], "area_km2": v["area_km2"], "coastal": v["coastal"],
        "updated": datetime.fromisoformat(v["updated"].replace("Z", "+00:00")),
        "gdp": Decimal(str(v["gdp"])).quantize(Decimal("0.01")), "nickname": v["nickname"],
    }


def test_redis_json_rows_are_joined_with_their_declared_types(tmp_path, strata_bin, kafka, rng, redis_server):
    topic = unique("deals")
    create_topic(kafka, topic, PARTITIONS)
    redis_server.load([["SET", f"city:{c}", json.dumps(v)] for c, v in CITY_JSON.items()])
    wh = LayeredWarehouse(tmp_path, kafka, topic, """
  - name: dwd_deals
    kind: dwd
    inputs: [ods_deals]
    sql: >
      SELECT d.deal_id, d.city, c.population, c.tier, c.area_km2, c.coastal, c.updated, c.gdp, c.nickname
      FROM ods_deals d
      LEFT JOIN cities FOR SYSTEM_TIME AS OF d.proc_time AS c ON d.city = c.city
""", extra_schemas=CITY_SCHEMA, extra_top=f"""dimensions:
  - name: cities
    schema: city_info
    key: city
    redis: {{url: "{redis_server.url}", key_prefix: "city:", format: json}}
    cache: {{max_rows: 100, expire_after_write: 10m, cache_missing_keys: true}}
""")
    deals = disordered_deals(400, rng, step_us=100_000, jitter_us=0, agents=AGENTS)
    produce(kafka, topic, as_sent(deals, PARTITIONS))
    strata = Strata(strata_bin, wh).start()
    wait_until(lambda: (strata.assert_alive(), len(enriched(wh)) >= len(deals))[1], 60, "deals enriched")
    assert strata.stop() == 0, strata.log()[-3000:]

    t = wh.table("dwd", "dwd_deals")
    types = {f.name: f.type for f in t.schema}
    assert types["population"] == pa.int64() and types["tier"] == pa.int32(), types
    assert types["area_km2"] == pa.float64() and types["coastal"] == pa.bool_(), types
    assert types["updated"] == pa.timestamp("us", "UTC") and types["gdp"] == pa.decimal128(18, 2), types
    assert types["nickname"] == pa.string(), types
    got = enriched(wh)
    assert set(got) == {d.deal_id for d in deals}
    for d in deals:
        row = got[d.deal_id]
        assert {k: row[k] for k in city_reference(d.city)} == city_reference(d.city), (d.deal_id, d.city, row)
    cities = {d.city for d in deals}
    assert "hangzhou" in cities and cities & set(CITY_JSON), "both found and missing keys are looked up"


AGENT_EVENT_SCHEMA = """  agent_event:
    event_time: updated_at
    fields:
      - {name: agent, type: string, nullable: false}
      - {name: agent_name, type: string}
      - {name: store_id, type: bigint}
      - {name: since, type: timestamp}
      - {name: updated_at, type: timestamp}
"""


def test_a_delta_dimension_can_be_another_layers_table(tmp_path, strata_bin, kafka, rng):
    """`delta: {layer: ods_agents}`: agents arrive on a topic, land in their
    ODS table, and deals are enriched from that table in the same run."""
    topic, agents_topic = unique("deals"), unique("agents")
    create_topic(kafka, topic, PARTITIONS)
    create_topic(kafka, agents_topic, 1)
    wh = LayeredWarehouse(tmp_path, kafka, topic, """
  - name: dwd_deals
    kind: dwd
    inputs: [ods_deals]
    sql: >
      SELECT d.deal_id, d.agent, a.agent_name, a.store_id, a.since
      FROM ods_deals d
      LEFT JOIN agents FOR SYSTEM_TIME AS OF d.proc_time AS a ON d.agent = a.agent
""", extra_schemas=DIM_SCHEMAS + AGENT_EVENT_SCHEMA, extra_top="""dimensions:
  - name: agents
    schema: agent
    key: agent
    delta: {layer: ods_agents, reload_interval: 1s}
""", ods_extra=f"""  - name: ods_agents
    kind: ods
    source: {{topic: {agents_topic}, schema: agent_event, start: earliest}}
""")
    agents = agent_rows()
    produce(kafka, agents_topic, [Sent(key=a.encode(), partition=0, value=json.dumps({
        "agent": a, "agent_name": r["agent_name"], "store_id": r["store_id"], "since": iso(r["since_us"]),
        "updated_at": iso(BASE_US)}).encode()) for a, r in agents.items()])
    strata = Strata(strata_bin, wh).start()
    wait_until(lambda: (strata.assert_alive(), wh.count("ods", "ods_agents") >= len(agents))[1], 60,
               "the agents' table")
    deals = disordered_deals(600, rng, step_us=100_000, jitter_us=0, agents=AGENTS)
    produce(kafka, topic, as_sent(deals, PARTITIONS))
    wait_until(lambda: (strata.assert_alive(), len(enriched(wh)) >= len(deals))[1], 60, "deals enriched")
    assert strata.stop() == 0, strata.log()[-3000:]

    got = enriched(wh)
    assert set(got) == {d.deal_id for d in deals}
    for d in deals:
        a = agents.get(d.agent)
        g = got[d.deal_id]
        since = None if g["since"] is None else int(g["since"].timestamp() * 1_000_000)
        want = (None, None, None) if a is None else (a["agent_name"], a["store_id"], a["since_us"])
        assert (g["agent_name"], g["store_id"], since) == want, d.deal_id
    assert any(d.agent not in agents for d in deals) and any(d.agent in agents for d in deals)
    assert lookups(wh)["agents"]["reloads"] >= 1
