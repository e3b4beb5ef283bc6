"""Operating Strata: a real Prometheus scrapes a running quickstart
`strata run`; the shipped alert rules fire when the broker goes away and
resolve when it is back; `/readyz` follows; `strata status` reports the
running and the stopped warehouse.

Needs: Debian's `prometheus` package (promtool and the server), and for the
alert test a broker of the test's own on sqlite storage (it is stopped and
started again).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

import pytest
import yaml
from adbc_driver_flightsql import dbapi as flight_sql

from conftest import (
    Sent, Strata, Warehouse, _STARTED, create_topic, free_port, is_valid, make_records, produce,
    unique, wait_until,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "strata-rules.yml"
QUICKSTART = REPO / "examples" / "quickstart" / "warehouse.yaml"
# The heartbeat and broker rules, made short enough for a test.
TEST_FOR = "3s"
TEST_HEARTBEAT_SECONDS = 5


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


class Quickstart:
    """The quickstart warehouse file, copied with its own ports, topic and
    storage root, run as `strata run`."""

    def __init__(self, tmp: pathlib.Path, bootstrap: str):
        self.dir = tmp / "quickstart"
        self.dir.mkdir(parents=True)
        self.path = self.dir / "warehouse.yaml"
        self.topic = unique("deals")
        self.metrics_port = free_port()
        self.env = {
            "STRATA_STORAGE_ROOT": str(self.dir / "data"),
            "KAFKA_BOOTSTRAP": bootstrap,
            "DEALS_TOPIC": self.topic,
            "STRATA_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
        }
        text = QUICKSTART.read_text()
        assert "\nserve:" not in text
        # Its own Flight SQL port: tests may run beside other servers.
        self.flight_port = free_port()
        self.path.write_text(text + f"\nserve:\n  listen: 127.0.0.1:{self.flight_port}\n")
        # `Strata` runs a `Warehouse`; only its dir and path are used.
        self.warehouse = Warehouse.__new__(Warehouse)
        self.warehouse.dir = self.dir
        self.warehouse.path = self.path

    def ods_rows(self) -> int:
        from deltalake import DeltaTable
        path = self.dir / "data" / "ods" / "ods_deals"
        if not (path / "_delta_log").exists():
            return 0
        return DeltaTable(str(path)).to_pyarrow_table(columns=["deal_id"]).num_rows

    def manifest_epochs(self) -> list[int]:
        d = self.dir / "data" / "_strata" / "checkpoints" / "quickstart"
        return sorted(int(p.stem) for p in d.glob("*.json")) if d.exists() else []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def status(self, strata_bin: str) -> dict:
        out = subprocess.run(
            [strata_bin, "status", str(self.path), "--json"],
            capture_output=True, text=True, timeout=60, env={**os.environ, **self.env},
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


class Prometheus:
    """A Prometheus server scraping one target, with the shipped rules
    templated to test-sized thresholds."""

    def __init__(self, tmp: pathlib.Path, target: str):
        self.dir = tmp / "prometheus"
        self.dir.mkdir()
        self.port = free_port()
        rules = yaml.safe_load(RULES.read_text())
        for rule in rules["groups"][0]["rules"]:
            if rule["alert"] in ("StrataHeartbeatMissing", "StrataSourceBrokerUnreachable"):
                rule["for"] = TEST_FOR
            if rule["alert"] == "StrataHeartbeatMissing":
                assert "> 30" in rule["expr"]
                rule["expr"] = rule["expr"].replace("> 30", f"> {TEST_HEARTBEAT_SECONDS}")
        (self.dir / "rules.yml").write_text(yaml.safe_dump(rules))
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [{"job_name": "strata", "static_configs": [{"targets": [target]}]}],
        }))

    def start(self) -> "Prometheus":
        log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        _STARTED.append(self.proc)
        wait_until(lambda: http_get(self.api("/-/ready"))[0] == 200, 60, "Prometheus to be ready")
        return self

    def api(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def query(self, expr: str) -> list[dict]:
        status, body = http_get(self.api("/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        assert status == 200, body
        return json.loads(body)["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def firing(self) -> set[str]:
        status, body = http_get(self.api("/api/v1/alerts"))
        assert status == 200, body
        return {a["labels"]["alertname"] for a in json.loads(body)["data"]["alerts"] if a["state"] == "firing"}

    def target_up(self) -> bool:
        return self.value('up{job="strata"}') == 1.0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def test_promtool_accepts_the_shipped_rules():
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: install Debian's `prometheus` package (scripts/test does)")
    out = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 8 rules found" in out.stdout, out.stdout


def test_prometheus_scrapes_alerts_fire_and_resolve(tmp_path, strata_bin, own_broker, rng):
    qs = Quickstart(tmp_path, own_broker.bootstrap)
    create_topic(own_broker.bootstrap, qs.topic, partitions=2)
    records = make_records(1500, 2, malformed_every=50, rng=rng)
    # Two paid deals after every other record's minute, one per partition: the
    # watermark stops 10 s behind them, so their minute stays open and the
    # windowed layer holds state whatever the seed made of the rest.
    records += [Sent(key=f"open{p}".encode(), partition=p, value=json.dumps({
        "deal_id": f"d9999999{p}", "event_type": "paid", "amount": "100.00", "city": "beijing",
        "event_time": "2026-11-01T00:00:30Z"}).encode()) for p in (0, 1)]
    sent = produce(own_broker.bootstrap, qs.topic, records)
    valid = [s for s in sent if is_valid(s)]
    event_times = {}
    for s in valid:
        t = datetime.fromisoformat(json.loads(s.value)["event_time"].replace("Z", "+00:00")).timestamp()
        event_times[s.partition] = max(event_times.get(s.partition, 0), t)

    prom = Prometheus(tmp_path, f"127.0.0.1:{qs.metrics_port}").start()
    strata = Strata(strata_bin, qs.warehouse).start(**qs.env)
    try:
        wait_until(lambda: (strata.assert_alive(), qs.ods_rows() == len(valid))[1], 120, "every valid row in ODS")
        # What Prometheus scraped agrees with the table and with what was produced.
        wait_until(lambda: prom.value('strata_layer_rows_in_total{layer="ods_deals"}') == len(valid),
                   60, "rows in, as scraped")
        assert qs.ods_rows() == len(valid)
        wait_until(lambda: prom.value('strata_table_rows_added_total{table="ods_deals"}') == len(valid),
                   30, "ODS table rows, as scraped")
        wait_until(lambda: prom.value('sum(strata_layer_side_rows_total{layer="ods_deals",side="dead_letter"})')
                   == len(sent) - len(valid), 30, "dead letters, as scraped")
        lags = prom.query('strata_source_lag_records{source="ods_deals"}')
        assert sorted(int(r["metric"]["partition"]) for r in lags) == [0, 1], lags
        wait_until(lambda: prom.value('sum(strata_source_lag_records{source="ods_deals"})') == 0, 30,
                   "the lag to reach zero")
        assert prom.value('max(strata_source_lag_seconds{source="ods_deals"})') == 0
        watermark = prom.value('strata_layer_watermark_timestamp_seconds{layer="ods_deals"}')
        assert min(event_times.values()) - 60 <= watermark <= max(event_times.values()), watermark
        delay = prom.value('strata_layer_watermark_delay_seconds{layer="ods_deals"}')
        now = datetime.now().timestamp()
        assert abs(delay - (now - watermark)) < 30, (delay, now, watermark)
        epoch = prom.value('strata_dataflow_last_epoch{dataflow="quickstart"}')
        assert epoch is not None and epoch >= 1
        assert prom.value('sum(strata_epoch_duration_seconds_count)') >= 1
        assert prom.value('sum(strata_epoch_commit_duration_seconds_count)') >= 1
        assert prom.value('strata_table_version{table="ods_deals"}') >= 1
        assert prom.value('strata_source_broker_up{source="ods_deals"}') == 1
        # Every record fetched, malformed ones too, per partition.
        for p in (0, 1):
            assert prom.value(f'strata_source_records_total{{source="ods_deals",partition="{p}"}}') == \
                sum(s.partition == p for s in sent)
        assert prom.value('sum(strata_source_records_per_second{source="ods_deals"})') > 0
        assert prom.value('strata_layer_rows_in_per_second{layer="ods_deals"}') > 0
        # Every layer reports its state's size (the windowed layer's empties
        # once the watermark closes its minutes); the ODS layer keeps none.
        for layer in ("ods_deals", "dwd_deals", "dws_city_minute"):
            assert prom.value(f'strata_layer_state_bytes{{layer="{layer}"}}') is not None, layer
        assert prom.value('max_over_time(strata_layer_state_bytes{layer="ods_deals"}[10m])') == 0
        # ... and a size, not only a series: the windowed layer held its open
        # minutes' rows at some scrape (the last minute stays open behind the
        # watermark's delay).
        wait_until(lambda: (prom.value('max_over_time(strata_layer_state_bytes{layer="dws_city_minute"}[10m])') or 0) > 0,
                   30, "the windowed layer's state size, as scraped")
        assert prom.value('max_over_time(strata_layer_state_rows{layer="dws_city_minute"}[10m])') > 0
        assert prom.value('strata_lease_held') == 1
        assert prom.value('strata_lease_lost_total') == 0
        assert 0 <= prom.value('strata_lease_renewal_age_seconds') < 15
        assert prom.value('process_resident_memory_bytes{job="strata"}') > 1e6
        assert prom.value('process_open_fds{job="strata"}') > 3
        # Memory split: without the executable's pages, and jemalloc's own
        # figures (registered by the binary): what the program holds is
        # resident, and less than the process's RSS.
        rss = prom.value('process_resident_memory_bytes{job="strata"}')
        assert 1e6 < prom.value('strata_resident_anonymous_bytes{job="strata"}') < rss
        allocated = prom.value('strata_heap_allocated_bytes{job="strata"}')
        assert 1e6 < allocated <= prom.value('strata_heap_resident_bytes{job="strata"}')
        assert http_get(qs.url("/healthz"))[0] == 200
        wait_until(lambda: http_get(qs.url("/readyz"))[0] == 200, 30, "/readyz to be ready")

        # Flight SQL calls are counted by outcome and code.
        with flight_sql.connect(f"grpc://127.0.0.1:{qs.flight_port}", autocommit=True) as conn:
            cur = conn.cursor()
            cur.execute("SELECT count(*) AS n FROM ods.ods_deals")
            assert cur.fetchall()[0][0] == len(valid)
            with pytest.raises(Exception):
                cur.execute("SELEC nonsense")
            cur.close()
        wait_until(lambda: (prom.value('sum(strata_flight_sql_requests_total{outcome="error",code="INVALID_ARGUMENT"})') or 0) >= 1,
                   30, "the failed query, as scraped")
        wait_until(lambda: (prom.value('sum(strata_flight_sql_requests_total{outcome="ok"})') or 0) >= 2,
                   30, "the good query's calls, as scraped")
        # A query failing after its first batches (a division by zero in a
        # later batch): its DoGet stream ends with the error's code.
        with flight_sql.connect(f"grpc://127.0.0.1:{qs.flight_port}", autocommit=True) as conn:
            cur = conn.cursor()
            with pytest.raises(Exception, match="(?i)divide by zero|division by zero"):
                cur.execute("SELECT 1 / (v - 60000) AS x FROM generate_series(1, 100000) AS t(v)")
                cur.fetchall()
            cur.close()
        wait_until(lambda: (prom.value('sum(strata_flight_sql_requests_total{method="DoGet",outcome="error"})') or 0) >= 1,
                   30, "the stream that failed midway, as scraped")
        assert (prom.value('sum(strata_flight_sql_requests_total{method="DoGet",outcome="error",code="OK"})') or 0) == 0
        assert prom.value('strata_flight_sql_requests_active') == 0
        assert prom.firing() == set(), prom.firing()

        # The broker goes away: the sources cannot reach it, the dataflow's
        # heartbeat stops, the alerts fire within their `for:`, /readyz fails.
        own_broker.stop()
        wait_until(lambda: {"StrataSourceBrokerUnreachable", "StrataHeartbeatMissing"} <= prom.firing(),
                   TEST_HEARTBEAT_SECONDS + 3 + 20, "the broker and heartbeat alerts to fire")
        wait_until(lambda: http_get(qs.url("/readyz"))[0] == 503, 30, "/readyz to turn unready")
        assert "no progress" in http_get(qs.url("/readyz"))[1]
        strata.assert_alive()

        own_broker.start()
        wait_until(lambda: http_get(qs.url("/readyz"))[0] == 200, 60, "/readyz to be ready again")
        wait_until(lambda: not (prom.firing() & {"StrataSourceBrokerUnreachable", "StrataHeartbeatMissing"}),
                   60, "the alerts to resolve")
        assert prom.target_up()
    finally:
        prom.stop()
        if strata.running():
            strata.stop()


def test_status_of_a_running_and_a_stopped_warehouse(tmp_path, strata_bin, kafka, rng):
    qs = Quickstart(tmp_path, kafka)
    create_topic(kafka, qs.topic, partitions=2)
    sent = produce(kafka, qs.topic, make_records(400, 2, malformed_every=40, rng=rng))
    valid = sum(map(is_valid, sent))

    before = qs.status(strata_bin)
    assert before["running"] is False
    assert [l["last_epoch"] for l in before["layers"]] == [None, None, None]

    strata = Strata(strata_bin, qs.warehouse).start(**qs.env)
    wait_until(lambda: (strata.assert_alive(), qs.ods_rows() == valid)[1], 120, "every valid row in ODS")
    wait_until(lambda: http_get(qs.url("/readyz"))[0] == 200, 30, "/readyz")

    def settled():
        s = qs.status(strata_bin)
        ods = s["layers"][0]
        return s if s["running"] and ods["lag_records"] == 0 and ods["last_epoch"] == max(qs.manifest_epochs()) else None

    running = wait_until(settled, 30, "status of the running warehouse to show it caught up")
    by_layer = {l["layer"]: l for l in running["layers"]}
    assert set(by_layer) == {"ods_deals", "dwd_deals", "dws_city_minute"}
    for layer in by_layer.values():
        assert layer["status"] == "running"
        assert layer["last_epoch"] == max(qs.manifest_epochs())
        assert 0 <= layer["last_epoch_age_seconds"] < 600
    assert by_layer["ods_deals"]["watermark"] is not None
    assert by_layer["dwd_deals"]["lag_records"] is None  # it reads a layer, not a topic
    # Rates over the last minute (the rows came in within it).
    assert by_layer["ods_deals"]["rows_per_second"] > 0
    assert by_layer["ods_deals"]["side_rows_per_second"]["dead_letter"] > 0
    assert by_layer["dwd_deals"]["side_rows_per_second"]["rejected"] > 0
    assert all(l["backfill"] is False for l in by_layer.values())

    assert strata.stop() == 0, strata.log()[-3000:]
    more = make_records(37, 2, malformed_every=0, rng=rng, first=400)
    # nisshi's memory storage answers a ListOffsets(latest) with the base
    # offset of a partition's last batch + 1: so the last record of each
    # partition goes in a batch of its own (a broker bug, worked around here).
    produce(kafka, qs.topic, more[:-2])
    produce(kafka, qs.topic, more[-2:])
    stopped = qs.status(strata_bin)
    assert stopped["running"] is False
    ods = stopped["layers"][0]
    assert ods["status"] == "stopped"
    assert ods["last_epoch"] == max(qs.manifest_epochs())
    # The records produced while it was stopped are the lag.
    assert ods["lag_records"] == len(more)
    assert ods["rows_per_second"] is None and ods["side_rows_per_second"] is None
    text = subprocess.run([strata_bin, "status", str(qs.path)], capture_output=True, text=True,
                          env={**os.environ, **qs.env}, timeout=60)
    assert text.returncode == 0 and "ods_deals" in text.stdout and "stopped" in text.stdout, text
