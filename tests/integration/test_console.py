"""The console page beside the dashboard: a running quickstart `strata run`
drawn by headless Chromium as a graph of sources, layers and tables, whose
numbers are the metrics endpoint's; and the dashboard server's access rule
(Flight SQL's): loopback only without users, a login with them.

Needs: Debian's `chromium` package (scripts/test installs it) and the
shared broker (memory storage).
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
import urllib.error
import urllib.request
from html.parser import HTMLParser

import pytest
import yaml

from conftest import Strata, create_topic, free_port, is_valid, make_records, produce, wait_until
from test_beike_warehouse import chromium, png_pixels
from test_metrics import QUICKSTART, Quickstart, http_get

PANEL_SQL = "SELECT city, count(*) AS deals FROM dwd.dwd_deals GROUP BY city"
USER, PASSWORD = "bi", "s3cretx"  # "bi:s3cretx" is 10 bytes: its base64 is padded


def dashboard_yaml(port: int, host: str = "127.0.0.1") -> str:
    return f"""
dashboard:
  listen: {host}:{port}
  title: Quickstart
  refresh: 1s
  panels:
    - {{title: Deals per city, chart: bar, label: city, value: deals, sql: "{PANEL_SQL}"}}
"""


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """The Prometheus text format, as the endpoint serves it."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        pairs = frozenset(
            tuple(p.split("=", 1)) for p in labels.rstrip("}").replace('"', "").split(",") if p
        )
        out[(name, pairs)] = float(value)
    return out


class Sample:
    """One scrape of the metrics endpoint."""

    def __init__(self, url: str):
        status, body = http_get(url)
        assert status == 200, body
        self.series = parse_metrics(body)

    def get(self, name: str, **labels: str) -> float | None:
        return self.series.get((name, frozenset(labels.items())))

    def total(self, name: str, **labels: str) -> float | None:
        values = [v for (n, ls), v in self.series.items()
                  if n == name and set(labels.items()) <= set(ls)]
        return sum(values) if values else None


class Nodes(HTMLParser):
    """The console's drawn nodes (`<g class="node ...">`) with the numbers
    they show (`data-metric` / `data-value`), and its edges."""

    def __init__(self, dom: str):
        super().__init__()
        self.nodes: dict[tuple[str, str], dict[str, str]] = {}
        self.edges: set[tuple[str, str]] = set()
        self.header: dict[str, str] = {}
        self._stack: list[tuple[str, tuple[str, str] | None]] = []
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        node = None
        if tag == "g" and "node" in (a.get("class") or "").split():
            kind = next(k for k in ("source", "layer", "table") if k in a["class"].split())
            node = (kind, a[f"data-{kind}"])
            self.nodes[node] = {}
        if tag == "path" and "data-from" in a:
            self.edges.add((a["data-from"], a["data-to"]))
        if "data-metric" in a:
            inside = next((n for _, n in reversed(self._stack) if n), None)
            (self.nodes[inside] if inside else self.header)[a["data-metric"]] = a["data-value"]
        self._stack.append((tag, node))

    def handle_endtag(self, tag):
        while self._stack:
            if self._stack.pop()[0] == tag:
                break


def shown(node: dict[str, str], metric: str) -> float | None:
    assert metric in node, (metric, node)
    return float(node[metric]) if node[metric] != "" else None


