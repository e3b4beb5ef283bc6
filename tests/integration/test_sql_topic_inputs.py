"""A SQL layer reading a Kafka topic directly (no ODS layer in between), and
idle partitions that must not hold event time back.

Needs: the shared broker (memory storage) from scripts/test.
"""

from __future__ import annotations

import pathlib
from collections import Counter

from conftest import Sent, Strata, create_topic, produce, unique, wait_until
from layered import MINUTE, SECOND, LayeredWarehouse, disordered_deals, micros


def warehouse(tmp_path: pathlib.Path, kafka: str, topic: str, idle_timeout: str) -> LayeredWarehouse:
    # The ODS layer reads an empty topic of its own; the layer under test
    # reads `topic` itself.
    ods_topic = unique("unused")
    create_topic(kafka, ods_topic, partitions=1)
    return LayeredWarehouse(tmp_path, kafka, ods_topic, f"""
  - name: dws_city
    kind: dws
    inputs: [{{topic: {topic}, schema: deal, name: deals}}]
    watermark: {{delay: 5s, idle_timeout: {idle_timeout}}}
    sql: >
      SELECT window_start, window_end, city, COUNT(*) AS deals
      FROM TABLE(TUMBLE(TABLE deals, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
      GROUP BY window_start, window_end, city
""")


def test_a_layer_reads_a_topic_and_an_idle_partition_does_not_stall_windows(tmp_path, strata_bin, kafka, rng):
    """Every record goes to partition 0 of a 3-partition topic: the other two
    never see a row. After the idle timeout they stop holding the watermark
    back, and the windows close."""
    topic = unique("deals")
    create_topic(kafka, topic, partitions=3)
    wh = warehouse(tmp_path, kafka, topic, "2s")
    deals = disordered_deals(1_200, rng, step_us=500_000, jitter_us=2 * SECOND)
    produce(kafka, topic, [Sent(key=d.agent.encode(), value=d.to_json(), partition=0) for d in deals])
    strata = Strata(strata_bin, wh).start()
    last_ts = max(d.ts for d in deals)
    # Windows that end before the watermark (latest time - 5 s) close.
    want = Counter((d.ts - d.ts % MINUTE, d.city) for d in deals if d.ts - d.ts % MINUTE + MINUTE <= last_ts - 5 * SECOND)
    wait_until(lambda: (strata.assert_alive(), wh.count("dws", "dws_city") >= len(want))[1], 60,
               "windows to close despite the idle partitions")
    assert strata.stop() == 0, strata.log()[-3000:]
    table = wh.table("dws", "dws_city")
    got = Counter({(s, c): n for s, c, n in zip(micros(table.column("window_start")), table.column("city").to_pylist(),
                                                table.column("deals").to_pylist())})
    assert got == want
    # The source's side tables belong to the reading layer.
    assert wh.count("dws", "dws_city_dead_letter") == 0
    assert (wh.table_path("dws", "dws_city_future") / "_delta_log").exists()


def test_a_partition_with_unread_records_is_slow_not_idle(tmp_path, strata_bin, kafka, rng):
    """Two partitions with an hour of deals waiting, and an idle timeout far
    shorter than a fetch: the consumer reads the partitions a batch at a
    time, so each goes minutes of event time without a row. A partition
    with records still unread is slow, not idle: it holds the watermark
    back, no row is late, and every window counts every deal."""
    topic = unique("deals")
    create_topic(kafka, topic, partitions=2)
    wh = warehouse(tmp_path, kafka, topic, "1ms")
    deals = disordered_deals(20_000, rng, step_us=180_000, jitter_us=2 * SECOND)
    produce(kafka, topic, [Sent(key=d.agent.encode(), value=d.to_json(), partition=i % 2)
                           for i, d in enumerate(deals)])
    strata = Strata(strata_bin, wh).start()
    last_ts = max(d.ts for d in deals)
    want = Counter((d.ts - d.ts % MINUTE, d.city) for d in deals if d.ts - d.ts % MINUTE + MINUTE <= last_ts - 5 * SECOND)
    wait_until(lambda: (strata.assert_alive(), wh.count("dws", "dws_city") + wh.count("dws", "dws_city_late")
                        >= len(want))[1], 90, "the backlog to be read")
    assert strata.stop() == 0, strata.log()[-3000:]
    assert wh.count("dws", "dws_city_late") == 0, "rows of a partition waiting to be read were routed late"
    table = wh.table("dws", "dws_city")
    got = Counter({(s, c): n for s, c, n in zip(micros(table.column("window_start")), table.column("city").to_pylist(),
                                                table.column("deals").to_pylist())})
    assert got == want
