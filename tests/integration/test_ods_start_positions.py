"""Where an ODS layer starts without a checkpoint: earliest, latest, the
consumer group's offsets, or a time; and that once it has a checkpoint it
resumes from the checkpoint whatever the start position says.

Needs: a broker of the test's own on sqlite storage. The memory storage
reports a partition's end offset as its number of record batches, and
answers offsets-for-times with 0 (BROKER.md), so latest, group (clamped to
the end offset) and timestamp starts can only be checked on sqlite.
"""

import time

from confluent_kafka import Consumer, TopicPartition

from conftest import (
    Strata, Warehouse, check_exactly_once, create_topic, make_records, produce, unique, wait_until,
)


def ids(wh: Warehouse) -> list[str]:
    return sorted(wh.rows(columns=["deal_id"]).column("deal_id").to_pylist())


def test_latest_skips_the_backlog_and_a_restart_resumes_from_the_checkpoint(tmp_path, strata_bin, own_broker, rng):
    kafka = own_broker.bootstrap
    topic = unique("deals")
    create_topic(kafka, topic, partitions=2)
    produce(kafka, topic, make_records(100, 2, 0, rng))
    wh = Warehouse(tmp_path / "wh", kafka, topic, start="latest")
    strata = Strata(strata_bin, wh).start()
    # The first checkpoint pins the end offsets even though nothing was read.
    wait_until(lambda: (strata.assert_alive(), wh.manifest_epochs())[1], 60, "the first checkpoint")
    new = produce(kafka, topic, make_records(50, 2, 0, rng, first=100))
    wait_until(lambda: wh.row_count() == 50, 60, "the new rows")
    assert strata.stop() == 0

    # Records produced while it is down are read on restart: the checkpoint
    # wins over `start: latest`.
    later = produce(kafka, topic, make_records(30, 2, 0, rng, first=150))
    strata.start()
    wait_until(lambda: (strata.assert_alive(), wh.row_count() == 80)[1], 60, "the rows produced while down")
    assert strata.stop() == 0
    check_exactly_once(wh, new + later)


def test_group_starts_at_the_committed_offsets(tmp_path, strata_bin, own_broker, rng):
    kafka = own_broker.bootstrap
    topic = unique("deals")
    group = unique("group")
    create_topic(kafka, topic, partitions=1)
    sent = produce(kafka, topic, make_records(100, 1, 0, rng))
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 60)], asynchronous=False)
    consumer.close()

    wh = Warehouse(tmp_path / "wh", kafka, topic, start="group", group_id=group)
    strata = Strata(strata_bin, wh).start()
    wait_until(lambda: (strata.assert_alive(), wh.row_count() == 40)[1], 60, "rows from offset 60")
    time.sleep(1)
    assert strata.stop() == 0
    check_exactly_once(wh, sent[60:])
    # Strata commits its progress back to the group, for lag monitoring.
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": group})
    committed = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    consumer.close()
    assert committed[0].offset == 100


def test_timestamp_starts_at_the_first_record_at_or_after_it(tmp_path, strata_bin, own_broker, rng):
    """Offsets-for-times needs the sqlite broker (memory storage answers 0)."""
    topic = unique("deals")
    create_topic(own_broker.bootstrap, topic, partitions=2)
    hour_ms = 3_600_000
    t0 = int(time.time() * 1000) - 3 * hour_ms
    produce(own_broker.bootstrap, topic, make_records(40, 2, 0, rng), timestamp_ms=t0)
    late = produce(own_broker.bootstrap, topic, make_records(40, 2, 0, rng, first=40), timestamp_ms=t0 + 2 * hour_ms)
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((t0 + hour_ms) / 1000))
    wh = Warehouse(tmp_path / "wh", own_broker.bootstrap, topic, start=start)
    strata = Strata(strata_bin, wh).start()
    wait_until(lambda: (strata.assert_alive(), wh.row_count() == 40)[1], 90, "rows after the start time")
    time.sleep(1)
    assert strata.stop() == 0
    check_exactly_once(wh, late)
    kafka_ts = wh.rows(columns=["_kafka_timestamp"]).column("_kafka_timestamp").to_pylist()
    assert {int(t.timestamp() * 1000) for t in kafka_ts} == {t0 + 2 * hour_ms}
