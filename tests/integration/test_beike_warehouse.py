"""The reference warehouse (examples/beike), end to end: `strata gen beike`
-> all twelve layers of `strata run` -> ADS tables and the dashboard.

The generator runs with every kind of trouble (malformed, late,
future-dated and duplicated records). The test reads back every record the
broker holds and computes, in plain Python, what each table must hold: the
malformed ones in the dead-letter tables, the future ones in the future
tables, the late ones in the late tables, duplicates once; the DWS and ADS
numbers from the rest. Then the dashboard is rendered by headless Chromium
and its numbers compared with the same ADS queries over ADBC.
"""

from __future__ import annotations

import html
import json
import os
import pathlib
import re
import shutil
import signal
import struct
import subprocess
import time
import urllib.request
import zlib
from collections import Counter, defaultdict
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

import adbc_driver_flightsql.dbapi as flight_sql
import pytest
from confluent_kafka import Producer
from deltalake import DeltaTable

from conftest import free_port, unique, wait_until
from layered import consume

ROOT = pathlib.Path(__file__).resolve().parents[2]
WAREHOUSE = ROOT / "examples" / "beike" / "warehouse.yaml"
PARTITIONS = 4
US = 1_000_000
MINUTE, HOUR, DAY = 60 * US, 3600 * US, 86400 * US


def to_us(ts: str) -> int:
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return int(dt.timestamp()) * US + dt.microsecond


def iso(us: int) -> str:
    return datetime.fromtimestamp(us / US, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def raw_records(bootstrap: str, topic: str) -> list[bytes]:
    return [m.value() for m in consume(bootstrap, topic, PARTITIONS)]


def decode(raw: bytes, number: str, parse) -> dict | None:
    """A record as the ODS decoder must read it, or None if malformed."""
    try:
        v = json.loads(raw)
        if not isinstance(v, dict) or "event_time" not in v:
            return None
        v[number] = parse(v[number])
        v["ts"] = to_us(v["event_time"])
        return v
    except (ValueError, KeyError, TypeError, InvalidOperation):
        return None


def table(root: pathlib.Path, kind: str, name: str):
    path = root / kind / name
    if not (path / "_delta_log").exists():
        return []
    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def ts_us(v) -> int:
    return int(v.timestamp()) * US + v.microsecond


def day_start(us: int) -> int:
    return us - us % DAY


def png_pixels(path: pathlib.Path) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, rows, prev = zlib.decompress(idat), [], bytearray(width * bpp)
    stride = width * bpp
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


@pytest.fixture(scope="module")
def beike(tmp_path_factory, strata_bin, kafka):
    """Runs the generator and the warehouse; yields what the tests need."""
    work = tmp_path_factory.mktemp("beike")
    root = work / "data"
    prefix = unique("beike") + "_"
    flight_port, page_port = free_port(), free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP=kafka, STRATA_STORAGE_ROOT=str(root), BEIKE_TOPIC_PREFIX=prefix,
               STRATA_FLIGHT_LISTEN=f"127.0.0.1:{flight_port}", STRATA_DASHBOARD=f"127.0.0.1:{page_port}")
    # Simulated history: 2 h 20 min of event time ending 1 h ago, 200 s of
    # event time per second of wall time, so late records are late.
    wall = int(time.time()) * US
    start = wall - 3 * HOUR - 20 * MINUTE
    count = 42_000
    gen = subprocess.Popen(
        [strata_bin, "--log-format", "json", "gen", "beike", "--topic", prefix, "--dims", str(root / "dims"),
         "--count", str(count), "--rate", "1000", "--start", iso(start), "--step-ms", "200",
         "--partitions", str(PARTITIONS), "--malformed", "0.005", "--late", "0.004", "--future", "0.002",
         "--duplicates", "0.01", "--seed", "7"],
        env=env, stdout=subprocess.PIPE, stderr=open(work / "gen.log", "w"))
    wait_until(lambda: (root / "dims" / "agents" / "_delta_log").exists(), 30, "the dimension tables")
    run_log = open(work / "run.log", "w")
    run = subprocess.Popen([strata_bin, "--log-format", "json", "run", str(WAREHOUSE)], env=env,
                           stdout=run_log, stderr=run_log)
    try:
        out, _ = gen.communicate(timeout=240)
        assert gen.returncode == 0, (work / "gen.log").read_text()[-2000:]
        summary = json.loads(out.decode().strip().splitlines()[-1])
        end = start + count * 200_000
        # Heartbeats on every partition of both topics, an event type DWD
        # rejects, dated after the end of the last event's hour: the
        # watermark passes every window that holds an event (the hourly
        # ones included).
        last_hour = end - end % HOUR + HOUR
        beat = last_hour + MINUTE
        producer = Producer({"bootstrap.servers": kafka})
        for topic, record in [
            (f"{prefix}deals", {"deal_id": "HB", "event_type": "heartbeat", "amount": "1", "agent_id": "-",
                                "event_time": iso(beat)}),
            (f"{prefix}itineraries", {"event_id": "HB", "event_type": "heartbeat", "agent_id": "-",
                                      "duration_min": 0, "event_time": iso(beat)}),
        ]:
            for p in range(PARTITIONS):
                producer.produce(topic, json.dumps(record).encode(), partition=p)
        producer.flush(30)
        last_minute = end - end % MINUTE + MINUTE

        def caught_up():
            stores = table(root, "ads", "ads_top_stores_today")
            hours = table(root, "dws", "dws_agent_hour")
            return (stores and max(ts_us(r["window_end"]) for r in stores) >= last_minute
                    and hours and max(ts_us(r["window_end"]) for r in hours) >= last_hour)
        wait_until(caught_up, 180, "the ADS layers to pass the last event", interval=1.0)
        time.sleep(3)  # the epoch after: nothing more may come
        yield {"root": root, "kafka": kafka, "prefix": prefix, "summary": summary, "wall": wall,
               "flight": f"grpc://127.0.0.1:{flight_port}", "page": f"http://127.0.0.1:{page_port}/",
               "work": work}
    finally:
        gen.kill()
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()


