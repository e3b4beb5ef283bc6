"""Measures the demo as a newcomer meets it (`scripts/demo --check`).

From the moment `strata run` starts on a fresh storage root: the seconds
until each dashboard panel's query first answers rows over Flight SQL (ADBC,
as a BI tool asks), strata's CPU share and RSS after one minute, and the
WARN/ERROR lines of its log in the first two minutes. Prints one line per
panel and a JSON summary; exits 1 if a panel never answered within
--timeout or the log warned.

A panel over an hourly (or longer) window answers only once its window has
closed, which may be after the check's end, however well the pipeline
runs: such a panel counts as waiting, not failed, when the dashboard says
it waits for a window ending after the check's deadline and its layer's
watermark is under a minute behind the clock.
"""

import argparse
import json
import os
import re
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import adbc_driver_flightsql.dbapi as flightsql

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# The dashboard's sentence for a panel whose window has not closed yet.
WINDOW_WAIT = re.compile(
    r"window ending (\d\d):(\d\d):(\d\d) \(UTC\) to close: its watermark is at \S+, (\d+) s behind"
)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def process_start(pid: int) -> float:
    """The process's start, as time.time()."""
    with open(f"/proc/{pid}/stat") as f:
        started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return time.time() - uptime + started_ticks / TICKS


def panels(dashboard: str, pid: int, timeout: float) -> list[dict]:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{dashboard}/api/config", timeout=5) as r:
                return json.load(r)["panels"]
        except OSError:
            if time.time() > deadline:
                raise SystemExit(f"the dashboard at {dashboard} did not answer within {timeout:.0f} s")
            os.kill(pid, 0)  # strata still running, or raise
            time.sleep(0.5)


def warnings(log: str, within_s: float, started: float) -> list[str]:
    found = []
    with open(log, errors="replace") as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                found.append(line.strip())  # not a log event: a panic or a library print
                continue
            at = event.get("timestamp")
            if at and datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() > started + within_s:
                break
            if event.get("level") in ("WARN", "ERROR"):
                found.append(line.strip())
    return found


def waits_for_a_later_window(dashboard: str, index: int, deadline: float) -> str | None:
    """What panel `index` waits for, if it is a window that closes after
    `deadline` (a time.time()) while its pipeline keeps up; else None."""
    try:
        with urllib.request.urlopen(f"{dashboard}/api/panels/{index}", timeout=10) as r:
            waiting = json.load(r).get("waiting") or ""
    except OSError:
        return None
    m = WINDOW_WAIT.search(waiting)
    if not m:
        return None
    h, mi, sec, behind = (int(g) for g in m.groups())
    now = datetime.now(timezone.utc)
    end = now.replace(hour=h, minute=mi, second=sec, microsecond=0)
    if end < now:
        end += timedelta(days=1)
    if end.timestamp() <= deadline or behind >= 60:
        return None
    return f"window ending {h:02}:{mi:02}:{sec:02} UTC, watermark {behind} s behind"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--flight", required=True)
    ap.add_argument("--profile", default="?")
    ap.add_argument("--rate", default="?")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    started = process_start(args.pid)
    config = panels(args.dashboard, args.pid, args.timeout)
    first: dict[int, float] = {}
    waiting: dict[int, str] = {}
    next_wait_check = 120.0
    cpu = rss = peak = None
    # A query the server does not answer in 30 s counts as no answer yet.
    timeouts = {f"adbc.flight.sql.rpc.timeout_seconds.{k}": "30" for k in ("query", "fetch")}
    conn = flightsql.connect(args.flight, db_kwargs=timeouts, autocommit=True)
    try:
        while True:
            now = time.time() - started
            for i, panel in enumerate(config):
                if i in first:
                    continue
                cur = conn.cursor()
                try:
                    cur.execute(panel["sql"])
                    if cur.fetchall():
                        first[i] = round(time.time() - started, 1)
                        print(f"  {first[i]:7.1f} s  {panel['title']}", flush=True)
                except Exception:  # the table does not exist yet
                    pass
                finally:
                    cur.close()
            if cpu is None and now >= 60:
                cpu = round(100 * cpu_seconds(args.pid) / now, 1)
                rss, peak = memory_mb(args.pid)
            if len(first) == len(config) and now >= 120:
                break
            if now >= next_wait_check and len(first) < len(config):
                next_wait_check = now + 10
                # Panels whose window closes after the deadline cannot
                # answer within the check; the others have.
                deadline = started + args.timeout
                later = {
                    i: waits_for_a_later_window(args.dashboard, i, deadline)
                    for i in range(len(config))
                    if i not in first
                }
                if all(later.values()):
                    waiting = later
                    break
            if now > args.timeout:
                break
            os.kill(args.pid, 0)
            time.sleep(0.5)
    finally:
        conn.close()
    warned = warnings(args.log, 120, started)
    summary = {
        "profile": args.profile,
        "rate": args.rate,
        "panels": {config[i]["title"]: first.get(i) for i in range(len(config))},
        "all_panels_s": max(first.values()) if len(first) == len(config) else None,
        "waiting_for_a_window_after_the_check": {config[i]["title"]: w for i, w in waiting.items()},
        "cpu_percent_first_minute": cpu,
        "rss_mb_at_1_min": rss and round(rss),
        "peak_rss_mb_at_1_min": peak and round(peak),
        "warn_or_error_lines_first_2_min": len(warned),
    }
    print(json.dumps(summary))
    for line in warned[:10]:
        print(f"  log: {line[:300]}", file=sys.stderr)
    for i, w in waiting.items():
        print(f"  waiting  {config[i]['title']}: {w}", flush=True)
    answered = len(first) + len(waiting) == len(config)
    return 0 if answered and not warned else 1


if __name__ == "__main__":
    sys.exit(main())
