"""A warehouse with SQL layers over one ODS layer, and plain-Python
references for what those layers must compute.

The references are written from the window definitions (Flink's window
table functions), not from Strata's code, so a test compares two
independent computations over the same records.
"""

from __future__ import annotations

import json
import pathlib
import random
import time
import urllib.parse
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, TopicPartition
from deltalake import DeltaTable

from conftest import Sent

SECOND = 1_000_000
MINUTE = 60 * SECOND
# 2026-10-05T08:00:00Z: in the past, so nothing is future-dated.
BASE_US = int(datetime(2026, 10, 5, 8, 0, tzinfo=timezone.utc).timestamp()) * SECOND
CITIES = ["beijing", "shanghai", "shenzhen", "hangzhou"]
SENTINEL_CITY = "zz_sentinel"


def iso(us: int) -> str:
    return datetime.fromtimestamp(us / SECOND, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Deal:
    deal_id: str
    city: str
    agent: str
    amount: Decimal
    ts: int  # event time, microseconds

    def to_json(self) -> bytes:
        return json.dumps({
            "deal_id": self.deal_id, "event_type": "paid", "amount": str(self.amount),
            "city": self.city, "agent": self.agent, "event_time": iso(self.ts),
        }).encode()


def disordered_deals(n: int, rng: random.Random, step_us: int, jitter_us: int, agents: int = 40,
                     first: int = 0, start_us: int = BASE_US) -> list[Deal]:
    """Deals `step_us` apart in generation order, each dated up to
    `jitter_us` earlier than its turn: out of order, but by less than a
    watermark delay larger than `jitter_us`."""
    out = []
    for i in range(first, first + n):
        ts = start_us + i * step_us - rng.randint(0, jitter_us)
        out.append(Deal(
            deal_id=f"d{i:08d}", city=rng.choice(CITIES), agent=f"a{rng.randrange(agents):03d}",
            amount=Decimal(rng.randint(100, 900_000)) / 100, ts=ts,
        ))
    return out


def as_sent(deals: list[Deal], partitions: int) -> list[Sent]:
    """One key per agent: an agent's deals stay in one partition, in order."""
    return [Sent(key=d.agent.encode(), value=d.to_json(), partition=int(d.agent[1:]) % partitions)
            for d in deals]


def sentinels(partitions: int, at_us: int) -> list[Sent]:
    """One deal per partition dated `at_us`: moves every partition's
    watermark past all windows before it."""
    return [Sent(key=b"s", value=Deal(f"s{p}", SENTINEL_CITY, "zz", Decimal(0), at_us).to_json(), partition=p)
            for p in range(partitions)]


# -- window assignment, from Flink's definitions -------------------------------

def tumble(ts: int, size: int) -> list[tuple[int, int]]:
    start = ts - ts % size
    return [(start, start + size)]


def hop(ts: int, slide: int, size: int) -> list[tuple[int, int]]:
    last = ts - ts % slide
    return [(s, s + size) for s in range(last - size + slide, last + 1, slide) if s <= ts < s + size]


def cumulate(ts: int, step: int, max_size: int) -> list[tuple[int, int]]:
    start = ts - ts % max_size
    return [(start, end) for end in range(start + step, start + max_size + 1, step) if ts < end]


def sessions(deals: list[Deal], gap: int) -> dict[tuple[int, int, str], list[Deal]]:
    """Per agent: deals less than `gap` apart share a session, which ends
    `gap` after its last deal."""
    by_agent = defaultdict(list)
    for d in deals:
        by_agent[d.agent].append(d)
    out = {}
    for agent, ds in by_agent.items():
        ds.sort(key=lambda d: d.ts)
        current: list[Deal] = []
        for d in ds + [None]:
            if current and (d is None or d.ts - current[-1].ts >= gap):
                out[(current[0].ts, current[-1].ts + gap, agent)] = current
                current = []
            if d is not None:
                current.append(d)
    return out


def grouped(deals: list[Deal], windows_of, key) -> dict[tuple, list[Deal]]:
    out = defaultdict(list)
    for d in deals:
        for start, end in windows_of(d.ts):
            out[(start, end, key(d))].append(d)
    return dict(out)


def summary(ds: list[Deal]) -> dict:
    """The aggregates every window test selects."""
    amounts = [d.amount for d in ds]
    return {
        "deals": len(ds),
        "gmv": sum(amounts),
        "min_amount": min(amounts),
        "max_amount": max(amounts),
        "agents": len({d.agent for d in ds}),
    }


AGGREGATES = ("COUNT(*) AS deals, SUM(amount) AS gmv, MIN(amount) AS min_amount, "
              "MAX(amount) AS max_amount, COUNT(DISTINCT agent) AS agents, AVG(amount) AS avg_amount")


# -- the warehouse --------------------------------------------------------------

@dataclass
class LayeredWarehouse:
    """ODS layer `ods_deals` over `topic`, then `layers` (YAML list items)."""

    dir: pathlib.Path
    bootstrap: str
    topic: str
    layers: str
    interval: str = "200ms"
    watermark: str = "{delay: 10s, idle_timeout: 30s}"
    ods_extra: str = ""  # more keys of the ODS layer (YAML, indented 4)
    extra_schemas: str = ""  # more schemas (YAML, indented 2)
    extra_top: str = ""  # more top-level sections, e.g. dimensions: (YAML)
    retain: int | None = None  # manifests kept (Strata's default when None)
    path: pathlib.Path = field(init=False)

    def __post_init__(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "warehouse.yaml"
        retain = "" if self.retain is None else f"\n  retain: {self.retain}"
        self.path.write_text(f"""warehouse: test
storage:
  root: ./data
kafka:
  bootstrap_servers: {self.bootstrap}
serve:
  listen: 127.0.0.1:0
checkpoint:
  interval: {self.interval}{retain}
schemas:
  deal:
    event_time: event_time
    fields:
      - {{name: deal_id, type: string, nullable: false}}
      - {{name: event_type, type: string, nullable: false}}
      - {{name: amount, type: "decimal(18,2)"}}
      - {{name: city, type: string}}
      - {{name: agent, type: string}}
      - {{name: event_time, type: timestamp}}
{self.extra_schemas}{self.extra_top}layers:
  - name: ods_deals
    kind: ods
    source: {{topic: {self.topic}, schema: deal, start: earliest}}
    watermark: {self.watermark}
{self.ods_extra}{self.layers}""")

    @property
    def checkpoint_dir(self) -> pathlib.Path:
        return self.dir / "data" / "_strata" / "checkpoints" / "test"

    def table_path(self, kind: str, name: str) -> pathlib.Path:
        return self.dir / "data" / kind / name

    def table(self, kind: str, name: str) -> pa.Table | None:
        path = self.table_path(kind, name)
        if not (path / "_delta_log").exists():
            return None
        return DeltaTable(str(path)).to_pyarrow_table()

    def count(self, kind: str, name: str) -> int:
        t = self.table(kind, name)
        return 0 if t is None else t.num_rows

    def manifests(self) -> dict[int, dict]:
        """Every retained checkpoint manifest, by epoch."""
        return {int(p.stem): json.loads(p.read_text()) for p in self.checkpoint_dir.glob("*.json")}

    def txn_version(self, table: pathlib.Path, app_id: str) -> int | None:
        if not (table / "_delta_log").exists():
            return None
        return DeltaTable(str(table)).transaction_version(app_id)


def sink_path(sink: dict) -> pathlib.Path:
    """The local directory of a manifest's table commit."""
    return pathlib.Path(urllib.parse.urlparse(sink["table"]).path)


def sink_rows(sink: dict) -> int:
    """Rows a manifest's table commit adds."""
    return int(sink["rows"])


def micros(column: pa.ChunkedArray) -> list[int]:
    return pc.cast(column, pa.timestamp("us", "UTC")).cast(pa.int64()).to_pylist()


def window_rows(table: pa.Table, key: str) -> dict[tuple, dict]:
    """A windowed aggregate's rows by (window_start, window_end, key)."""
    starts, ends = micros(table.column("window_start")), micros(table.column("window_end"))
    keys = table.column(key).to_pylist()
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    out = {}
    for i, k in enumerate(zip(starts, ends, keys)):
        assert k not in out, f"window {k} emitted twice"
        out[k] = {name: values[i] for name, values in cols.items()}
    return out


def consume(bootstrap: str, topic: str, partitions: int, idle: float = 3.0) -> list:
    """Every message of `topic`, read from the start until idle."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": "read_uncommitted"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, last = [], time.monotonic()
    while time.monotonic() - last < idle:
        m = consumer.poll(0.2)
        if m is None or m.error():
            continue
        last = time.monotonic()
        out.append(m)
    consumer.close()
    return out


def read_topic(bootstrap: str, topic: str, partitions: int, idle: float = 3.0) -> list[tuple[dict, dict]]:
    """Every record of `topic` (value, headers), read until idle."""
    return [(json.loads(m.value()), {k: v.decode() for k, v in (m.headers() or [])})
            for m in consume(bootstrap, topic, partitions, idle)]
