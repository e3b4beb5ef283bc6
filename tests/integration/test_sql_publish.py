"""Layers publishing their rows to Kafka topics.

exactly_once: a transaction per epoch, committed after the checkpoint, with
the epoch as a transactional offset commit of the layer's marker group. The
local broker (nisshi) keeps aborted records visible even to read_committed
readers (see BROKER.md), so the test reads everything and keeps, per epoch,
the records of the last attempt that sent it: what a read_committed reader
sees on a broker that honours transactions, since an epoch is only sent
again when its earlier attempt was aborted. That view must equal the
layer's Delta table, every window once, across SIGKILLs and crashes injected
between the table commit and the Kafka commit.

Needs: the shared broker (memory storage) from scripts/test.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from confluent_kafka import Consumer, TopicPartition

from conftest import Strata, create_topic, produce, produce_in_background, unique, wait_until
from layered import MINUTE, SECOND, LayeredWarehouse, as_sent, disordered_deals, micros, read_topic, sentinels

PARTITIONS = 2


def marker_epoch(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    consumer.close()
    return tp.offset


def committed_view(records: list[tuple[dict, dict]]) -> list[dict]:
    by_epoch: dict[int, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for value, headers in records:
        by_epoch[int(headers["strata.epoch"])][int(headers["strata.attempt"])].append(value)
    return [row for attempts in by_epoch.values() for row in attempts[max(attempts)]]


def test_exactly_once_publishing_survives_sigkills_and_a_crash_before_the_kafka_commit(
        tmp_path, strata_bin, kafka, rng):
    topic, out_topic = unique("deals"), unique("city_minute")
    create_topic(kafka, topic, partitions=PARTITIONS)
    create_topic(kafka, out_topic, partitions=1)
    layers = f"""
  - name: dws_city
    kind: dws
    inputs: [ods_deals]
    publish: {{topic: {out_topic}, delivery: exactly_once}}
    sql: >
      SELECT window_start, window_end, city, COUNT(*) AS deals, SUM(amount) AS gmv
      FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
      GROUP BY window_start, window_end, city
"""
    wh = LayeredWarehouse(tmp_path, kafka, topic, layers, interval="300ms")
    deals = disordered_deals(12_000, rng, step_us=250_000, jitter_us=3 * SECOND)
    thread, failure = produce_in_background(kafka, topic, as_sent(deals, PARTITIONS), chunk=1_000, pause=0.5)
    strata = Strata(strata_bin, wh)
    strata.kill_at_random_moments(rng, 4, (1.0, 2.5), until=thread)
    thread.join()
    assert not failure, failure

    # A crash after the tables committed an epoch that published windows,
    # before its Kafka transaction did: the restart publishes that epoch
    # from the table. (The sentinels close the last windows in that run.)
    produce(kafka, topic, sentinels(PARTITIONS, deals[-1].ts + 60 * MINUTE))
    strata.start(STRATA_FAILPOINT="before_publish_commit:*")
    assert strata.wait(60) != 0, "the failpoint should have aborted the process"
    strata.start()
    last_log = wh.dir / f"strata-{strata.runs}.log"
    want = Counter((d.ts - d.ts % MINUTE, d.city) for d in deals)
    wait_until(lambda: "assigned" in last_log.read_text(), 30, "the restart to run")
    wait_until(lambda: (strata.assert_alive(), wh.count("dws", "dws_city") >= len(want))[1], 120, "every window")
    assert strata.stop() == 0, strata.log()[-3000:]
    repairs = [json.loads(line) for line in last_log.read_text().splitlines()
               if "publishing its rows again from the table" in line]
    assert len(repairs) == 1 and repairs[0]["rows"] > 0, repairs

    table = wh.table("dws", "dws_city")
    rows = Counter(zip(micros(table.column("window_start")), table.column("city").to_pylist(),
                       table.column("deals").to_pylist()))
    assert rows == Counter({(s, c, n): 1 for (s, c), n in want.items()}), "the table must equal the reference"

    records = read_topic(kafka, out_topic, 1)
    view = committed_view(records)
    published = Counter((v["window_start"], v["city"], v["deals"]) for v in view)
    assert len(view) == len(want), f"{len(view)} committed records for {len(want)} windows"
    assert all(n == 1 for n in published.values()), "a window was published twice"
    # Rows travel as JSON: timestamps as RFC 3339 text, counts as numbers.
    assert {(c, n) for (_, c, n) in published} == {(c, n) for (_, c), n in want.items()}
    assert len({s for (s, _, _) in published}) == len({s for (s, _) in want})
    # Aborted attempts were sent (and are visible on this broker).
    assert len(records) >= len(view)
    last_epoch = sorted(int(p.stem) for p in wh.checkpoint_dir.glob("*.json"))[-1]
    assert marker_epoch(kafka, "strata-publish-test-dws_city", out_topic) == last_epoch


def test_at_least_once_publishing_loses_nothing_across_sigkills(tmp_path, strata_bin, kafka, rng):
    topic, out_topic = unique("deals"), unique("dwd_out")
    create_topic(kafka, topic, partitions=PARTITIONS)
    create_topic(kafka, out_topic, partitions=1)
    layers = f"""
  - name: dwd_deals
    kind: dwd
    inputs: [ods_deals]
    publish: {{topic: {out_topic}}}
    sql: SELECT deal_id, upper(city) AS city, amount, event_time FROM ods_deals
"""
    wh = LayeredWarehouse(tmp_path, kafka, topic, layers, interval="300ms")
    deals = disordered_deals(8_000, rng, step_us=250_000, jitter_us=3 * SECOND)
    thread, failure = produce_in_background(kafka, topic, as_sent(deals, PARTITIONS), chunk=1_000, pause=0.4)
    strata = Strata(strata_bin, wh)
    strata.kill_at_random_moments(rng, 3, (1.0, 2.5))
    thread.join()
    assert not failure, failure
    strata.start()
    wait_until(lambda: (strata.assert_alive(), wh.count("dwd", "dwd_deals") >= len(deals))[1], 120, "every row")
    assert strata.stop() == 0, strata.log()[-3000:]

    records = read_topic(kafka, out_topic, 1)
    ids = Counter(v["deal_id"] for v, _ in records)
    assert set(ids) == {d.deal_id for d in deals}, "every row is published"
    first = next(v for v, _ in records)
    assert first["city"].isupper() and "event_time" in first and "amount" in first, first
