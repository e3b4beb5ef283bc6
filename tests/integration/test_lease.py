"""One writer per warehouse: a second `strata run` waits for the first's
lease, `--no-wait` refuses, and a run takes over a lease its holder stopped
renewing, exactly once.

Needs: the shared broker (memory storage) from scripts/test.
"""

import json
import signal
import subprocess

from conftest import (
    Strata, Warehouse, check_exactly_once, create_topic, is_valid, make_records,
    produce_in_background, unique, wait_until,
)


def log_events(strata: Strata, run: int) -> list[dict]:
    path = strata.warehouse.dir / f"strata-{run}.log"
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def said(strata: Strata, run: int, message: str) -> dict | None:
    return next((e for e in log_events(strata, run) if message in json.dumps(e)), None)


def test_a_second_run_waits_for_the_lease_and_takes_it_over_once_it_expires(tmp_path, strata_bin, kafka, rng):
    topic = unique("deals")
    create_topic(kafka, topic, partitions=2)
    records = make_records(20_000, partitions=2, malformed_every=31, rng=rng)
    producer, errors = produce_in_background(kafka, topic, records, chunk=300, pause=0.3)
    wh = Warehouse(tmp_path, kafka, topic, interval="200ms")

    first = Strata(strata_bin, wh).start()
    wait_until(lambda: (first.assert_alive(), wh.row_count() > 0)[1], 60, "the first run's rows")
    # A second run (its logs are strata-2.log) waits, naming the holder.
    second = Strata(strata_bin, wh)
    second.runs = 1
    second.start()
    pid = first.proc.pid
    wait_until(lambda: said(second, 2, "another run holds the warehouse's lease"), 30, "the second run waiting")
    assert f"pid {pid}" in json.dumps(said(second, 2, "another run holds the warehouse's lease"))
    # While it waits, the first one keeps committing and the second writes nothing.
    epochs = wh.manifest_epochs()[-1]
    wait_until(lambda: wh.manifest_epochs()[-1] >= epochs + 10, 60, "ten more epochs of the first run")
    assert said(second, 2, "holding the warehouse's lease") is None
    second.assert_alive()

    # --no-wait refuses at once, naming the holder.
    refused = subprocess.run([strata_bin, "run", str(wh.path), "--no-wait", "--no-serve"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert f"pid {pid}" in refused.stderr and "--no-wait" in refused.stderr, refused.stderr

    # The first run stalls (alive, not renewing): the second takes over
    # once the lease expires; then the first is SIGKILLed.
    first.proc.send_signal(signal.SIGSTOP)
    wait_until(lambda: said(second, 2, "holding the warehouse's lease"), 60, "the second run taking over")
    assert said(second, 2, "took over a lease its holder stopped renewing")
    first.kill9()

    producer.join()
    assert not errors, errors
    n_valid = sum(map(is_valid, records))
    wait_until(lambda: (second.assert_alive(), wh.row_count() >= n_valid)[1], 120, "all valid rows")
    wait_until(lambda: wh.dead_letter_count() >= len(records) - n_valid, 30, "all dead letters")
    assert second.stop() == 0, second.log()[-3000:]
    check_exactly_once(wh, records)
    # A clean stop releases the lease: the next run takes it at once.
    again = subprocess.run([strata_bin, "run", str(wh.path), "--no-wait", "--no-serve", "--bounded"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