@pytest.fixture(scope="module")
def deals(beike):
    raw = raw_records(beike["kafka"], f"{beike['prefix']}deals")
    return raw, [decode(r, "amount", Decimal) for r in raw]


@pytest.fixture(scope="module")
def itineraries(beike):
    raw = raw_records(beike["kafka"], f"{beike['prefix']}itineraries")
    return raw, [decode(r, "duration_min", int) for r in raw]


def split(beike, records, kind, ods):
    """Every record is in exactly one of: the dead-letter table, the future
    table, the ODS table; returns the ODS rows (decoded)."""
    root = beike["root"]
    raw, decoded = records
    malformed = sum(1 for d in decoded if d is None)
    future = [d for d in decoded if d is not None and d["ts"] > beike["wall"] + HOUR]
    kept = [d for d in decoded if d is not None and d["ts"] <= beike["wall"] + HOUR]
    assert len(table(root, "ods", f"{ods}_dead_letter")) == malformed
    assert len(table(root, "ods", f"{ods}_future")) == len(future)
    assert len(table(root, "ods", ods)) == len(kept)
    assert malformed > 0 and future
    return kept


def test_every_record_lands_once_and_duplicates_are_merged(beike, deals):
    root = beike["root"]
    kept = split(beike, deals, "deals", "ods_deals")
    real = [d for d in kept if d["event_type"] != "heartbeat"]
    assert len(table(root, "dwd", "dwd_deals_rejected")) == len(kept) - len(real)
    copies = Counter((d["deal_id"], d["event_type"]) for d in real)
    late = Counter((r["deal_id"], r["event_type"]) for r in table(root, "dwd", "dwd_deals_late"))
    dwd = {(r["deal_id"], r["event_type"]): r["copies"] for r in table(root, "dwd", "dwd_deals")}
    expected = {k: n - late[k] for k, n in copies.items() if n > late[k]}
    assert dwd == expected
    assert any(n == 2 for n in dwd.values()), "no duplicate was merged"
    assert sum(late.values()) > 0, "no late deal was recognised as late"
    wide = table(root, "dwd", "dwd_deals_wide")
    assert len(wide) == len(dwd)
    names = {r["city_id"]: r["city_name"] for r in table(root, "dims", "cities")}
    by_key = {(d["deal_id"], d["event_type"]): d for d in real}
    for r in wide:
        sent = by_key[(r["deal_id"], r["event_type"])]
        assert (r["store_id"], r["city_id"], r["city_name"]) == (sent["store_id"], sent["city"], names[sent["city"]])
        assert r["agent_name"] and r["store_name"]


