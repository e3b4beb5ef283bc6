"""The reference warehouse (examples/beike), end to end: `strata gen beike`
-> all twelve layers of `strata run` -> ADS tables, then `strata serve` and
the dashboard.

The generator runs with every kind of trouble (malformed, late,
future-dated and duplicated records) and writes its truth file: what each
event is. Every table is compared with plain-Python references computed
from that (tests/integration/beike_reference.py), never from what Strata
put in its own tables: the malformed records in the dead-letter tables with
their bytes and positions, the future ones in the future tables, the late
deals in `dwd_deals_late` and nowhere else, duplicates once; every other
late table empty; DWS and ADS from the on-time records. Then the dashboard
is rendered by headless Chromium and its numbers compared with the same
queries over ADBC.

Late deals are 1-2 hours old: more event time than a fetched batch spans
at this rate even when the warehouse lags 15 s behind the generator, so
each one is late whatever the batching; itineraries get none (a few minutes late is on time for an hourly window unless the hour
just closed, which depends on timing).
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
from decimal import Decimal

import adbc_driver_flightsql.dbapi as flight_sql
import pytest

import beike_reference as ref
from beike_reference import HOUR, MINUTE, US, iso, ts_us
from beike_run import (LATE_TABLES, PARTITIONS, WAREHOUSE, newest_manifest, send_heartbeats, table,
                       wait_for_watermarks)
from conftest import create_topic, free_port, unique, wait_until
from layered import consume

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
    """Runs the warehouse, then the generator; stops the warehouse once every
    window is closed and serves it with `strata serve`."""
    work = tmp_path_factory.mktemp("beike")
    root = work / "data"
    prefix = unique("beike") + "_"
    flight_port, page_port = free_port(), free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP=kafka, STRATA_STORAGE_ROOT=str(root), BEIKE_TOPIC_PREFIX=prefix,
               STRATA_FLIGHT_LISTEN=f"127.0.0.1:{flight_port}", STRATA_DASHBOARD=f"127.0.0.1:{page_port}")
    for stream in ["deals", "itineraries"]:
        create_topic(kafka, f"{prefix}{stream}", PARTITIONS)
    # The warehouse runs first, so it reads the stream as it is produced.
    run_log = work / "run.log"
    run = subprocess.Popen([strata_bin, "--log-format", "json", "run", str(WAREHOUSE)], env=env,
                           stdout=open(run_log, "w"), stderr=subprocess.STDOUT)
    serve = None
    try:
        # Simulated history: 2 h 20 min of event time from 12:00 UTC
        # yesterday (inside the working day the behind-target layer rates),
        # 200 s of event time per second of wall time.
        wall = int(time.time()) * US
        start = ref.day_start(wall) - ref.DAY + 12 * HOUR
        # Heartbeats first, and a checkpoint of them: the warehouse is up
        # and reading when the generator starts.
        send_heartbeats(kafka, prefix, start - MINUTE)
        wait_until(lambda: (run.poll() is None or pytest.fail(run_log.read_text()[-3000:]))
                   and newest_manifest(root), 120, "the warehouse to read the first heartbeats")
        count = 42_000
        truth_file = work / "truth.jsonl"
        gen = subprocess.run(
            [strata_bin, "--log-format", "json", "gen", "beike", "--topic", prefix, "--dims", str(root / "dims"),
             "--count", str(count), "--rate", "1000", "--start", iso(start), "--step-ms", "200",
             "--partitions", str(PARTITIONS), "--malformed", "0.005", "--late", "0.004",
             "--late-minutes", "60-120", "--late-streams", "deals", "--future", "0.002",
             "--duplicates", "0.01", "--seed", "7", "--truth", str(truth_file)],
            env=env, capture_output=True, timeout=300)
        assert gen.returncode == 0, gen.stderr.decode()[-2000:]
        end = start + count * 200_000
        # Heartbeats dated after the end of the last event's hour: every
        # window that holds an event closes (the hourly ones included).
        last_hour = end - end % HOUR + HOUR
        send_heartbeats(kafka, prefix, last_hour + MINUTE)
        wait_for_watermarks(root, last_hour, run, run_log)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 0, run_log.read_text()[-3000:]
        # The tables as a reader sees them: `strata serve` (Flight SQL and
        # the dashboard) over what the run committed.
        serve_log = work / "serve.log"
        serve = subprocess.Popen([strata_bin, "--log-format", "json", "serve", str(WAREHOUSE)], env=env,
                                 stdout=open(serve_log, "w"), stderr=subprocess.STDOUT)

        def page_up():
            assert serve.poll() is None, serve_log.read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{page_port}/api/config", timeout=2).close()
                return True
            except OSError:
                return False
        wait_until(page_up, 60, "strata serve to serve the dashboard")
        yield {"root": root, "kafka": kafka, "prefix": prefix, "truth": ref.load_truth(truth_file, prefix),
               "dims": ref.load_dims(root), "last_hour": last_hour,
               "flight": f"grpc://127.0.0.1:{flight_port}", "page": f"http://127.0.0.1:{page_port}/",
               "work": work}
    finally:
        for proc in [run, serve]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()


def broker_records(beike, stream: str) -> dict[tuple[int, int], bytes]:
    """Every record of a topic, by (partition, offset)."""
    msgs = consume(beike["kafka"], f"{beike['prefix']}{stream}", PARTITIONS)
    return {(m.partition(), m.offset()): m.value() for m in msgs}


@pytest.mark.parametrize("stream,ods,key,number", [("deals", "ods_deals", "deal_id", "amount"),
                                                   ("itineraries", "ods_itineraries", "event_id", "duration_min")])
def test_every_record_is_in_exactly_one_table_with_its_contents(beike, stream, ods, key, number):
    """ODS rows, dead letters and future rows, by position and content, equal
    what the broker holds, classified by the generator's truth."""
    root, truth = beike["root"], beike["truth"]
    events = truth.deals if stream == "deals" else truth.itineraries
    kinds = {e.value.encode(): e.kind for e in events}
    records = broker_records(beike, stream)
    by_kind = defaultdict(dict)
    for pos, raw in records.items():
        kind = kinds.get(raw, "heartbeat")
        by_kind[kind][pos] = raw
    assert len(by_kind["heartbeat"]) == 2 * PARTITIONS
    sent = Counter(e.kind for e in events for _ in range(e.copies))
    assert {k: len(v) for k, v in by_kind.items() if k != "heartbeat"} == dict(sent)
    assert sent["malformed"] > 0 and sent["future"] > 0

    dead = table(root, "ods", f"{ods}_dead_letter")
    assert {(r["partition"], r["offset"]): r["raw"] for r in dead} == by_kind["malformed"]
    assert all(r["reason"] and r["topic"] == f"{beike['prefix']}{stream}" for r in dead)

    future = table(root, "ods", f"{ods}_future")
    assert sorted((r["_kafka_partition"], r["_kafka_offset"]) for r in future) == sorted(by_kind["future"])
    assert {r["_strata_reason"] for r in future} == {"event time too far in the future"}

    ods_rows = table(root, "ods", ods)
    want = {**by_kind["on_time"], **by_kind["late"], **by_kind["heartbeat"]}
    got = {(r["_kafka_partition"], r["_kafka_offset"]): r for r in ods_rows}
    assert len(got) == len(ods_rows) == len(want), "an ODS row twice, or missing"
    assert set(got) == set(want)
    for pos, raw in want.items():
        sent_fields = json.loads(raw)
        row = got[pos]
        assert row[key] == sent_fields[key] and row["event_type"] == sent_fields["event_type"], pos
        assert ts_us(row["event_time"]) == ref.to_us(sent_fields["event_time"]), pos
        assert Decimal(str(row[number])) == Decimal(str(sent_fields[number])), pos

    # Only the heartbeats are rejected by DWD's filter.
    layer = "dwd_deals" if stream == "deals" else "dwd_itineraries"
    rejected = table(root, "dwd", f"{layer}_rejected")
    assert sorted((r["_kafka_partition"], r["_kafka_offset"]) for r in rejected) == sorted(by_kind["heartbeat"])
    assert all(r["_strata_reason"].startswith("rejected by filter: ") for r in rejected)


