"""Three layers in one dataflow (ODS -> DWD -> DWS), crashed while a
producer writes: by SIGKILLs at random moments, and by crashes injected
right after each table's commit of an epoch (STRATA_FAILPOINT
`after_table_commit_<n>`, for every table of the chain in turn). Every
table holds every row exactly once with the values the reference computes
(DWD fields, DWS windows), and each table's Delta `txn` version is the
newest epoch whose manifest gave it rows.

Needs: the shared broker (memory storage) from scripts/test.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from datetime import datetime, timezone

from conftest import Strata, create_topic, produce, produce_in_background, unique, wait_until
from layered import (
    MINUTE, SECOND, LayeredWarehouse, as_sent, disordered_deals, micros, sentinels, sink_path, sink_rows,
)

PARTITIONS = 4
HOUR = 60 * MINUTE

LAYERS = """
  - name: dwd_deals
    kind: dwd
    inputs: [ods_deals]
    sql: >
      SELECT deal_id, upper(city) AS city, agent, amount, event_time,
             date_trunc('hour', event_time) AS event_hour
      FROM ods_deals
  - name: dws_city_minute
    kind: dws
    inputs: [dwd_deals]
    sql: >
      SELECT window_start, window_end, city, COUNT(*) AS deals, SUM(amount) AS gmv,
             COUNT(DISTINCT agent) AS agents
      FROM TABLE(TUMBLE(TABLE dwd_deals, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
      GROUP BY window_start, window_end, city
"""
CITIES = {"BEIJING", "SHANGHAI", "SHENZHEN", "HANGZHOU", "ZZ_SENTINEL"}


def warehouse(tmp_path, kafka, topic) -> LayeredWarehouse:
    # Every manifest is kept: each table's txn version is checked against
    # the newest epoch that gave it rows, however long ago.
    return LayeredWarehouse(tmp_path, kafka, topic, LAYERS, interval="300ms",
                            watermark="{delay: 10s, idle_timeout: 60s}", retain=100_000)


def finish_and_check(wh: LayeredWarehouse, strata: Strata, kafka: str, topic: str, deals) -> None:
    """Closes every window, runs the pipeline to the end, and checks every
    table against the reference over `deals`."""
    produce(kafka, topic, sentinels(PARTITIONS, max(d.ts for d in deals) + 60 * MINUTE))
    want = defaultdict(list)
    for d in deals:
        want[(d.ts - d.ts % MINUTE, d.city.upper())].append(d)
    strata.start()
    wait_until(lambda: (strata.assert_alive(), wh.count("dws", "dws_city_minute") >= len(want))[1], 180,
               "every window")
    assert strata.stop() == 0, strata.log()[-3000:]

    ids = {d.deal_id for d in deals} | {f"s{p}" for p in range(PARTITIONS)}
    for kind, name in [("ods", "ods_deals"), ("dwd", "dwd_deals")]:
        got = wh.table(kind, name).column("deal_id").to_pylist()
        assert len(got) == len(set(got)), f"{name}: {len(got) - len(set(got))} duplicate rows"
        assert set(got) == ids, f"{name}: {len(ids - set(got))} missing"

    # DWD rows carry the values the SQL computes from each record.
    dwd = wh.table("dwd", "dwd_deals")
    rows = {r["deal_id"]: r for r in dwd.to_pylist()}
    for d in deals:
        at = datetime.fromtimestamp(d.ts / SECOND, tz=timezone.utc)
        hour = datetime.fromtimestamp((d.ts - d.ts % HOUR) / SECOND, tz=timezone.utc)
        assert (rows[d.deal_id]["city"], rows[d.deal_id]["agent"], rows[d.deal_id]["amount"],
                rows[d.deal_id]["event_time"], rows[d.deal_id]["event_hour"]) == \
            (d.city.upper(), d.agent, d.amount, at, hour), d.deal_id
    assert set(dwd.column("city").to_pylist()) <= CITIES

    dws = wh.table("dws", "dws_city_minute")
    keys = list(zip(micros(dws.column("window_start")), dws.column("city").to_pylist()))
    assert len(keys) == len(set(keys)), "a window was emitted twice"
    got = {k: (e, n, g, a) for k, e, n, g, a in zip(keys, micros(dws.column("window_end")),
                                                   dws.column("deals").to_pylist(), dws.column("gmv").to_pylist(),
                                                   dws.column("agents").to_pylist())}
    expected = {k: (k[0] + MINUTE, len(ds), sum(d.amount for d in ds), len({d.agent for d in ds}))
                for k, ds in want.items()}
    assert got == expected
    # Disorder stayed within the delay, restarts included: nothing was late.
    assert wh.count("dws", "dws_city_minute_late") == 0
    check_txn_versions(wh)


def check_txn_versions(wh: LayeredWarehouse) -> None:
    """Each table's txn version (appId = its layer) is the newest epoch
    whose manifest has rows for it (an epoch that adds nothing to a table
    makes no commit): the last epoch was neither lost nor committed under
    another number."""
    newest: dict = {}
    for epoch, manifest in sorted(wh.manifests().items()):
        for sink in manifest["sinks"]:
            if sink_rows(sink) > 0:
                newest[(sink_path(sink), sink["app_id"])] = epoch
    names = {path.name for path, _ in newest}
    assert {"ods_deals", "dwd_deals", "dws_city_minute"} <= names, names
    for (path, app_id), epoch in newest.items():
        assert wh.txn_version(path, app_id) == epoch, f"{path.name}: txn version vs manifest epoch {epoch}"


def test_a_three_layer_chain_is_exactly_once_across_sigkills(tmp_path, strata_bin, kafka, rng):
    topic = unique("deals")
    create_topic(kafka, topic, partitions=PARTITIONS)
    deals = disordered_deals(24_000, rng, step_us=100_000, jitter_us=5 * SECOND)
    wh = warehouse(tmp_path, kafka, topic)
    thread, failure = produce_in_background(kafka, topic, as_sent(deals, PARTITIONS), chunk=1_000, pause=0.4)
    strata = Strata(strata_bin, wh)
    at_kill = strata.kill_at_random_moments(
        rng, 6, (1.0, 3.0), until=thread,
        observe=lambda: (wh.count("ods", "ods_deals"), wh.count("dwd", "dwd_deals"),
                         wh.count("dws", "dws_city_minute")))
    thread.join()
    assert not failure, failure
    # The kills landed mid-stream, with all three tables part-written.
    assert sum(1 for o, d, s in at_kill if 0 < o < len(deals) and 0 < d and 0 < s) >= 3, at_kill
    print(f"kills={len(at_kill)} (ods, dwd, dws) rows at each kill: {at_kill}")
    finish_and_check(wh, strata, kafka, topic, deals)


class Producer:
    """Deals produced in chunks until stopped; `sent` is what was sent."""

    def __init__(self, kafka: str, topic: str, rng, chunk: int = 400, pause: float = 0.3):
        self.sent = []
        self.errors: list[Exception] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, args=(kafka, topic, rng, chunk, pause))
        self.thread.start()

    def run(self, kafka, topic, rng, chunk, pause):
        try:
            while not self.stopping.is_set():
                deals = disordered_deals(chunk, rng, step_us=100_000, jitter_us=5 * SECOND, first=len(self.sent))
                produce(kafka, topic, as_sent(deals, PARTITIONS))
                self.sent.extend(deals)
                self.stopping.wait(pause)
        except Exception as e:  # reported by the test
            self.errors.append(e)

    def stop(self):
        self.stopping.set()
        self.thread.join()
        assert not self.errors, self.errors


def test_a_crash_right_after_each_table_commit_recovers_exactly_once(tmp_path, strata_bin, kafka, rng):
    """For the n-th table of the epoch's manifest (ODS, its side tables,
    DWD, DWS, ...), the process aborts right after that table committed the
    epoch and before the next did; each restart recovers the half-committed
    epoch and goes on."""
    topic = unique("deals")
    create_topic(kafka, topic, partitions=PARTITIONS)
    wh = warehouse(tmp_path, kafka, topic)
    producer = Producer(kafka, topic, rng)
    strata = Strata(strata_bin, wh)
    crashed: dict[str, int] = {}  # table -> crashes right after its commit of an epoch with rows
    tables = None
    n = 1
    try:
        while tables is None or n <= len(tables):
            for _ in range(6):
                epochs = sorted(wh.manifests())
                crash_at = (epochs[-1] if epochs else 0) + 3
                point = f"after_table_commit_{n}:{crash_at}"
                strata.start(STRATA_FAILPOINT=point)
                rc = strata.wait(90)
                log = (wh.dir / f"strata-{strata.runs}.log").read_text(errors="replace")
                assert rc != 0 and f"STRATA_FAILPOINT {point} reached" in log, (rc, log[-3000:])
                sinks = wh.manifests()[crash_at]["sinks"]
                tables = [sink_path(s).name for s in sinks]
                # The n-th table holds the epoch if it added rows to it (tables
                # commit concurrently: the others may or may not); a table
                # the epoch left empty got no commit.
                for i, sink in enumerate(sinks, start=1):
                    version = wh.txn_version(sink_path(sink), sink["app_id"])
                    assert version is None or version <= crash_at, (tables[i - 1], version)
                    if sink_rows(sink) == 0:
                        assert version is None or version < crash_at, \
                            f"{tables[i - 1]} (table {i}) committed an epoch that added nothing to it"
                    elif i == n:
                        assert version == crash_at, f"{tables[i - 1]} (table {i}) at crash after {n}: {version}"
                table = tables[n - 1]
                if sink_rows(sinks[n - 1]) > 0:
                    crashed[table] = crashed.get(table, 0) + 1
                    break
                if re.search(r"_(dead_letter|late|future|rejected)$", table):
                    break  # a side table may stay empty: one crash after it is enough
                # A main table without rows in that epoch: crash again, later.
            n += 1
    finally:
        producer.stop()
    print(f"tables in commit order: {tables}; crashes after a commit with rows: {crashed}")
    # The crashes that matter happened: right after ODS, DWD and DWS each
    # committed rows, with later tables of the epoch still to commit (or,
    # after the last table, with everything committed and nothing else).
    assert {"ods_deals", "dwd_deals", "dws_city_minute"} <= set(crashed), crashed
    finish_and_check(wh, strata, kafka, topic, producer.sent)
