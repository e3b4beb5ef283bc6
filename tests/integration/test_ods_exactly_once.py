"""ODS layer: Kafka -> Delta, exactly once, with a dead-letter table.

Needs: the shared broker (memory storage) from scripts/test.
"""

import time

from conftest import (
    Strata, Warehouse, check_exactly_once, create_topic, is_valid, make_records, produce,
    produce_in_background, unique, wait_until,
)


def test_valid_records_land_once_and_malformed_ones_in_the_dead_letter_table(tmp_path, strata_bin, kafka, rng):
    topic = unique("deals")
    create_topic(kafka, topic, partitions=4)
    sent = produce(kafka, topic, make_records(20_000, partitions=4, malformed_every=37, rng=rng))
    n_valid = sum(map(is_valid, sent))
    wh = Warehouse(tmp_path, kafka, topic)

    strata = Strata(strata_bin, wh).start()
    wait_until(lambda: (strata.assert_alive(), wh.row_count() == n_valid)[1], 120, "all valid rows")
    wait_until(lambda: wh.dead_letter_count() == len(sent) - n_valid, 30, "all dead letters")
    assert strata.stop() == 0, strata.log()[-3000:]

    check_exactly_once(wh, sent)
    reasons = set(wh.dead_letters().column("reason").to_pylist())
    assert any(r.startswith("not valid JSON") for r in reasons), reasons
    assert any("field `amount`: expected decimal(18,2)" in r for r in reasons), reasons
    assert "required field `event_time` is missing" in reasons, reasons
    assert any("tombstone" in r for r in reasons), reasons
    # ODS tables are partitioned by event date.
    files = list(wh.table_path.glob("event_date=*/*.parquet"))
    assert len({f.parent.name for f in files}) > 1, files


def test_sigkill_at_random_moments_loses_nothing_and_doubles_nothing(tmp_path, strata_bin, kafka, rng):
    """The pipeline is SIGKILLed at least six times while a producer writes;
    after a last clean run every record is in exactly one table, once."""
    topic = unique("deals")
    create_topic(kafka, topic, partitions=4)
    records = make_records(30_000, partitions=4, malformed_every=41, rng=rng)
    thread, failure = produce_in_background(kafka, topic, records, chunk=1_000, pause=0.3)
    wh = Warehouse(tmp_path, kafka, topic, interval="200ms")
    strata = Strata(strata_bin, wh)
    rows_at_kill = strata.kill_at_random_moments(rng, 6, (0.8, 3.0), until=thread, observe=wh.row_count)
    kills = len(rows_at_kill)
    thread.join()
    assert not failure, failure

    n_valid = sum(map(is_valid, records))
    # The kills landed mid-stream: the table grew between them and was
    # incomplete at most of them.
    assert rows_at_kill == sorted(rows_at_kill), rows_at_kill
    assert sum(1 for r in rows_at_kill if 0 < r < n_valid) >= 3, rows_at_kill

    strata.start()
    wait_until(lambda: (strata.assert_alive(), wh.row_count() >= n_valid)[1], 180, "all valid rows")
    wait_until(lambda: wh.dead_letter_count() >= len(records) - n_valid, 30, "all dead letters")
    assert strata.stop() == 0, strata.log()[-3000:]
    print(f"kills={kills} rows at each kill={rows_at_kill} epochs={wh.manifest_epochs()[-1]}")
    check_exactly_once(wh, records)


def test_clean_stop_commits_the_last_epoch(tmp_path, strata_bin, kafka, rng):
    """With a long checkpoint interval, SIGTERM still commits what was read."""
    topic = unique("deals")
    create_topic(kafka, topic, partitions=2)
    sent = produce(kafka, topic, make_records(500, partitions=2, malformed_every=0, rng=rng))
    wh = Warehouse(tmp_path, kafka, topic, interval="1h")
    strata = Strata(strata_bin, wh).start()
    wait_until(lambda: "assigned" in strata.log(), 30, "the source to start")
    time.sleep(2)
    assert wh.row_count() == 0, "nothing should commit before the interval"
    assert strata.stop() == 0, strata.log()[-3000:]
    check_exactly_once(wh, sent)
