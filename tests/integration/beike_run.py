"""Running the reference warehouse (examples/beike) in tests: its tables,
its checkpoints, heartbeats that close every window."""

from __future__ import annotations

import json
import pathlib
import subprocess

from confluent_kafka import Producer
from deltalake import DeltaTable

from beike_reference import iso
from conftest import wait_until

ROOT = pathlib.Path(__file__).resolve().parents[2]
WAREHOUSE = ROOT / "examples" / "beike" / "warehouse.yaml"
PARTITIONS = 4
LATE_TABLES = [("dwd", "dwd_deals_late"), ("dws", "dws_store_minute_late"), ("dws", "dws_agent_hour_late"),
               ("dws", "dws_city_hour_late"), ("ads", "ads_top_stores_today_late"),
               ("ads", "ads_top_agents_today_late"), ("ads", "ads_agents_behind_target_late")]


def table(root: pathlib.Path, kind: str, name: str):
    path = root / kind / name
    if not (path / "_delta_log").exists():
        return []
    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def newest_manifest(root: pathlib.Path) -> dict | None:
    manifests = sorted((root / "_strata" / "checkpoints" / "beike").glob("*.json"), key=lambda p: int(p.stem))
    return json.loads(manifests[-1].read_text()) if manifests else None


def send_heartbeats(kafka: str, prefix: str, at_us: int) -> None:
    """An event type DWD rejects, on every partition of both topics, dated
    `at_us`: moves every partition's watermark there."""
    producer = Producer({"bootstrap.servers": kafka})
    for topic, record in [
        (f"{prefix}deals", {"deal_id": "HB", "event_type": "heartbeat", "amount": "1", "agent_id": "-",
                            "event_time": iso(at_us)}),
        (f"{prefix}itineraries", {"event_id": "HB", "event_type": "heartbeat", "agent_id": "-",
                                  "duration_min": 0, "event_time": iso(at_us)}),
    ]:
        for p in range(PARTITIONS):
            producer.produce(topic, json.dumps(record).encode(), partition=p)
    producer.flush(30)


def wait_for_watermarks(root: pathlib.Path, at_least: int, proc: subprocess.Popen, log: pathlib.Path,
                        timeout: float = 240) -> dict:
    """Waits for a checkpoint in which every layer's watermark is at least
    `at_least`: every window before it has been emitted."""
    def passed():
        assert proc.poll() is None, log.read_text()[-3000:]
        m = newest_manifest(root)
        return m if m and all((l.get("watermark") or 0) >= at_least for l in m["layers"]) else None
    return wait_until(passed, timeout, "every layer's watermark to pass the last window", interval=0.5)


