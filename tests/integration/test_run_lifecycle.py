"""How `strata run` ends: `--bounded` stops by itself once it has caught up
with the input as of its start; SIGINT (Ctrl-C) stops it cleanly, committing
the epoch in progress, like SIGTERM.

Needs: the shared broker (memory storage) from scripts/test.
"""

import signal

from conftest import (
    Strata, Warehouse, check_exactly_once, create_topic, is_valid, make_records, produce, unique, wait_until,
)

PARTITIONS = 3


def test_bounded_run_lands_everything_then_exits_zero(tmp_path, strata_bin, kafka, rng):
    topic = unique("deals")
    create_topic(kafka, topic, partitions=PARTITIONS)
    sent = produce(kafka, topic, make_records(3_000, PARTITIONS, malformed_every=50, rng=rng))
    wh = Warehouse(tmp_path, kafka, topic)
    strata = Strata(strata_bin, wh, "--bounded", "--no-serve").start()
    assert strata.wait(120) == 0, strata.log()[-3000:]
    check_exactly_once(wh, sent)


def test_sigint_stops_cleanly_and_commits_the_epoch_in_progress(tmp_path, strata_bin, kafka, rng):
    topic = unique("deals")
    create_topic(kafka, topic, partitions=PARTITIONS)
    sent = produce(kafka, topic, make_records(3_000, PARTITIONS, malformed_every=50, rng=rng))
    # No epoch ends on its own within the test: whatever is committed, the
    # stop committed.
    wh = Warehouse(tmp_path, kafka, topic, interval="1h")
    strata = Strata(strata_bin, wh, "--no-serve").start()
    log = wh.dir / "strata-1.log"
    wait_until(lambda: (strata.assert_alive(), "assigned" in log.read_text())[1], 60, "the source to start")
    strata.proc.send_signal(signal.SIGINT)
    assert strata.wait(60) == 0, strata.log()[-3000:]
    epochs = wh.manifest_epochs()
    assert epochs == [1], f"the stop wrote epochs {epochs}, not the one in progress"
    assert wh.txn_version(wh.table_path) == 1
    # What it committed is, per partition, the valid records from the first
    # up to where it had read, once: resuming from there lands the rest.
    rows = wh.rows()
    valid = [s for s in sent if is_valid(s)]
    got = [] if rows is None else list(zip(rows.column("_kafka_partition").to_pylist(),
                                           rows.column("_kafka_offset").to_pylist()))
    assert len(got) == len(set(got)), "duplicate rows"
    for p in range(PARTITIONS):
        mine = sorted(o for q, o in got if q == p)
        if mine:
            assert mine == sorted(s.offset for s in valid if s.partition == p and s.offset <= mine[-1]), p
    wh.interval = "200ms"
    wh.write()
    strata.start()
    wait_until(lambda: (strata.assert_alive(), wh.row_count() >= len(valid))[1], 120, "every row")
    strata.proc.send_signal(signal.SIGINT)
    assert strata.wait(60) == 0, strata.log()[-3000:]
    check_exactly_once(wh, sent)
