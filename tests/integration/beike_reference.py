"""What the reference warehouse (examples/beike) must hold, computed in
plain Python from what the generator produced: its truth file (`strata gen
beike --truth`) says, for every event, whether it was made on time, late,
future-dated or malformed, how many copies were sent, and its value. Only
the dimension tables the generator wrote (cities, stores, agents: the
"CRM") are read besides; never a table Strata wrote.

The window definitions are Flink's (TUMBLE, CUMULATE), written here from
their definitions, not from Strata's code.
"""

from __future__ import annotations

import json
import pathlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation

from deltalake import DeltaTable

US = 1_000_000
MINUTE, HOUR, DAY = 60 * US, 3600 * US, 86400 * US


def to_us(ts: str) -> int:
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return int(dt.timestamp()) * US + dt.microsecond


def ts_us(v) -> int:
    """A timestamp as Delta returns it, in microseconds."""
    return int(v.timestamp()) * US + v.microsecond


def iso(us: int) -> str:
    return datetime.fromtimestamp(us / US, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def day_of(us: int) -> date:
    return datetime.fromtimestamp(us // US, tz=timezone.utc).date()


def day_start(us: int) -> int:
    return us - us % DAY


@dataclass
class Event:
    """One event as the generator made it."""

    kind: str          # on_time, late, future, malformed
    copies: int
    clock_us: int
    value: str         # the record's bytes, as text
    fields: dict | None  # the decoded record (None: malformed)

    @property
    def ts(self) -> int:
        return self.fields["ts"]


def _decode(value: str, number: str, parse) -> dict | None:
    """The record as the ODS decoder reads it, or None if it cannot."""
    try:
        v = json.loads(value)
        if not isinstance(v, dict) or "event_time" not in v:
            return None
        v[number] = parse(v[number])
        v["ts"] = to_us(v["event_time"])
        return v
    except (ValueError, KeyError, TypeError, InvalidOperation):
        return None


@dataclass
class Truth:
    deals: list[Event]
    itineraries: list[Event]


def load_truth(path: pathlib.Path, prefix: str) -> Truth:
    deals, itineraries = [], []
    for line in path.read_text().splitlines():
        t = json.loads(line)
        if t["topic"] == f"{prefix}deals":
            fields = None if t["kind"] == "malformed" else _decode(t["value"], "amount", Decimal)
            deals.append(Event(t["kind"], t["copies"], t["clock_us"], t["value"], fields))
        else:
            fields = None if t["kind"] == "malformed" else _decode(t["value"], "duration_min", int)
            itineraries.append(Event(t["kind"], t["copies"], t["clock_us"], t["value"], fields))
    for e in deals + itineraries:
        assert (e.fields is None) == (e.kind == "malformed"), f"the decoder and the generator disagree: {e}"
    return Truth(deals, itineraries)


def copies(events: list[Event], *kinds: str) -> list[Event]:
    """Every record sent of the given kinds (an event sent twice, twice)."""
    return [e for e in events if e.kind in kinds for _ in range(e.copies)]


@dataclass
class Dims:
    city_name: dict[str, str]          # city_id -> name
    store: dict[str, dict]             # store_id -> row
    agent: dict[str, dict]             # agent_id -> row


def load_dims(root: pathlib.Path) -> Dims:
    def rows(name):
        return DeltaTable(str(root / "dims" / name)).to_pyarrow_table().to_pylist()
    return Dims(
        city_name={r["city_id"]: r["city_name"] for r in rows("cities")},
        store={r["store_id"]: r for r in rows("stores")},
        agent={r["agent_id"]: r for r in rows("agents")},
    )


def deduplicated_deals(truth: Truth) -> dict[tuple[str, str], tuple[dict, int]]:
    """dwd_deals: on-time deal events, one per (deal, event type), with the
    number of copies that arrived (late ones are set aside before)."""
    out: dict[tuple[str, str], tuple[dict, int]] = {}
    for e in truth.deals:
        if e.kind != "on_time":
            continue
        key = (e.fields["deal_id"], e.fields["event_type"])
        assert key not in out, f"the generator made {key} twice"
        out[key] = (e.fields, e.copies)
    return out


def store_minute(deals: dict, dims: Dims) -> dict[tuple[int, str], list]:
    """dws_store_minute: (window_start, store_id) -> [gmv, paid, created,
    signed, cancelled]."""
    out = defaultdict(lambda: [Decimal(0), 0, 0, 0, 0])
    for d, _ in deals.values():
        agent = dims.agent[d["agent_id"]]
        row = out[(d["ts"] - d["ts"] % MINUTE, agent["store_id"])]
        kind = d["event_type"]
        row[{"paid": 1, "created": 2, "signed": 3, "cancelled": 4}[kind]] += 1
        if kind == "paid":
            row[0] += d["amount"]
    return dict(out)


def city_gmv(deals: dict, dims: Dims) -> dict[tuple[date, str], list]:
    """ads_city_gmv_today: (day, city name) -> [gmv, paid deals]."""
    out = defaultdict(lambda: [Decimal(0), 0])
    for d, _ in deals.values():
        if d["event_type"] != "paid":
            continue
        store = dims.store[dims.agent[d["agent_id"]]["store_id"]]
        row = out[(day_of(d["ts"]), dims.city_name[store["city_id"]])]
        row[0] += d["amount"]
        row[1] += 1
    return dict(out)


def top_10_so_far(deals: dict, dims: Dims, by: str, window_end: int) -> list[tuple]:
    """A cumulative window's Top 10 (CUMULATE by the minute over the day),
    by GMV then id: [(rank, id, gmv, paid deals)]."""
    since = day_start(window_end - 1)
    sums = defaultdict(lambda: [Decimal(0), 0])
    for d, _ in deals.values():
        if d["event_type"] == "paid" and since <= d["ts"] < window_end:
            key = d["agent_id"] if by == "agent_id" else dims.agent[d["agent_id"]]["store_id"]
            sums[key][0] += d["amount"]
            sums[key][1] += 1
    top = sorted(sums.items(), key=lambda kv: (-kv[1][0], kv[0]))[:10]
    return [(i + 1, k, g, n) for i, (k, (g, n)) in enumerate(top)]


def itinerary_rows(truth: Truth) -> list[dict]:
    """dwd_itineraries: every on-time itinerary record (not deduplicated:
    a copy sent twice counts twice)."""
    return [e.fields for e in copies(truth.itineraries, "on_time", "late")]


def agent_hour(itineraries: list[dict]) -> dict[tuple[int, str], list]:
    """dws_agent_hour: (window_start, agent) -> [showings, client visits,
    distinct clients]."""
    out = defaultdict(lambda: [0, 0, set()])
    for d in itineraries:
        row = out[(d["ts"] - d["ts"] % HOUR, d["agent_id"])]
        row[0] += d["event_type"] == "showing_finished"
        row[1] += d["event_type"] == "client_visit"
        row[2].add(d["client_id"])
    return {k: [a, b, len(c)] for k, (a, b, c) in out.items()}


def city_hour(itineraries: list[dict], dims: Dims) -> dict[tuple[int, str], list]:
    """dws_city_hour: (window_start, city name) -> [distinct clients, events]."""
    out = defaultdict(lambda: [set(), 0])
    for d in itineraries:
        store = dims.store[dims.agent[d["agent_id"]]["store_id"]]
        row = out[(d["ts"] - d["ts"] % HOUR, dims.city_name[store["city_id"]])]
        row[0].add(d["client_id"])
        row[1] += 1
    return {k: [len(c), n] for k, (c, n) in out.items()}


def behind_target(itineraries: list[dict], dims: Dims, window_end: int) -> dict[str, tuple]:
    """ads_agents_behind_target at one 10-minute step: agent -> (showings,
    behind by), for agents with an event today under their pro-rata target."""
    since = day_start(window_end - 1)
    shows = defaultdict(int)
    for d in itineraries:
        if since <= d["ts"] < window_end:
            shows[d["agent_id"]] += d["event_type"] == "showing_finished"
    hours = min(max((window_end - since) / HOUR - 8.0, 0.0), 10.0)
    out = {}
    for agent, n in shows.items():
        target = dims.agent[agent]["daily_showing_target"]
        if n < target * hours / 10.0:
            out[agent] = (n, round(target * hours / 10.0 - n, 6))
    return out
