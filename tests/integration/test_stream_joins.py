"""Joins of two streams (deals and agents' showings), each checked against a
plain-Python join of the same records across SIGKILLs: window joins (inner,
left, right and full) and an interval join.

Needs: the shared broker (memory storage) from scripts/test.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass

from conftest import Sent, Strata, create_topic, produce, produce_in_background, unique, wait_until
from layered import MINUTE, SECOND, LayeredWarehouse, as_sent, disordered_deals, iso, micros, sentinels

PARTITIONS = 3
AGENTS = 30

SHOWING_SCHEMA = """  showing:
    event_time: event_time
    fields:
      - {name: showing_id, type: string, nullable: false}
      - {name: agent, type: string}
      - {name: event_time, type: timestamp}
"""

ODS_SHOWINGS = """
  - name: ods_showings
    kind: ods
    source: {{topic: {topic}, schema: showing, start: earliest}}
    watermark: {{delay: 10s, idle_timeout: 60s}}
"""

WINDOW_JOINS = """
  - name: dwd_deal_showings
    kind: dwd
    inputs: [ods_deals, ods_showings]
    sql: >
      SELECT d.window_start, d.window_end, d.agent, d.deal_id, s.showing_id
      FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '1' MINUTE)) d
      JOIN TABLE(TUMBLE(TABLE ods_showings, DESCRIPTOR(event_time), INTERVAL '1' MINUTE)) s
      ON d.window_start = s.window_start AND d.window_end = s.window_end AND d.agent = s.agent
  - name: dwd_deals_left
    kind: dwd
    inputs: [ods_deals, ods_showings]
    sql: >
      SELECT d.window_start, d.window_end, d.agent, d.deal_id, s.showing_id
      FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '1' MINUTE)) d
      LEFT JOIN TABLE(TUMBLE(TABLE ods_showings, DESCRIPTOR(event_time), INTERVAL '1' MINUTE)) s
      ON d.window_start = s.window_start AND d.window_end = s.window_end AND d.agent = s.agent
"""

# Deals' agents a000-a029, showings' a020-a049 (see `showings_apart`): both
# sides have many rows the other lacks.
OUTER_WINDOW_JOINS = """
  - name: dwd_showings_right
    kind: dwd
    inputs: [ods_deals, ods_showings]
    sql: >
      SELECT s.window_start, s.window_end, s.agent, d.deal_id, s.showing_id
      FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '1' MINUTE)) d
      RIGHT JOIN TABLE(TUMBLE(TABLE ods_showings, DESCRIPTOR(event_time), INTERVAL '1' MINUTE)) s
      ON d.window_start = s.window_start AND d.window_end = s.window_end AND d.agent = s.agent
  - name: dwd_deals_full
    kind: dwd
    inputs: [ods_deals, ods_showings]
    sql: >
      SELECT COALESCE(d.window_start, s.window_start) AS window_start,
             COALESCE(d.window_end, s.window_end) AS window_end,
             COALESCE(d.agent, s.agent) AS agent, d.deal_id, s.showing_id
      FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '1' MINUTE)) d
      FULL JOIN TABLE(TUMBLE(TABLE ods_showings, DESCRIPTOR(event_time), INTERVAL '1' MINUTE)) s
      ON d.window_start = s.window_start AND d.window_end = s.window_end AND d.agent = s.agent
"""

INTERVAL_JOIN = """
  - name: dwd_deal_visits
    kind: dwd
    inputs: [ods_deals, ods_showings]
    sql: >
      SELECT d.deal_id, s.showing_id, d.agent, d.event_time, s.event_time AS shown_at
      FROM ods_deals d JOIN ods_showings s
      ON d.agent = s.agent
      AND s.event_time BETWEEN d.event_time - INTERVAL '2' MINUTE AND d.event_time + INTERVAL '1' MINUTE