def wide_rows(root, late_table):
    late = Counter((r["deal_id"], r["event_type"]) for r in table(root, *late_table)) if late_table else Counter()
    return [r for r in table(root, "dwd", "dwd_deals_wide") if not late[(r["deal_id"], r["event_type"])]]


def test_dws_store_minute_equals_the_reference(beike, deals):
    root = beike["root"]
    expected = defaultdict(lambda: [Decimal(0), 0, 0, 0, 0])
    for r in wide_rows(root, ("dws", "dws_store_minute_late")):
        t = ts_us(r["event_time"])
        e = expected[(t - t % MINUTE, r["store_id"])]
        kinds = ["paid", "created", "signed", "cancelled"]
        e[1 + kinds.index(r["event_type"])] += 1
        if r["event_type"] == "paid":
            e[0] += r["amount"]
    got = {(ts_us(r["window_start"]), r["store_id"]): [r["gmv"], r["paid_deals"], r["created_deals"],
                                                      r["signed_deals"], r["cancelled_deals"]]
           for r in table(root, "dws", "dws_store_minute")}
    assert got == dict(expected)


def test_ads_city_gmv_equals_the_reference(beike, deals):
    root = beike["root"]
    expected = defaultdict(lambda: [Decimal(0), 0])
    for r in wide_rows(root, None):
        if r["event_type"] == "paid":
            e = expected[(r["event_day"], r["city_name"])]
            e[0] += r["amount"]
            e[1] += 1
    got = {(r["event_day"], r["city_name"]): [r["gmv"], r["paid_deals"]]
           for r in table(root, "ads", "ads_city_gmv_today")}
    assert got == dict(expected) and len(got) >= 6


@pytest.mark.parametrize("layer,key,name", [("ads_top_stores_today", "store_id", "store_name"),
                                            ("ads_top_agents_today", "agent_id", "agent_name")])
def test_cumulative_top_10_equals_the_reference(beike, deals, layer, key, name):
    root = beike["root"]
    paid = [r for r in wide_rows(root, ("ads", f"{layer}_late")) if r["event_type"] == "paid"]
    got = defaultdict(list)
    for r in table(root, "ads", layer):
        got[ts_us(r["window_end"])].append((r["rank"], r[key], r["gmv"], r["paid_deals"]))
    assert len(got) > 100
    for end, rows in got.items():
        since = day_start(end - 1)
        sums = defaultdict(lambda: [Decimal(0), 0])
        for r in paid:
            if since <= ts_us(r["event_time"]) < end:
                sums[r[key]][0] += r["amount"]
                sums[r[key]][1] += 1
        top = sorted(sums.items(), key=lambda kv: (-kv[1][0], kv[0]))[:10]
        assert sorted(rows) == [(i + 1, k, g, n) for i, (k, (g, n)) in enumerate(top)], iso(end)