def browser_flags() -> list[str]:
    return [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--virtual-time-budget=5000"]


def test_console_draws_every_layer_with_the_metrics_endpoints_numbers(tmp_path, strata_bin, kafka, rng):
    qs = Quickstart(tmp_path, kafka)
    port = free_port()
    qs.path.write_text(qs.path.read_text() + dashboard_yaml(port))
    console = f"http://127.0.0.1:{port}/console"
    layers = [l["name"] for l in yaml.safe_load(QUICKSTART.read_text())["layers"]]
    create_topic(kafka, qs.topic, partitions=2)
    sent = produce(kafka, qs.topic, make_records(900, 2, malformed_every=30, rng=rng))
    valid = [s for s in sent if is_valid(s)]
    paid = sum(json.loads(s.value)["event_type"] == "paid" for s in valid)

    strata = Strata(strata_bin, qs.warehouse).start(**qs.env)
    try:
        wait_until(lambda: (strata.assert_alive(), qs.ods_rows() == len(valid))[1], 120, "every valid row in ODS")

        def caught_up():
            m = Sample(qs.url("/metrics"))
            return m if (m.get("strata_layer_rows_in_total", layer="ods_deals") == len(valid)
                         and m.total("strata_source_lag_records", source="ods_deals") == 0
                         and m.get("strata_layer_rows_in_total", layer="dwd_deals") == len(valid)) else None
        wait_until(caught_up, 60, "the metrics to show every layer caught up")

        # The page against the endpoint: both sampled while nothing moves
        # (the rows are in; only epochs may still tick).
        def data(m: Sample) -> dict:
            return {k: v for k, v in m.series.items()
                    if k[0].startswith(("strata_layer_", "strata_table_", "strata_source_"))
                    and not k[0].endswith(("_per_second", "_delay_seconds", "_contact_timestamp_seconds"))}

        def render():
            before = Sample(qs.url("/metrics"))
            out = subprocess.run(browser_flags() + ["--dump-dom", console],
                                 capture_output=True, text=True, timeout=120)
            after = Sample(qs.url("/metrics"))
            return (before, out.stdout, after) if data(before) == data(after) and "data-refreshes" in out.stdout else None
        before, dom, after = wait_until(render, 120, "a rendering while the numbers stood still", interval=1)
        nodes = Nodes(dom)

        # Every layer of the warehouse is drawn, wired as the plan wires it.
        assert sorted(n for k, n in nodes.nodes if k == "layer") == sorted(layers), nodes.nodes.keys()
        assert {("ods_deals", "ods_deals"), ("ods_deals", "dwd_deals"), ("dwd_deals", "dws_city_minute")} <= nodes.edges, nodes.edges
        # Its numbers are the endpoint's.
        for layer in layers:
            node = nodes.nodes[("layer", layer)]
            for metric, series in [("rows_in_total", "strata_layer_rows_in_total"),
                                   ("rows_out_total", "strata_layer_rows_out_total"),
                                   ("watermark", "strata_layer_watermark_timestamp_seconds"),
                                   ("state_bytes", "strata_layer_state_bytes")]:
                assert shown(node, metric) == before.get(series, layer=layer), (layer, metric, node)
            for table in [layer] + [f"{layer}_{s}" for s in ("dead_letter", "rejected") if ("table", f"{layer}_{s}") in nodes.nodes]:
                t = nodes.nodes[("table", table)]
                for metric, series in [("version", "strata_table_version"),
                                       ("last_commit", "strata_table_last_commit_timestamp_seconds"),
                                       ("rows_added_total", "strata_table_rows_added_total")]:
                    assert shown(t, metric) == before.get(series, table=table), (table, metric, t)
        ods = nodes.nodes[("layer", "ods_deals")]
        assert shown(ods, "lag_records") == before.total("strata_source_lag_records", source="ods_deals") == 0
        assert shown(nodes.nodes[("layer", "dwd_deals")], "lag_records") is None  # it reads a layer
        source = nodes.nodes[("source", "ods_deals")]
        assert shown(source, "records_total") == before.total("strata_source_records_total", source="ods_deals")
        assert shown(ods, "side_rows_total:dead_letter") == before.get(
            "strata_layer_side_rows_total", layer="ods_deals", side="dead_letter", table="ods_deals_dead_letter")
        assert (before.get("strata_dataflow_last_epoch", dataflow="quickstart")
                <= shown(nodes.header, "last_epoch")
                <= after.get("strata_dataflow_last_epoch", dataflow="quickstart"))
        # ... and those of what was produced.
        assert shown(ods, "rows_in_total") == len(valid)
        assert shown(ods, "side_rows_total:dead_letter") == len(sent) - len(valid)
        assert shown(nodes.nodes[("table", "ods_deals")], "rows_added_total") == len(valid)
        dwd = nodes.nodes[("layer", "dwd_deals")]
        assert shown(dwd, "rows_out_total") == paid
        assert shown(dwd, "side_rows_total:rejected") == len(valid) - paid

        # The JSON the page draws is served beside it.
        status, body = http_get(f"http://127.0.0.1:{port}/api/console")
        assert status == 200 and [l["name"] for l in json.loads(body)["layers"]] == layers

        shot = tmp_path / "console.png"
        subprocess.run(browser_flags() + ["--window-size=1400,900", f"--screenshot={shot}", console],
                       capture_output=True, timeout=120)
        assert shot.stat().st_size > 0
        width, bpp, rows = png_pixels(shot)
        # The layers' blue title bands (#2f6fdf), one per layer.
        blue = sum(abs(r[x] - 0x2F) < 12 and abs(r[x + 1] - 0x6F) < 12 and abs(r[x + 2] - 0xDF) < 12
                   for r in rows for x in range(0, width * bpp, bpp))
        assert blue > len(layers) * 200 * 18, f"{blue} band pixels"
    finally:
        if strata.running():
            assert strata.stop() == 0, strata.log()[-3000:]


def serve(strata_bin: str, qs: Quickstart) -> subprocess.Popen:
    from conftest import _STARTED
    log = open(qs.dir / "serve.log", "wb")
    proc = subprocess.Popen([strata_bin, "serve", str(qs.path)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **qs.env})
    _STARTED.append(proc)
    return proc


def get(url: str, auth: str | None = None) -> tuple[int, str, dict]:
    request = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), {k.lower(): v for k, v in e.headers.items()}


