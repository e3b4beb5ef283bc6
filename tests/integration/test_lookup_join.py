"""Lookup joins: deals enriched with agents (PostgreSQL), stores (Redis) and
regions (a Delta table), checked against a plain-Python join of the same
rows; then each failure policy with its dimension server stopped mid-run.

Needs: the shared broker from scripts/test, and PostgreSQL and Redis
binaries (Debian packages, installed by scripts/test).
"""

from __future__ import annotations

import json
import pathlib
import time

import pyarrow as pa
from deltalake import write_deltalake

from conftest import Strata, create_topic, produce, unique, wait_until
from dimension_dbs import Postgres, Redis, postgres, redis_server  # noqa: F401 (fixtures)
from layered import BASE_US, LayeredWarehouse, as_sent, disordered_deals

PARTITIONS = 3
AGENTS = 40  # a000 .. a039; the dimension lacks a039
STORES = 8  # 0 .. 7; Redis lacks store 7
REGIONS = ["north", "south", "east"]  # stores' regions; the Delta table lacks "east"

DIM_SCHEMAS = """  agent:
    fields:
      - {name: agent, type: string, nullable: false}
      - {name: agent_name, type: string}
      - {name: store_id, type: bigint}
      - {name: since, type: timestamp}
  store:
    fields:
      - {name: store_id, type: bigint}
      - {name: store_name, type: string}
      - {name: region, type: string}
  region:
    fields:
      - {name: region, type: string}
      - {name: manager, type: string}
"""


def agent_rows() -> dict[str, dict]:
    return {f"a{i:03d}": {"agent_name": f"Agent {i}", "store_id": i % STORES, "since_us": BASE_US - i * 86_400_000_000}
            for i in range(AGENTS - 1)}


def store_rows() -> dict[int, dict]:
    return {s: {"store_name": f"Store {s}", "region": REGIONS[s % 3]} for s in range(STORES - 1)}


def region_rows() -> dict[str, str]:
    return {"north": "Zhang", "south": "Li"}


def load_agents(pg: Postgres) -> None:
    values = ",\n".join(
        f"('{a}', '{r['agent_name']}', {r['store_id']}, to_timestamp({r['since_us']} / 1000000.0))"
        for a, r in agent_rows().items())
    pg.sql(f"""CREATE TABLE IF NOT EXISTS agents (agent text PRIMARY KEY, agent_name text, store_id bigint,
                                                   since timestamptz, unused text);
               INSERT INTO agents (agent, agent_name, store_id, since) VALUES {values};""")


def load_stores(redis: Redis) -> None:
    redis.load([["HSET", f"store:{s}", "store_name", r["store_name"], "region", r["region"]]
                for s, r in store_rows().items()])


def write_regions(dir: pathlib.Path, rows: dict[str, str], mode: str = "overwrite") -> None:
    write_deltalake(str(dir / "data" / "dims" / "regions"),
                    pa.table({"region": list(rows), "manager": list(rows.values())}), mode=mode)


def dimensions_and_topic(tmp_path, kafka, pg: Postgres, redis: Redis) -> str:
    """Loads the three dimensions; returns a new deals topic."""
    topic = unique("deals")
    create_topic(kafka, topic, PARTITIONS)
    load_agents(pg)
    load_stores(redis)
    write_regions(tmp_path, region_rows())
    return topic


