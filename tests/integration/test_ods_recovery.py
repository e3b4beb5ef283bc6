"""Recovery from a crash at each step of an epoch's commit.

The process is aborted (no cleanup, like SIGKILL) at an exact protocol step
through STRATA_FAILPOINT, then restarted: the result must be exactly once.
Needs: the shared broker (memory storage) from scripts/test.
"""

import signal

import pytest

from conftest import (
    Strata, Warehouse, check_exactly_once, create_topic, is_valid, make_records,
    produce_in_background, unique, wait_until,
)

CRASH_EPOCH = 3


@pytest.mark.parametrize(
    "point, manifest_after_crash, rows_txn, dead_letter_txn",
    [
        # Files written, no manifest: the epoch never happened; it is re-read.
        ("before_manifest", CRASH_EPOCH - 1, CRASH_EPOCH - 1, CRASH_EPOCH - 1),
        # Manifest written, no table commit: recovery commits the recorded files.
        ("after_manifest", CRASH_EPOCH, CRASH_EPOCH - 1, CRASH_EPOCH - 1),
        # One table committed: recovery commits the other and skips the first.
        ("between_table_commits", CRASH_EPOCH, CRASH_EPOCH, CRASH_EPOCH - 1),
    ],
)
def test_crash_at_each_commit_step_recovers_exactly_once(
    tmp_path, strata_bin, kafka, rng, point, manifest_after_crash, rows_txn, dead_letter_txn
):
    topic = unique("deals")
    create_topic(kafka, topic, partitions=2)
    records = make_records(6_000, partitions=2, malformed_every=29, rng=rng)
    producer, errors = produce_in_background(kafka, topic, records, chunk=500, pause=0.25)
    wh = Warehouse(tmp_path, kafka, topic, interval="150ms")
    strata = Strata(strata_bin, wh).start(STRATA_FAILPOINT=f"{point}:{CRASH_EPOCH}")
    code = strata.wait(timeout=60)
    assert code == -signal.SIGABRT, f"exit {code}:\n{strata.log()[-3000:]}"
    assert wh.manifest_epochs()[-1] == manifest_after_crash
    assert wh.txn_version(wh.table_path) == rows_txn
    assert wh.txn_version(wh.dead_letter_path) == dead_letter_txn

    producer.join()
    assert not errors, errors
    strata.start()
    n_valid = sum(map(is_valid, records))
    wait_until(lambda: (strata.assert_alive(), wh.row_count() >= n_valid)[1], 120, "all valid rows")
    wait_until(lambda: wh.dead_letter_count() >= len(records) - n_valid, 30, "all dead letters")
    assert strata.stop() == 0, strata.log()[-3000:]
    check_exactly_once(wh, records)
