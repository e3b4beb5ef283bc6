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
    "point, manifest_after_crash, committed_at_crash",
    [
        # Files written, no manifest: the epoch never happened; it is re-read.
        ("before_manifest", CRASH_EPOCH - 1, False),
        # Manifest written, no table commit: recovery commits the recorded files.
        ("after_manifest", CRASH_EPOCH, False),
        # A table committed (tables commit concurrently, so maybe more than
        # one): recovery commits the others and skips those.
        ("between_table_commits", CRASH_EPOCH, True),
    ],
)
def test_crash_at_each_commit_step_recovers_exactly_once(
    tmp_path, strata_bin, kafka, rng, point, manifest_after_crash, committed_at_crash
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
    # A table is committed only in epochs that add rows to it: its txn
    # version is the last such epoch committed.
    txns = [wh.txn_version(p) or 0 for p in (wh.table_path, wh.dead_letter_path)]
    if committed_at_crash:
        assert max(txns) == CRASH_EPOCH, txns
    else:
        assert max(txns) < CRASH_EPOCH, txns

    producer.join()
    assert not errors, errors
    strata.start()
    n_valid = sum(map(is_valid, records))
    wait_until(lambda: (strata.assert_alive(), wh.row_count() >= n_valid)[1], 120, "all valid rows")
    wait_until(lambda: wh.dead_letter_count() >= len(records) - n_valid, 30, "all dead letters")
    assert strata.stop() == 0, strata.log()[-3000:]
    check_exactly_once(wh, records)