def warehouse(tmp_path, kafka, topic, pg_url, redis_url, policy: str, cache: bool,
              agents_only: bool = False) -> LayeredWarehouse:
    cache_yaml = "    cache: {max_rows: 1000, expire_after_write: 10m, cache_missing_keys: true}\n" if cache else ""
    dims = f"""dimensions:
  - name: agents
    schema: agent
    key: agent
    postgres: {{url: "{pg_url}", table: agents}}
    timeout: 2s
{cache_yaml}  - name: stores
    schema: store
    key: store_id
    redis: {{url: "{redis_url}", key_prefix: "store:", format: hash}}
    timeout: 2s
{cache_yaml}  - name: regions
    schema: region
    key: region
    delta: {{path: dims/regions, reload_interval: 1s}}
"""
    if agents_only:
        # Keeping the Kafka position lets a dead-lettered row name it.
        sql = """SELECT d.deal_id, d.agent, a.agent_name, d._kafka_topic, d._kafka_partition, d._kafka_offset
      FROM ods_deals d
      LEFT JOIN agents FOR SYSTEM_TIME AS OF d.proc_time AS a ON d.agent = a.agent"""
    else:
        sql = """SELECT d.deal_id, d.amount, d.agent, a.agent_name, a.store_id, a.since,
             s.store_name, s.region, r.manager
      FROM ods_deals d
      LEFT JOIN agents FOR SYSTEM_TIME AS OF d.proc_time AS a ON d.agent = a.agent
      LEFT JOIN stores FOR SYSTEM_TIME AS OF d.proc_time AS s ON a.store_id = s.store_id
      LEFT JOIN regions FOR SYSTEM_TIME AS OF d.proc_time AS r ON s.region = r.region"""
    return LayeredWarehouse(tmp_path, kafka, topic, f"""
  - name: dwd_deals
    kind: dwd
    inputs: [ods_deals]
    lookup_failure: {policy}
    sql: >
      {sql}
""", extra_schemas=DIM_SCHEMAS, extra_top=dims)


def reference(deal_ids_agents: list[tuple[str, str]], regions: dict[str, str]) -> dict[str, dict]:
    agents, stores = agent_rows(), store_rows()
    out = {}
    for deal_id, agent in deal_ids_agents:
        a = agents.get(agent)
        s = stores.get(a["store_id"]) if a else None
        out[deal_id] = {
            "agent_name": a["agent_name"] if a else None,
            "store_id": a["store_id"] if a else None,
            "since_us": a["since_us"] if a else None,
            "store_name": s["store_name"] if s else None,
            "region": s["region"] if s else None,
            "manager": regions.get(s["region"]) if s else None,
        }
    return out


