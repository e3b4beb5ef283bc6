"""Layers publishing their rows to Kafka topics.

exactly_once: a transaction per epoch, committed after the checkpoint, with
the epoch as a transactional offset commit of the layer's marker group. The
local broker (nisshi) keeps aborted records visible even to read_committed
readers (see BROKER.md), so the test reads everything and keeps, per epoch,
the records of the last attempt that sent it: what a read_committed reader
sees on a broker that honours transactions, since an epoch is only sent
again when its earlier attempt was aborted. That view must equal the
layer's Delta table, every window once, across SIGKILLs and crashes injected
between the table commit and the Kafka commit. So must the records Kafka
itself holds committed: those of transactions its COMMIT markers end, read
from the partition's raw record batches (kafka_log.py), not from Strata's
headers.

Needs: the shared broker (memory storage) from scripts/test.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime
from decimal import Decimal

from confluent_kafka import Consumer, TopicPartition

from conftest import Strata, create_topic, produce, produce_in_background, unique, wait_until
from kafka_log import transactions
from layered import MINUTE, SECOND, LayeredWarehouse, as_sent, disordered_deals, micros, read_topic, sentinels

PARTITIONS = 2


def marker_epoch(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    consumer.close()
    return tp.offset


def committed_view(records: list[tuple[dict, dict]]) -> tuple[list[dict], int]:
    """The rows of each epoch's last attempt, and how many rows earlier
    (aborted) attempts sent."""
    by_epoch: dict[int, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for value, headers in records:
        by_epoch[int(headers["strata.epoch"])][int(headers["strata.attempt"])].append(value)
    view = [row for attempts in by_epoch.values() for row in attempts[max(attempts)]]
    return view, len(records) - len(view)


def window_key(row: dict) -> tuple:
    """(window_start in microseconds, city, deals, gmv) of a published row."""
    start = datetime.fromisoformat(row["window_start"].replace("Z", "+00:00"))
    return (int(start.timestamp()) * SECOND + start.microsecond, row["city"], row["deals"], Decimal(str(row["gmv"])))


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
    by_window = defaultdict(list)
    for d in deals:
        by_window[(d.ts - d.ts % MINUTE, d.city)].append(d)
    want = {k: len(ds) for k, ds in by_window.items()}
    reference = Counter((s, c, len(ds), sum(d.amount for d in ds)) for (s, c), ds in by_window.items())
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

    gmv = Counter(zip(micros(table.column("window_start")), table.column("city").to_pylist(),
                      table.column("deals").to_pylist(), table.column("gmv").to_pylist()))
    assert gmv == reference, "the table's gmv must equal the reference"

    records = read_topic(kafka, out_topic, 1)
    view, aborted = committed_view(records)
    # Rows travel as JSON: timestamps as RFC 3339 text, counts as numbers.
    assert Counter(window_key(v) for v in view) == reference, "the last attempts must equal the reference"
    # Kafka's own view: the records its COMMIT markers end, every window once.
    log = transactions(kafka, out_topic, 0)
    assert not log.plain, f"{len(log.plain)} records were published outside a transaction"
    assert Counter(window_key(v) for _, v in log.committed) == reference, \
        f"Kafka's committed records ({len(log.committed)}) must equal the reference ({len(reference)} windows)"
    # Attempts were aborted (the crash before the Kafka commit at least),
    # and Kafka holds their records as aborted, not committed.
    assert aborted > 0 and log.markers[0] > 0 and len(log.aborted) + len(log.open) >= aborted, \
        (aborted, log.markers, len(log.aborted), len(log.open))
    print(f"records: {len(records)}, committed {len(log.committed)} in {log.markers[1]} transactions, "
          f"aborted {len(log.aborted)} in {log.markers[0]}, open {len(log.open)}")
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
