"""The broker goes away mid-run and comes back: the pipeline reconnects and
goes on, nothing lost, nothing doubled.

Needs: a broker of the test's own, on sqlite storage (it must keep its data
across the restart).
"""

import time

from conftest import (
    Strata, Warehouse, check_exactly_once, create_topic, is_valid, make_records, produce,
    unique, wait_until,
)


def test_broker_restart_mid_run(tmp_path, strata_bin, own_broker, rng):
    topic = unique("deals")
    create_topic(own_broker.bootstrap, topic, partitions=2)
    first = produce(own_broker.bootstrap, topic, make_records(600, 2, malformed_every=50, rng=rng))
    wh = Warehouse(tmp_path / "wh", own_broker.bootstrap, topic, interval="300ms")
    strata = Strata(strata_bin, wh).start()
    n_first = sum(map(is_valid, first))
    wait_until(lambda: (strata.assert_alive(), wh.row_count() == n_first)[1], 120, "the first rows")

    own_broker.stop()
    time.sleep(3)
    strata.assert_alive()
    own_broker.start()
    second = produce(own_broker.bootstrap, topic, make_records(600, 2, malformed_every=50, rng=rng, first=600))
    sent = first + second
    n_valid = sum(map(is_valid, sent))
    wait_until(lambda: (strata.assert_alive(), wh.row_count() == n_valid)[1], 180, "rows after the restart")
    wait_until(lambda: wh.dead_letter_count() == len(sent) - n_valid, 30, "dead letters")
    assert strata.stop() == 0, strata.log()[-3000:]
    check_exactly_once(wh, sent)