def enriched(wh: LayeredWarehouse) -> dict[str, dict]:
    t = wh.table("dwd", "dwd_deals")
    if t is None:
        return {}
    rows = t.to_pylist()
    ids = [r["deal_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a deal was enriched twice"
    return {r["deal_id"]: r for r in rows}


def lookups(wh: LayeredWarehouse) -> dict[str, dict]:
    newest = max(wh.checkpoint_dir.glob("*.json"), key=lambda p: int(p.name.split(".")[0]))
    manifest = json.loads(newest.read_text())
    layer = next(layer for layer in manifest["layers"] if layer["name"] == "dwd_deals")
    return {s["dimension"]: s for s in layer["lookups"]}


def test_enrichment_equals_a_reference_join_and_the_cache_is_counted(tmp_path, strata_bin, kafka, rng,
                                                                     postgres, redis_server):
    topic = dimensions_and_topic(tmp_path, kafka, postgres, redis_server)
    wh = warehouse(tmp_path, kafka, topic, postgres.url, redis_server.url, "retry", cache=True)
    deals = disordered_deals(3_000, rng, step_us=100_000, jitter_us=1_000_000, agents=AGENTS)
    strata = Strata(strata_bin, wh).start()
    # Two rounds: the second finds every agent and store in the cache.
    for end in (1_500, 3_000):
        produce(kafka, topic, as_sent(deals[end - 1_500:end], PARTITIONS))
        wait_until(lambda: (strata.assert_alive(), len(enriched(wh)) >= end)[1], 90, "deals enriched")
    stats = lookups(wh)
    assert strata.stop() == 0, strata.log()[-3000:]

    got = enriched(wh)
    want = reference([(d.deal_id, d.agent) for d in deals], region_rows())
    assert set(got) == set(want)
    for deal_id, w in want.items():
        g = got[deal_id]
        since = g["since"]
        assert {**{k: g[k] for k in ("agent_name", "store_id", "store_name", "region", "manager")},
                "since_us": None if since is None else int(since.timestamp() * 1_000_000)} == w, deal_id
    # Misses are real: an agent the table lacks, a store Redis lacks, a
    # region the Delta table lacks.
    assert any(w["agent_name"] is None for w in want.values())
    assert any(w["store_id"] is not None and w["store_name"] is None for w in want.values())
    assert any(w["region"] is not None and w["manager"] is None for w in want.values())

    # One query per batch, for its distinct keys; the cache answers the rest.
    agents = stats["agents"]
    assert agents["keys"] == agents["hits"] + agents["misses"]
    assert agents["misses"] <= AGENTS, "with a cache, each agent is fetched once (missing ones included)"
    assert agents["queries"] >= 1 and agents["queries"] <= agents["misses"]
    assert agents["hits"] >= agents["keys"] - AGENTS and agents["hits"] > 0, agents
    assert abs(agents["hit_rate"] - agents["hits"] / agents["keys"]) < 1e-9
    assert agents["failures"] == 0
    assert stats["stores"]["misses"] <= STORES
    assert stats["regions"]["reloads"] >= 1 and stats["regions"]["hit_rate"] == 1.0


def test_a_delta_dimension_is_reloaded_when_it_gets_a_new_version(tmp_path, strata_bin, kafka, rng,
                                                                 postgres, redis_server):
    topic = dimensions_and_topic(tmp_path, kafka, postgres, redis_server)
    wh = warehouse(tmp_path, kafka, topic, postgres.url, redis_server.url, "retry", cache=True)
    first = disordered_deals(600, rng, step_us=100_000, jitter_us=0, agents=AGENTS)
    strata = Strata(strata_bin, wh).start()
    produce(kafka, topic, as_sent(first, PARTITIONS))
    wait_until(lambda: (strata.assert_alive(), len(enriched(wh)) >= len(first))[1], 60, "the first deals")
    write_regions(tmp_path, {"east": "Wang"}, mode="append")
    # Past the reload interval: the next lookup checks for a new version first.
    time.sleep(1.5)
    second = disordered_deals(600, rng, step_us=100_000, jitter_us=0, agents=AGENTS, first=600)
    produce(kafka, topic, as_sent(second, PARTITIONS))
    wait_until(lambda: (strata.assert_alive(), len(enriched(wh)) >= 1_200)[1], 60, "the second deals")
    assert lookups(wh)["regions"]["reloads"] == 2
    assert strata.stop() == 0, strata.log()[-3000:]
    got = enriched(wh)
    before = reference([(d.deal_id, d.agent) for d in first], region_rows())
    after = reference([(d.deal_id, d.agent) for d in second], {**region_rows(), "east": "Wang"})
    for deal_id, w in {**before, **after}.items():
        assert got[deal_id]["manager"] == w["manager"], deal_id
    assert any(w["manager"] == "Wang" for w in after.values())


def produced_while(kafka, topic, deals, wh, done, what):
    produce(kafka, topic, as_sent(deals, PARTITIONS))
    wait_until(done, 60, what)


def test_retry_waits_for_postgres_and_loses_nothing(tmp_path, strata_bin, kafka, rng, postgres, redis_server):
    """No cache: every batch asks PostgreSQL. While it is down the layer
    retries (nothing is written); once it is back every deal is enriched,
    once."""
    topic = dimensions_and_topic(tmp_path, kafka, postgres, redis_server)
    wh = warehouse(tmp_path, kafka, topic, postgres.url, redis_server.url, "retry", cache=False, agents_only=True)
    first = disordered_deals(500, rng, step_us=100_000, jitter_us=0, agents=AGENTS)
    second = disordered_deals(500, rng, step_us=100_000, jitter_us=0, agents=AGENTS, first=500)
    strata = Strata(strata_bin, wh).start()
    produced_while(kafka, topic, first, wh, lambda: len(enriched(wh)) >= 500, "the first deals")
    postgres.stop()
    produce(kafka, topic, as_sent(second, PARTITIONS))
    wait_until(lambda: "lookup failed; retrying" in strata.log(), 30, "the layer to retry")
    assert len(enriched(wh)) == 500, "nothing is written while the dimension is down"
    postgres.start()
    wait_until(lambda: (strata.assert_alive(), len(enriched(wh)) >= 1_000)[1], 60, "recovery")
    stats = lookups(wh)
    assert strata.stop() == 0, strata.log()[-3000:]
    got = enriched(wh)
    want = reference([(d.deal_id, d.agent) for d in first + second], region_rows())
    assert {k: v["agent_name"] for k, v in got.items()} == {k: v["agent_name"] for k, v in want.items()}
    assert stats["agents"]["failures"] >= 1
    assert wh.count("dwd", "dwd_deals_dead_letter") == 0


def test_nulls_policy_emits_rows_while_redis_is_down(tmp_path, strata_bin, kafka, rng, postgres, redis_server):
    topic = dimensions_and_topic(tmp_path, kafka, postgres, redis_server)
    wh = warehouse(tmp_path, kafka, topic, postgres.url, redis_server.url, "nulls", cache=False)
    batches = [disordered_deals(400, rng, step_us=100_000, jitter_us=0, agents=AGENTS, first=400 * i)
               for i in range(3)]
    strata = Strata(strata_bin, wh).start()
    produced_while(kafka, topic, batches[0], wh, lambda: len(enriched(wh)) >= 400, "the first deals")
    redis_server.stop()
    produced_while(kafka, topic, batches[1], wh, lambda: len(enriched(wh)) >= 800, "deals during the outage")
    redis_server.start()
    load_stores(redis_server)
    produced_while(kafka, topic, batches[2], wh, lambda: len(enriched(wh)) >= 1_200, "deals after it")
    assert strata.stop() == 0, strata.log()[-3000:]
    got = enriched(wh)
    assert len(got) == 1_200
    for i, batch in enumerate(batches):
        want = reference([(d.deal_id, d.agent) for d in batch], region_rows())
        for deal_id, w in want.items():
            g = got[deal_id]
            assert g["agent_name"] == w["agent_name"], deal_id  # PostgreSQL stayed up
            if i == 1 and w["store_id"] is not None:
                # The store lookup failed: its columns are null, its key kept.
                assert (g["store_name"], g["region"], g["manager"]) == (None, None, None), deal_id
            else:
                assert (g["store_name"], g["manager"]) == (w["store_name"], w["manager"]), deal_id


def test_dead_letter_policy_sets_rows_aside_with_the_reason(tmp_path, strata_bin, kafka, rng, postgres,
                                                            redis_server):
    topic = dimensions_and_topic(tmp_path, kafka, postgres, redis_server)
    wh = warehouse(tmp_path, kafka, topic, postgres.url, redis_server.url, "dead_letter", cache=False,
                   agents_only=True)
    batches = [disordered_deals(400, rng, step_us=100_000, jitter_us=0, agents=AGENTS, first=400 * i)
               for i in range(3)]

    def dead():
        t = wh.table("dwd", "dwd_deals_dead_letter")
        return [] if t is None else t.to_pylist()

    strata = Strata(strata_bin, wh).start()
    produced_while(kafka, topic, batches[0], wh, lambda: len(enriched(wh)) >= 400, "the first deals")
    postgres.stop()
    produced_while(kafka, topic, batches[1], wh, lambda: len(enriched(wh)) + len(dead()) >= 800,
                   "deals during the outage")
    postgres.start()
    produced_while(kafka, topic, batches[2], wh, lambda: len(enriched(wh)) + len(dead()) >= 1_200,
                   "deals after it")
    assert strata.stop() == 0, strata.log()[-3000:]
    got, letters = enriched(wh), dead()
    dead_ids = [json.loads(r["raw"])["deal_id"] for r in letters]
    assert len(dead_ids) == len(set(dead_ids))
    assert set(got).isdisjoint(dead_ids)
    assert set(got) | set(dead_ids) == {d.deal_id for b in batches for d in b}, "nothing lost"
    assert set(dead_ids) <= {d.deal_id for d in batches[1]}, "only rows read during the outage"
    assert len(dead_ids) > 0
    for r in letters:
        assert "agents" in r["reason"] and r["layer"] == "dwd_deals", r
        assert r["topic"] == topic and r["offset"] >= 0, r
    want = reference([(d.deal_id, d.agent) for b in batches for d in b], region_rows())
    for deal_id, g in got.items():
        assert g["agent_name"] == want[deal_id]["agent_name"], deal_id


def test_a_dimension_that_cannot_answer_fails_the_layer_with_advice(tmp_path, strata_bin, kafka, rng, postgres,
                                                                    redis_server):
    """`since` is text in PostgreSQL but a timestamp in the schema: asking
    again cannot help, so `retry` stops the layer and says what to do
    instead of waiting for ever."""
    topic = unique("deals")
    create_topic(kafka, topic, PARTITIONS)
    postgres.sql("CREATE TABLE agents (agent text PRIMARY KEY, agent_name text, store_id bigint, since text);"
                 "INSERT INTO agents VALUES ('a001', 'Ann', 1, 'last spring');")
    wh = warehouse(tmp_path, kafka, topic, postgres.url, redis_server.url, "retry", cache=False)
    produce(kafka, topic, as_sent(disordered_deals(50, rng, step_us=100_000, jitter_us=0, agents=AGENTS), PARTITIONS))
    strata = Strata(strata_bin, wh).start()
    assert strata.wait(60) != 0
    log = strata.log()
    assert "lookup in dimension `agents` failed" in log and "lookup_failure: nulls" in log, log[-3000:]
    assert wh.count("dwd", "dwd_deals") == 0


def test_nulls_policy_keeps_what_the_cache_answers(tmp_path, strata_bin, kafka, rng, postgres, redis_server):
    """Stores 0-3 are looked up (and cached) before Redis stops; during the
    outage their rows stay enriched from the cache, and only stores the
    cache lacks come out null."""
    topic = dimensions_and_topic(tmp_path, kafka, postgres, redis_server)
    wh = warehouse(tmp_path, kafka, topic, postgres.url, redis_server.url, "nulls", cache=True)
    low = [d for d in disordered_deals(800, rng, step_us=100_000, jitter_us=0, agents=AGENTS)
           if agent_rows().get(d.agent, {}).get("store_id", 9) < 4]
    later = disordered_deals(400, rng, step_us=100_000, jitter_us=0, agents=AGENTS, first=1_000)
    strata = Strata(strata_bin, wh).start()
    produced_while(kafka, topic, low, wh, lambda: len(enriched(wh)) >= len(low), "deals of stores 0-3")
    redis_server.stop()
    produced_while(kafka, topic, later, wh, lambda: len(enriched(wh)) >= len(low) + len(later),
                   "deals during the outage")
    assert strata.stop() == 0, strata.log()[-3000:]
    got = enriched(wh)
    want = reference([(d.deal_id, d.agent) for d in later], region_rows())
    cached = 0
    for deal_id, w in want.items():
        g = got[deal_id]
        if w["store_id"] is not None and w["store_id"] < 4:
            assert (g["store_name"], g["manager"]) == (w["store_name"], w["manager"]), deal_id
            cached += 1
        else:
            assert g["store_name"] is None, deal_id
    assert cached > 0 and cached < len(want)
