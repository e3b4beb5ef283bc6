"""`strata backfill --cascade` and `--lookback`.

- `--cascade`: a DWD layer's SQL changes; backfilling it with `--cascade`
  replaces the range in the DWD table and in the DWS layer that reads it.
- `--lookback`: a SESSION layer has no bound the planner knows, so a
  backfill without `--lookback` is refused; with it, the replay starts that
  much earlier and sessions that began before `--from` come out whole.

Every expected table is a plain-Python reference over the deals sent, never
read back from Strata.

Needs: a broker of the test's own on sqlite storage (as test_backfill.py).
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import subprocess
from decimal import Decimal

from conftest import _STARTED, Strata, create_topic, produce, unique, wait_until
from layered import (
    BASE_US, MINUTE, SECOND, SENTINEL_CITY, LayeredWarehouse, as_sent, disordered_deals, iso, micros, sentinels,
    sessions,
)
from test_backfill import BIG, CLOSED_US, FROM_US, PARTITIONS, TO_US, in_range, outside, reference, table_rows

# The "bug fix" in each v2 file: only big deals count.
BIG_ONLY = "WHERE amount >= 3000"

CHAIN = """
  - name: dwd_deals
    kind: dwd
    inputs: [ods_deals]
    sql: "SELECT deal_id, city, agent, amount, event_time FROM ods_deals{where}"
  - name: dws_city
    kind: dws
    inputs: [dwd_deals]
    sql: "SELECT window_start, window_end, city, COUNT(*) AS deals, SUM(amount) AS gmv
      FROM TABLE(TUMBLE(TABLE dwd_deals, DESCRIPTOR(event_time), INTERVAL '5' MINUTE))
      GROUP BY window_start, window_end, city"
"""

GAP = 3 * MINUTE
SESSIONS = """
  - name: dws_sessions
    kind: dws
    inputs: [ods_deals]
    sql: "SELECT window_start, window_end, agent, COUNT(*) AS deals, SUM(amount) AS gmv
      FROM TABLE(SESSION(TABLE ods_deals PARTITION BY agent, DESCRIPTOR(event_time), INTERVAL '3' MINUTE))
      {where} GROUP BY window_start, window_end, agent"