"""


@dataclass
class Showing:
    showing_id: str
    agent: str
    ts: int

    def to_json(self) -> bytes:
        return json.dumps({"showing_id": self.showing_id, "agent": self.agent, "event_time": iso(self.ts)}).encode()


def showings_like(deals, rng) -> list[Showing]:
    return [Showing(f"s{i:07d}", f"a{rng.randrange(AGENTS):03d}", d.ts + rng.randint(-3 * SECOND, 3 * SECOND))
            for i, d in enumerate(deals)]


def showings_apart(deals, rng) -> list[Showing]:
    """One showing per deal, near its time, by agents a020-a049: agents
    a000-a019 have deals only, a030-a049 showings only."""
    return [Showing(f"s{i:07d}", f"a{rng.randrange(20, 50):03d}", d.ts + rng.randint(-3 * SECOND, 3 * SECOND))
            for i, d in enumerate(deals)]


def run_killed(tmp_path, strata_bin, kafka, rng, layers: str, tables: list[tuple[str, int]],
               showings_of=showings_like):
    """Produces deals and showings (`showings_of(deals, rng)`) while strata
    is SIGKILLed at random moments, then runs it to the end; returns deals,
    showings and the warehouse."""
    deals_topic, showings_topic = unique("deals"), unique("showings")
    create_topic(kafka, deals_topic, PARTITIONS)
    create_topic(kafka, showings_topic, PARTITIONS)
    deals = disordered_deals(1_500, rng, step_us=150_000, jitter_us=5 * SECOND, agents=AGENTS)
    showings = showings_of(deals, rng)
    wh = LayeredWarehouse(tmp_path, kafka, deals_topic, ODS_SHOWINGS.format(topic=showings_topic) + layers,
                          interval="300ms", watermark="{delay: 10s, idle_timeout: 60s}",
                          extra_schemas=SHOWING_SCHEMA)
    shows = [Sent(key=s.agent.encode(), value=s.to_json(), partition=int(s.agent[1:]) % PARTITIONS)
             for s in showings]
    t1, f1 = produce_in_background(kafka, deals_topic, as_sent(deals, PARTITIONS), chunk=150, pause=0.5)
    t2, f2 = produce_in_background(kafka, showings_topic, shows, chunk=150, pause=0.5)
    strata = Strata(strata_bin, wh)
    landed = strata.kill_at_random_moments(rng, 3, (1.0, 2.5), until=t1,
                                           observe=lambda: wh.count("ods", "ods_deals"))
    t1.join()
    t2.join()
    assert not f1 and not f2, (f1, f2)
    # Some kill landed mid-stream, with the join's state part-built.
    assert any(0 < n < len(deals) for n in landed), landed
    end = max(d.ts for d in deals) + 30 * MINUTE
    produce(kafka, deals_topic, sentinels(PARTITIONS, end))
    produce(kafka, showings_topic, [Sent(key=b"s", value=Showing(f"zz{p}", "zz", end).to_json(), partition=p)
                                    for p in range(PARTITIONS)])
    strata.start()
    for name, want in tables:
        wait_until(lambda: (strata.assert_alive(), rows_of(wh, name) >= want)[1], 120, f"{name} complete")
    assert strata.stop() == 0, strata.log()[-3000:]
    return deals, showings, wh


def rows_of(wh, name) -> int:
    t = wh.table("dwd", name)
    if t is None:
        return 0
    return sum(1 for a in t.column("agent").to_pylist() if a != "zz")


def window_pairs(deals, showings):
    by = defaultdict(list)
    for s in showings:
        by[(s.ts - s.ts % MINUTE, s.agent)].append(s.showing_id)
    inner, left = Counter(), Counter()
    for d in deals:
        start = d.ts - d.ts % MINUTE
        matches = by.get((start, d.agent), [])
        for sid in matches:
            inner[(start, d.agent, d.deal_id, sid)] += 1
            left[(start, d.agent, d.deal_id, sid)] += 1
        if not matches:
            left[(start, d.agent, d.deal_id, None)] += 1
    return inner, left


def outer_pairs(deals, showings):
    """Window RIGHT and FULL joins as SQL defines them: the inner pairs, plus
    each showing (right) or each deal and each showing (full) that no row of
    the other side matched, with nulls for the other side."""
    deals_by, shows_by = defaultdict(list), defaultdict(list)
    for d in deals:
        deals_by[(d.ts - d.ts % MINUTE, d.agent)].append(d.deal_id)
    for s in showings:
        shows_by[(s.ts - s.ts % MINUTE, s.agent)].append(s.showing_id)
    right, full = Counter(), Counter()
    for (start, agent), sids in shows_by.items():
        dids = deals_by.get((start, agent), [])
        for sid in sids:
            for did in dids:
                right[(start, agent, did, sid)] += 1
                full[(start, agent, did, sid)] += 1
            if not dids:
                right[(start, agent, None, sid)] += 1
                full[(start, agent, None, sid)] += 1
    for (start, agent), dids in deals_by.items():
        if (start, agent) not in shows_by:
            for did in dids:
                full[(start, agent, did, None)] += 1
    return right, full


def table_pairs(wh, name) -> Counter:
    t = wh.table("dwd", name)
    return Counter((s, a, d, sid) for s, a, d, sid in zip(
        micros(t.column("window_start")), t.column("agent").to_pylist(), t.column("deal_id").to_pylist(),
        t.column("showing_id").to_pylist()) if a != "zz")


def test_window_joins_equal_a_reference_across_sigkills(tmp_path, strata_bin, kafka, rng):
    inner_want, left_want = None, None

    def wants():
        return [("dwd_deal_showings", sum(inner_want.values())), ("dwd_deals_left", sum(left_want.values()))]

    # The reference needs the generated records; generate them the same way.
    state = rng.getstate()
    deals = disordered_deals(1_500, rng, step_us=150_000, jitter_us=5 * SECOND, agents=AGENTS)
    inner_want, left_want = window_pairs(deals, showings_like(deals, rng))
    rng.setstate(state)
    deals, showings, wh = run_killed(tmp_path, strata_bin, kafka, rng, WINDOW_JOINS, wants())
    assert table_pairs(wh, "dwd_deal_showings") == inner_want
    assert table_pairs(wh, "dwd_deals_left") == left_want
    assert any(sid is None for (_, _, _, sid) in left_want), "some deals have no showing in their minute"
    for name in ("dwd_deal_showings_late_ods_deals", "dwd_deal_showings_late_ods_showings"):
        assert wh.count("dwd", name) == 0, name


def test_window_right_and_full_joins_keep_unmatched_rows_equal_to_a_reference_across_sigkills(
        tmp_path, strata_bin, kafka, rng):
    state = rng.getstate()
    deals = disordered_deals(1_500, rng, step_us=150_000, jitter_us=5 * SECOND, agents=AGENTS)
    right_want, full_want = outer_pairs(deals, showings_apart(deals, rng))
    rng.setstate(state)
    # Both sides' unmatched rows are there to be kept (and many pairs).
    assert sum(n for (_, _, did, _), n in right_want.items() if did is None) > 100
    assert sum(n for (_, _, _, sid), n in full_want.items() if sid is None) > 100
    assert sum(n for (_, _, did, sid), n in full_want.items() if did and sid) > 1_000
    _, _, wh = run_killed(tmp_path, strata_bin, kafka, rng, OUTER_WINDOW_JOINS,
                          [("dwd_showings_right", sum(right_want.values())),
                           ("dwd_deals_full", sum(full_want.values()))],
                          showings_of=showings_apart)
    assert table_pairs(wh, "dwd_showings_right") == right_want
    assert table_pairs(wh, "dwd_deals_full") == full_want
    for name in ("dwd_showings_right", "dwd_deals_full"):
        for side in ("ods_deals", "ods_showings"):
            assert wh.count("dwd", f"{name}_late_{side}") == 0, (name, side)


def test_an_interval_join_equals_a_reference_across_sigkills(tmp_path, strata_bin, kafka, rng):
    state = rng.getstate()
    deals = disordered_deals(1_500, rng, step_us=150_000, jitter_us=5 * SECOND, agents=AGENTS)
    showings = showings_like(deals, rng)
    rng.setstate(state)
    by_agent = defaultdict(list)
    for s in showings:
        by_agent[s.agent].append(s)
    want = Counter((d.deal_id, s.showing_id) for d in deals for s in by_agent[d.agent]
                   if d.ts - 2 * MINUTE <= s.ts <= d.ts + MINUTE)
    _, _, wh = run_killed(tmp_path, strata_bin, kafka, rng, INTERVAL_JOIN,
                          [("dwd_deal_visits", sum(want.values()))])
    t = wh.table("dwd", "dwd_deal_visits")
    got = Counter((d, s) for d, s, a in zip(t.column("deal_id").to_pylist(), t.column("showing_id").to_pylist(),
                                            t.column("agent").to_pylist()) if a != "zz")
    assert got == want
