"""Table maintenance (`strata run`'s background compaction, VACUUM and log
cleanup; `strata maintain`): compaction under a live pipeline changes no
query result and makes the file count drop (and `strata maintain` leaves it
to the run); VACUUM removes the files of a crashed epoch and keeps every
file a version within the retention needs; the run vacuums and cleans the
log by itself; a damaged table is refused.

Needs: the shared broker (memory storage) from scripts/test.
"""

import json
import os
import pathlib
import signal
import subprocess
import threading
import time

from deltalake import DeltaTable

from conftest import (
    Strata, Warehouse, check_exactly_once, create_topic, is_valid, make_records, produce,
    produce_in_background, unique, wait_until,
)

RETENTION_S = 30
# The shortest retention `strata maintain` accepts at 200 ms epochs.
FLOOR_S = 30


def maintain(strata_bin: str, wh: Warehouse, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([strata_bin, "maintain", str(wh.path), *args],
                          capture_output=True, text=True, timeout=300)


def rows_at(path, version: int) -> list[tuple]:
    t = DeltaTable(str(path), version=version).to_pyarrow_table()
    cols = [t.column(c).to_pylist() for c in t.column_names]
    return sorted(zip(*cols), key=repr)


def optimize_versions(path) -> list[int]:
    return [c["version"] for c in DeltaTable(str(path)).history() if c.get("operation") == "OPTIMIZE"]


def referenced_files(path) -> set[str]:
    """Every file any version of the log adds."""
    out = set()
    for entry in (path / "_delta_log").glob("*.json"):
        for line in entry.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                out.add(action["add"]["path"])
    return out


def parquet_files(path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*.parquet") if "_delta_log" not in p.parts}


def test_compaction_under_a_live_pipeline_changes_no_result_and_drops_the_file_count(
        tmp_path, strata_bin, kafka, rng):
    topic = unique("deals")
    create_topic(kafka, topic, partitions=2)
    records = make_records(8_000, partitions=2, malformed_every=53, rng=rng)
    producer, errors = produce_in_background(kafka, topic, records, chunk=100, pause=0.15)
    # Compaction in the background of `strata run`, every 2 s.
    wh = Warehouse(tmp_path, kafka, topic, interval="200ms",
                   extra="maintenance:\n  min_small_files: 3\n  interval: 2s\n")
    strata = Strata(strata_bin, wh).start()
    wait_until(lambda: (strata.assert_alive(), (wh.table_path / "_delta_log").exists())[1], 120,
               "the ODS table")

    # `strata maintain` while the run holds the warehouse leaves compaction
    # to it: two compactions of one table racing would both add the rows
    # of the files both replaced.
    done = maintain(strata_bin, wh, "--layer", wh.layer)
    assert done.returncode == 0, done.stderr
    assert "compaction left to the run" in done.stdout, done.stdout

    # Compactions while the pipeline commits epochs and the producer writes.
    wait_until(lambda: (strata.assert_alive(), len(optimize_versions(wh.table_path)) >= 2)[1], 120,
               "two background compactions")
    for v in optimize_versions(wh.table_path):
        # Each compaction's commit holds the same rows as the version it
        # was made on, in fewer files.
        assert rows_at(wh.table_path, v) == rows_at(wh.table_path, v - 1), v
        files_before = len(DeltaTable(str(wh.table_path), version=v - 1).file_uris())
        files_after = len(DeltaTable(str(wh.table_path), version=v).file_uris())
        assert files_after < files_before, (v, files_before, files_after)
    strata.assert_alive()

    producer.join()
    assert not errors, errors
    n_valid = sum(map(is_valid, records))
    wait_until(lambda: (strata.assert_alive(), wh.row_count() >= n_valid)[1], 120, "all valid rows")
    wait_until(lambda: wh.dead_letter_count() >= len(records) - n_valid, 30, "all dead letters")
    assert strata.stop() == 0, strata.log()[-3000:]
    # Every record once: no epoch commit failed or doubled because of it.
    check_exactly_once(wh, records)
    # Races with compaction are normal operation, and a compaction running
    # at the stop finishes: no ERROR, no panic in the log.
    assert "ERROR" not in strata.log(), strata.log()[-3000:]
    assert "panicked" not in strata.log(), strata.log()[-3000:]


def after_a_crashed_epoch(tmp_path, strata_bin, kafka, rng, n: int, maintenance: str):
    """A warehouse with `maintenance` over a new topic that `n` records are
    being produced to, whose first run died (at a failpoint) after its
    first epoch with rows wrote its files and before its manifest: those
    files are in no version of the table. Returns (warehouse, its stopped
    Strata, topic, records, the orphaned files, producer, errors)."""
    topic = unique("deals")
    create_topic(kafka, topic, partitions=2)
    records = make_records(n, partitions=2, malformed_every=41, rng=rng)
    producer, errors = produce_in_background(kafka, topic, records, chunk=n // 20, pause=0.2)
    wh = Warehouse(tmp_path, kafka, topic, interval="200ms", extra=maintenance)
    strata = Strata(strata_bin, wh).start(STRATA_FAILPOINT="before_manifest_with_rows:*")
    assert strata.wait(timeout=60) == -signal.SIGABRT, strata.log()[-3000:]
    orphans = parquet_files(wh.table_path) - referenced_files(wh.table_path)
    assert orphans, "the crashed epoch left no files: " + strata.log()[-3000:]
    return wh, strata, topic, records, orphans, producer, errors


def test_vacuum_removes_a_crashed_epochs_files_and_keeps_what_versions_in_retention_need(
        tmp_path, strata_bin, kafka, rng):
    wh, strata, topic, records, orphans, producer, errors = after_a_crashed_epoch(
        tmp_path, strata_bin, kafka, rng, 3_000,
        f"maintenance:\n  min_small_files: 4\n  vacuum_retention: {RETENTION_S}s\n"
        "  interval: 2s\n  vacuum_interval: off\n")

    strata.start()
    producer.join()
    assert not errors, errors
    n_valid = sum(map(is_valid, records))
    wait_until(lambda: (strata.assert_alive(), wh.row_count() >= n_valid)[1], 120, "all valid rows")

    # Older than the retention: the crashed epoch's files (a retention is
    # a time, so the test waits for it to pass), and than the time a file
    # may wait for its commit (the retention floor, 30 s here), which
    # VACUUM adds to files no version names.
    newest = max(os.path.getmtime(wh.table_path / f) for f in orphans)
    wait_until(lambda: time.time() - newest > RETENTION_S + FLOOR_S + 1, RETENTION_S + FLOOR_S + 30,
               "the orphans to age")
    # A compaction now (the run's, in the background, of the files of
    # records produced now): the files it replaces are needed by versions
    # within the retention.
    newest = DeltaTable(str(wh.table_path)).version()
    more = make_records(600, partitions=2, malformed_every=41, rng=rng, first=len(records))
    producer, errors = produce_in_background(kafka, topic, more, chunk=30, pause=0.3)
    wait_until(lambda: (strata.assert_alive(), optimize_versions(wh.table_path)[:1] > [newest])[1], 120,
               "a compaction of the new records' files")
    producer.join()
    assert not errors, errors
    records += more
    n_valid = sum(map(is_valid, records))
    wait_until(lambda: (strata.assert_alive(), wh.row_count() >= n_valid)[1], 120, "all valid rows")
    v = optimize_versions(wh.table_path)[0]
    before_compaction = rows_at(wh.table_path, v - 1)

    dry = maintain(strata_bin, wh, "--layer", wh.layer, "--vacuum", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert all(o in dry.stdout for o in orphans), dry.stdout
    assert orphans <= parquet_files(wh.table_path), "a dry run removed files"

    done = maintain(strata_bin, wh, "--layer", wh.layer, "--vacuum")
    assert done.returncode == 0, done.stderr
    left = parquet_files(wh.table_path)
    assert not (orphans & left), orphans & left
    # Every version since the compaction's parent reads whole.
    newest_version = DeltaTable(str(wh.table_path)).version()
    for version in range(v - 1, newest_version + 1):
        DeltaTable(str(wh.table_path), version=version).to_pyarrow_table()
    assert rows_at(wh.table_path, v - 1) == before_compaction
    assert strata.stop() == 0, strata.log()[-3000:]
    check_exactly_once(wh, records)

    # A table missing a file it names is refused, and nothing is removed.
    victim = pathlib.Path(DeltaTable(str(wh.table_path)).file_uris()[0].removeprefix("file://"))
    victim.unlink()
    files = parquet_files(wh.table_path)
    refused = maintain(strata_bin, wh, "--layer", wh.layer, "--vacuum")
    assert refused.returncode != 0
    assert "do not exist" in refused.stderr, refused.stderr
    assert parquet_files(wh.table_path) == files


def removed_by(path, version: int) -> set[str]:
    """The files version `version`'s commit removes."""
    entry = path / "_delta_log" / f"{version:020}.json"
    return {json.loads(line)["remove"]["path"] for line in entry.read_text().splitlines()
            if line.startswith('{"remove"')}


def stream_until(stop: threading.Event, kafka: str, topic: str, rng, first: int):
    """Produces chunks of records until `stop` is set. Returns (thread,
    sent, errors): `sent` holds every record produced."""
    sent, errors = [], []

    def run():
        try:
            while not stop.is_set():
                chunk = make_records(40, partitions=2, malformed_every=41, rng=rng,
                                     first=first + len(sent))
                produce(kafka, topic, chunk)
                sent.extend(chunk)
                time.sleep(0.4)
        except Exception as e:  # reported by the caller
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, sent, errors


def test_the_run_vacuums_and_cleans_the_log_in_the_background_while_records_stream_in(
        tmp_path, strata_bin, kafka, rng):
    """What keeps a long run's files and log bounded without an operator:
    `strata run` itself removes a crashed epoch's files, the files its
    compactions replaced and old log entries, once they are older than
    their retentions, while records stream in; every record stays once."""
    # Both retentions 30 s: VACUUM and log cleanup every 7.5 s (a quarter).
    wh, strata, topic, records, orphans, producer, errors = after_a_crashed_epoch(
        tmp_path, strata_bin, kafka, rng, 2_000,
        f"maintenance:\n  min_small_files: 3\n  vacuum_retention: {RETENTION_S}s\n"
        f"  log_retention: {RETENTION_S}s\n  interval: 2s\n")
    producer.join()
    assert not errors, errors

    strata.start()
    stop = threading.Event()
    producer, more, errors = stream_until(stop, kafka, topic, rng, first=len(records))
    wait_until(lambda: (strata.assert_alive(), optimize_versions(wh.table_path))[1], 120,
               "a background compaction")
    replaced = removed_by(wh.table_path, optimize_versions(wh.table_path)[0])
    assert replaced and replaced <= parquet_files(wh.table_path), replaced

    # Gone once older than the retention and its floor (30 s + 30 s), with
    # no `strata maintain`, while records stream in: the orphans, the
    # files the compaction replaced, and version 0's commit (a checkpoint
    # newer than it is within the retention).
    first_commit = wh.table_path / "_delta_log" / f"{0:020}.json"
    wait_until(lambda: (strata.assert_alive(),
                        not (orphans | replaced) & parquet_files(wh.table_path)
                        and not first_commit.exists())[1],
               RETENTION_S + FLOOR_S + 120, "the run's VACUUM and log cleanup")
    stop.set()
    producer.join()
    assert not errors, errors
    records += more
    n_valid = sum(map(is_valid, records))
    wait_until(lambda: (strata.assert_alive(), wh.row_count() >= n_valid)[1], 120, "all valid rows")
    stopped_at = time.time()
    assert strata.stop() == 0, strata.log()[-3000:]
    check_exactly_once(wh, records)
    assert "background maintenance failed" not in strata.log(), strata.log()[-3000:]
    # Every version within the retention when the run stopped reads whole
    # (the run's last VACUUM kept all of them, and more).
    table = DeltaTable(str(wh.table_path))
    within = [c["version"] for c in table.history()
              if c["timestamp"] / 1000 >= stopped_at - RETENTION_S]
    assert within, table.history()[:3]
    for version in within:
        DeltaTable(str(wh.table_path), version=version).to_pyarrow_table()