"""


class Live:
    """An hour of deals on a topic of the test's own broker, `strata run`
    over the v1 file until `closed()` holds, then stopped; and the v2 file
    (`layers` with the BIG_ONLY filter) over the same storage."""

    def __init__(self, tmp: pathlib.Path, strata_bin: str, broker, rng: random.Random, layers: str, count: int,
                 closed):
        self.bin, self.tmp = strata_bin, tmp
        self.topic = unique("backfill")
        create_topic(broker.bootstrap, self.topic, PARTITIONS)
        self.deals = disordered_deals(count, rng, step_us=3600 * SECOND // count, jitter_us=2 * SECOND)
        self.wh = LayeredWarehouse(tmp, broker.bootstrap, self.topic, layers.format(where=""),
                                   watermark="{delay: 10s, idle_timeout: 5s}")
        self.v2 = tmp / "warehouse_v2.yaml"
        self.v2.write_text(self.wh.path.read_text().replace(layers.format(where=""),
                                                            layers.format(where=" " + BIG_ONLY)))
        produce(broker.bootstrap, self.topic, as_sent(self.deals, PARTITIONS),
                timestamps_ms=[d.ts // 1000 for d in self.deals])
        produce(broker.bootstrap, self.topic, sentinels(PARTITIONS, BASE_US + 70 * MINUTE),
                timestamps_ms=[(BASE_US + 70 * MINUTE) // 1000] * PARTITIONS)
        live = Strata(strata_bin, self.wh).start()
        wait_until(lambda: (live.assert_alive(), closed(self))[1], 120, "the live pipeline to close the hour")
        assert live.stop() == 0, live.log()[-3000:]

    def backfill(self, layer: str, *extra: str, name: str = "backfill") -> tuple[int, str, dict | None]:
        """Runs `strata backfill` of the v2 file to its end: (exit status,
        log, summary)."""
        log_path, out_path = self.tmp / f"{name}.log", self.tmp / f"{name}.out"
        with open(log_path, "wb") as log, open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [self.bin, "--log-format", "json", "backfill", str(self.v2), layer,
                 "--from", iso(FROM_US), "--to", iso(TO_US), *extra],
                stdout=out, stderr=log, env={**os.environ, "RUST_LOG": "info"})
            _STARTED.append(proc)
            rc = proc.wait(timeout=180)
        text = out_path.read_text()
        return rc, log_path.read_text(errors="replace"), json.loads(text) if rc == 0 and text.strip() else None


# -- --cascade -------------------------------------------------------------------

def dwd_rows(wh: LayeredWarehouse) -> dict[str, tuple]:
    """deal_id -> (event time, amount), sentinels left out."""
    t = wh.table("dwd", "dwd_deals")
    if t is None:
        return {}
    ids = t["deal_id"].to_pylist()
    assert len(ids) == len(set(ids)), "a deal twice in dwd_deals"
    return {i: (ts, a) for i, ts, a, c in zip(ids, micros(t["event_time"]), t["amount"].to_pylist(),
                                               t["city"].to_pylist()) if c != SENTINEL_CITY}


def test_cascade_replaces_the_range_in_the_layer_and_every_layer_downstream(tmp_path, strata_bin, own_broker, rng):
    def closed(live: Live) -> bool:
        return (len(dwd_rows(live.wh)) == len(live.deals) and live.wh.table("dws", "dws_city") is not None
                and {k: v for k, v in table_rows(live.wh).items() if k[0] <= CLOSED_US}
                == reference(live.deals, big_only=False))

    s = Live(tmp_path, strata_bin, own_broker, rng, CHAIN, 1_200, closed)
    dws_v1, dws_v2 = reference(s.deals, big_only=False), reference(s.deals, big_only=True)
    dwd_all = {d.deal_id: (d.ts, d.amount) for d in s.deals}
    dwd_v2_range = {k: v for k, v in dwd_all.items() if FROM_US <= v[0] < TO_US and v[1] >= BIG}
    assert in_range(dws_v1) != in_range(dws_v2), "the new SQL must change the DWS range"

    rc, log, summary = s.backfill("dwd_deals", "--cascade")
    assert rc == 0, log[-4000:]
    assert sorted(t["table"] for t in summary["tables"]) == ["dwd_deals", "dws_city"], summary

    # DWD: the range's rows are the new SQL's; the rest as they were.
    dwd = dwd_rows(s.wh)
    assert {k: v for k, v in dwd.items() if FROM_US <= v[0] < TO_US} == dwd_v2_range
    assert {k: v for k, v in dwd.items() if not FROM_US <= v[0] < TO_US} == \
        {k: v for k, v in dwd_all.items() if not FROM_US <= v[0] < TO_US}
    # DWS, downstream: recomputed from the new DWD rows over the range.
    dws = table_rows(s.wh)
    assert in_range(dws) == in_range(dws_v2)
    assert outside(dws) == outside(dws_v1), "a DWS row outside the range changed"


# -- --lookback ------------------------------------------------------------------

def session_rows(wh: LayeredWarehouse) -> dict[tuple, tuple]:
    """(window_start, window_end, agent) -> (deals, gmv), sentinels left out."""
    t = wh.table("dws", "dws_sessions")
    if t is None:
        return {}
    out = {}
    for start, end, agent, n, gmv in zip(micros(t["window_start"]), micros(t["window_end"]), t["agent"].to_pylist(),
                                         t["deals"].to_pylist(), t["gmv"].to_pylist()):
        if agent == "zz":
            continue
        assert (start, end, agent) not in out, f"session {iso(start)} {agent} twice"
        out[(start, end, agent)] = (n, gmv)
    return out


def session_reference(deals, big_only: bool) -> dict[tuple, tuple]:
    kept = [d for d in deals if not big_only or d.amount >= BIG]
    return {k: (len(v), sum((d.amount for d in v), Decimal(0))) for k, v in sessions(kept, GAP).items()}


def ending_in_range(rows: dict) -> dict:
    return {k: v for k, v in rows.items() if FROM_US < k[1] <= TO_US}


def ending_outside(rows: dict) -> dict:
    return {k: v for k, v in rows.items() if not FROM_US < k[1] <= TO_US}


def test_lookback_replays_early_enough_for_sessions_that_began_before_the_range(tmp_path, strata_bin, own_broker,
                                                                               rng):
    s = Live(tmp_path, strata_bin, own_broker, rng, SESSIONS, 600,
             lambda live: session_rows(live.wh) == session_reference(live.deals, big_only=False))
    v1, v2 = session_reference(s.deals, big_only=False), session_reference(s.deals, big_only=True)
    # Sessions the backfill must recompute whole: they end in the range
    # but began before --from (the replay needs their earlier deals).
    straddling = [k for k in ending_in_range(v2) if k[0] < FROM_US]
    assert len(straddling) >= 3, straddling
    assert all(k[0] >= FROM_US - 30 * MINUTE for k in v2 if k[1] > FROM_US), "a session longer than the lookback"
    assert ending_in_range(v1) != ending_in_range(v2)

    # Without --lookback: refused, as a session has no bounded length.
    rc, log, _ = s.backfill("dws_sessions", name="no-lookback")
    assert rc != 0 and "give --lookback" in log, log[-3000:]
    assert session_rows(s.wh) == v1

    rc, log, summary = s.backfill("dws_sessions", "--lookback", "30m")
    assert rc == 0, log[-4000:]
    got = session_rows(s.wh)
    assert ending_in_range(got) == ending_in_range(v2)
    assert ending_outside(got) == ending_outside(v1), "a session outside the range changed"