def test_itineraries_per_agent_hour_and_behind_target(beike, itineraries):
    root = beike["root"]
    kept = [d for d in split(beike, itineraries, "itineraries", "ods_itineraries") if d["event_type"] != "heartbeat"]
    dwd = table(root, "dwd", "dwd_itineraries")
    assert len(dwd) == len(kept)
    late = {r["event_id"] for r in table(root, "dws", "dws_agent_hour_late")}
    expected = defaultdict(lambda: [0, 0, set()])
    for d in kept:
        if d["event_id"] in late:
            continue
        e = expected[(d["ts"] - d["ts"] % HOUR, d["agent_id"])]
        e[0] += d["event_type"] == "showing_finished"
        e[1] += d["event_type"] == "client_visit"
        e[2].add(d["client_id"])
    got = {(ts_us(r["window_start"]), r["agent_id"]): [r["showings"], r["client_visits"], r["client_uv"]]
           for r in table(root, "dws", "dws_agent_hour")}
    assert got == {k: [a, b, len(c)] for k, (a, b, c) in expected.items()}

    targets = {r["agent_id"]: r["daily_showing_target"] for r in table(root, "dims", "agents")}
    late = {r["event_id"] for r in table(root, "ads", "ads_agents_behind_target_late")}
    on_time = [d for d in kept if d["event_id"] not in late]
    behind = defaultdict(dict)
    for r in table(root, "ads", "ads_agents_behind_target"):
        behind[ts_us(r["window_end"])][r["agent_id"]] = (r["showings"], round(r["behind_by"], 6))
    assert behind
    for end, rows in behind.items():
        since = day_start(end - 1)
        shows = defaultdict(int)
        for d in on_time:
            if since <= d["ts"] < end:
                shows[d["agent_id"]] += d["event_type"] == "showing_finished"
        hours = min(max((end - since) / HOUR - 8.0, 0.0), 10.0)
        want = {a: (n, round(targets[a] * hours / 10.0 - n, 6)) for a, n in shows.items()
                if n < targets[a] * hours / 10.0}
        assert rows == want, iso(end)


def adbc_rows(url: str, sql: str) -> tuple[list[str], list[tuple]]:
    with flight_sql.connect(url, autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute(sql)
        rows = [tuple(r) for r in cur.fetchall()]
        return [d[0] for d in cur.description], rows


def panel_values(dom: str, panel: int) -> list[tuple[str, str]]:
    section = re.search(rf'<section id="panel-{panel}"[^>]*data-state="ok"[^>]*>(.*?)</section>', dom, re.S)
    assert section, f"panel {panel} did not render rows"
    return [(html.unescape(a), html.unescape(b))
            for a, b in re.findall(r'class="datum" data-label="([^"]*)" data-value="([^"]*)"', section.group(1))]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("chromium is not installed: scripts/test installs it (apt: chromium)")


def test_dashboard_renders_the_ads_numbers_in_headless_chromium(beike):
    browser = chromium()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=10000"]
    dom = subprocess.run(flags + ["--dump-dom", beike["page"]], capture_output=True, timeout=120, text=True).stdout
    with urllib.request.urlopen(beike["page"] + "api/config", timeout=30) as response:
        config = json.load(response)
    assert len(config["panels"]) == 6
    for i, panel in enumerate(config["panels"]):
        shown = panel_values(dom, i)
        cols, rows = adbc_rows(beike["flight"], panel["sql"])
        assert shown, panel["title"]
        li, vi = cols.index(panel["label"]), cols.index(panel["value"])
        want = [(str(r[li]), r[vi]) for r in rows]
        assert [s[0] for s in shown] == [w[0] for w in want], panel["title"]
        for (_, got), (_, value) in zip(shown, want):
            assert Decimal(got) == Decimal(str(value)), panel["title"]

    shot = beike["work"] / "dashboard.png"
    subprocess.run(flags + ["--window-size=1280,1100", f"--screenshot={shot}", beike["page"]],
                   capture_output=True, timeout=120)
    width, bpp, rows = png_pixels(shot)
    # The bar charts' blue (#2f6fdf) and the line charts' orange (#e8590c).
    blue = orange = 0
    for row in rows:
        for x in range(0, width * bpp, bpp):
            r, g, b = row[x], row[x + 1], row[x + 2]
            blue += abs(r - 0x2F) < 12 and abs(g - 0x6F) < 12 and abs(b - 0xDF) < 12
            orange += abs(r - 0xE8) < 12 and abs(g - 0x59) < 12 and abs(b - 0x0C) < 12
    assert blue > 20_000, f"{blue} bar pixels"
    assert orange > 500, f"{orange} line pixels"