def test_late_deals_and_only_they_are_set_aside(beike):
    """The generator's late deals are in dwd_deals_late (each copy), with
    the rule's reason; every other late table of every layer is empty."""
    root, truth = beike["root"], beike["truth"]
    late = Counter((e.fields["deal_id"], e.fields["event_type"]) for e in ref.copies(truth.deals, "late"))
    got = table(root, "dwd", "dwd_deals_late")
    assert Counter((r["deal_id"], r["event_type"]) for r in got) == late
    assert sum(late.values()) > 20, "too few late deals to show anything"
    assert {r["_strata_reason"] for r in got} == {"behind the watermark: every window it belongs to had closed"}
    assert all(ts_us(r["_strata_watermark"]) > ts_us(r["event_time"]) for r in got)
    for kind, name in LATE_TABLES[1:]:
        assert table(root, kind, name) == [], f"{name}: on-time rows were set aside as late"


def test_duplicates_are_merged_and_enriched(beike):
    root, truth, dims = beike["root"], beike["truth"], beike["dims"]
    want = ref.deduplicated_deals(truth)
    dwd = {(r["deal_id"], r["event_type"]): r for r in table(root, "dwd", "dwd_deals")}
    assert {k: r["copies"] for k, r in dwd.items()} == {k: n for k, (_, n) in want.items()}
    assert any(n == 2 for _, n in want.values()), "no duplicate was sent"
    for k, (d, _) in want.items():
        assert (dwd[k]["amount"], ts_us(dwd[k]["event_time"])) == (d["amount"], d["ts"]), k
    wide = table(root, "dwd", "dwd_deals_wide")
    assert len(wide) == len(want)
    for r in wide:
        d, _ = want[(r["deal_id"], r["event_type"])]
        agent = dims.agent[d["agent_id"]]
        store = dims.store[agent["store_id"]]
        assert (r["agent_name"], r["store_id"], r["store_name"], r["city_id"], r["city_name"]) == (
            agent["agent_name"], store["store_id"], store["store_name"], store["city_id"],
            dims.city_name[store["city_id"]])
        assert (r["amount"], ts_us(r["event_time"])) == (d["amount"], d["ts"])
        # The deal's own record names the same store and city.
        assert (d["store_id"], d["city"]) == (store["store_id"], store["city_id"])