def test_dashboard_without_users_refuses_a_non_loopback_address(tmp_path, strata_bin, kafka):
    qs = Quickstart(tmp_path, kafka)
    port = free_port()
    qs.path.write_text(qs.path.read_text() + dashboard_yaml(port, host="0.0.0.0"))
    for command in ("serve", "run"):
        out = subprocess.run([strata_bin, command, str(qs.path)], capture_output=True, text=True,
                             timeout=60, env={**os.environ, **qs.env})
        assert out.returncode == 2, (command, out.stderr[-2000:])
        assert "serve.users" in out.stderr and "127.0.0.1" in out.stderr, out.stderr[-2000:]


def test_dashboard_with_users_asks_for_their_login(tmp_path, strata_bin, kafka):
    qs = Quickstart(tmp_path, kafka)
    port = free_port()
    # `serve:` is the file's last section: its users follow it.
    qs.path.write_text(qs.path.read_text() + f"  users:\n    - {{username: {USER}, password: {PASSWORD}}}\n"
                       + dashboard_yaml(port, host="0.0.0.0"))
    proc = serve(strata_bin, qs)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: (proc.poll() is None or pytest.fail((qs.dir / "serve.log").read_text()[-3000:]))
                   and http_get(base + "/console")[0] != 0, 60, "the dashboard to listen")
        padded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert padded.endswith("=")
        wrong = base64.b64encode(f"{USER}:nope".encode()).decode()
        for path in ("/", "/console", "/api/config", "/api/panels", "/api/console"):
            for auth in (None, f"Basic {wrong}", "Bearer abc"):
                status, body, headers = get(base + path, auth)
                assert status == 401, (path, auth, status)
                assert "Basic" in headers.get("www-authenticate", ""), headers
                assert "SELECT" not in body and "dwd_deals" not in body, body
        for auth in (f"Basic {padded}", f"Basic {padded.rstrip('=')}"):
            status, body, _ = get(base + "/api/config", auth)
            assert status == 200, (auth, body)
            assert json.loads(body)["panels"][0]["sql"] == PANEL_SQL
            status, body, _ = get(base + "/api/console", auth)
            assert status == 200, body
            assert [l["name"] for l in json.loads(body)["layers"]] == ["ods_deals", "dwd_deals", "dws_city_minute"]
            assert get(base + "/console", auth)[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