def test_dws_store_minute_equals_the_reference(beike):
    want = ref.store_minute(ref.deduplicated_deals(beike["truth"]), beike["dims"])
    got = {(ts_us(r["window_start"]), r["store_id"]): [r["gmv"], r["paid_deals"], r["created_deals"],
                                                      r["signed_deals"], r["cancelled_deals"]]
           for r in table(beike["root"], "dws", "dws_store_minute")}
    assert got == want


def test_ads_city_gmv_equals_the_reference_and_the_minutes(beike):
    root = beike["root"]
    want = ref.city_gmv(ref.deduplicated_deals(beike["truth"]), beike["dims"])
    rows = table(root, "ads", "ads_city_gmv_today")
    got = {(r["event_day"], r["city_name"]): [r["gmv"], r["paid_deals"]] for r in rows}
    assert got == want and len(got) >= 6
    # Every minute window is closed: their GMV adds up to the day's.
    minutes = defaultdict(Decimal)
    for r in table(root, "dws", "dws_store_minute"):
        minutes[(ref.day_of(ts_us(r["window_start"])), r["city_name"])] += r["gmv"]
    assert {k: v for k, v in minutes.items() if v} == {k: v[0] for k, v in got.items()}


@pytest.mark.parametrize("layer,key", [("ads_top_stores_today", "store_id"), ("ads_top_agents_today", "agent_id")])
def test_cumulative_top_10_equals_the_reference(beike, layer, key):
    root = beike["root"]
    deals = ref.deduplicated_deals(beike["truth"])
    got = defaultdict(list)
    for r in table(root, "ads", layer):
        got[ts_us(r["window_end"])].append((r["rank"], r[key], r["gmv"], r["paid_deals"]))
    # A ranking for every minute of each day from its first paid deal on,
    # up to the last closed minute.
    paid = [d["ts"] for d, _ in deals.values() if d["event_type"] == "paid"]
    want_ends = set()
    for t in paid:
        end = t - t % MINUTE + MINUTE
        while end <= min(ref.day_start(t) + ref.DAY, beike["last_hour"]):
            want_ends.add(end)
            end += MINUTE
    assert set(got) == want_ends and len(got) > 100
    for end, rows in got.items():
        assert sorted(rows) == ref.top_10_so_far(deals, beike["dims"], key, end), iso(end)


def test_top_stores_agree_with_the_minutes(beike):
    """The day's last ranking: each store's GMV equals the sum of its
    closed minutes in dws_store_minute."""
    root = beike["root"]
    ranks = table(root, "ads", "ads_top_stores_today")
    last = max(ts_us(r["window_end"]) for r in ranks)
    minutes = defaultdict(Decimal)
    for r in table(root, "dws", "dws_store_minute"):
        if ref.day_start(last - 1) <= ts_us(r["window_start"]) < last:
            minutes[r["store_id"]] += r["gmv"]
    for r in ranks:
        if ts_us(r["window_end"]) == last:
            assert r["gmv"] == minutes[r["store_id"]], r


def test_itineraries_per_agent_and_city_hour_and_behind_target(beike):
    root, dims = beike["root"], beike["dims"]
    itineraries = ref.itinerary_rows(beike["truth"])
    assert len(table(root, "dwd", "dwd_itineraries")) == len(itineraries)
    got = {(ts_us(r["window_start"]), r["agent_id"]): [r["showings"], r["client_visits"], r["client_uv"]]
           for r in table(root, "dws", "dws_agent_hour")}
    assert got == ref.agent_hour(itineraries)
    got = {(ts_us(r["window_start"]), r["city_name"]): [r["client_uv"], r["events"]]
           for r in table(root, "dws", "dws_city_hour")}
    assert got == ref.city_hour(itineraries, dims)

    behind = defaultdict(dict)
    for r in table(root, "ads", "ads_agents_behind_target"):
        behind[ts_us(r["window_end"])][r["agent_id"]] = (r["showings"], round(r["behind_by"], 6))
    first = min(d["ts"] for d in itineraries)
    end, want = first - first % (10 * MINUTE) + 10 * MINUTE, {}
    while end <= beike["last_hour"]:
        rows = ref.behind_target(itineraries, dims, end)
        if rows:
            want[end] = rows
        end += 10 * MINUTE
    assert want and behind == want


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


def test_dashboard_served_by_strata_serve_renders_the_ads_numbers_in_headless_chromium(beike):
    browser = chromium()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update", "--no-first-run",
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
