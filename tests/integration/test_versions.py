"""Deployed versions: every `strata run` records the warehouse file it ran
beside the checkpoints, each manifest names that file's hash, and
`strata history` lists the versions with the epochs each committed.

Needs: the shared broker (memory storage) from scripts/test.
"""

import hashlib
import json
import subprocess

from deltalake import DeltaTable

from conftest import Strata, Warehouse, check_exactly_once, create_topic, make_records, produce, unique, wait_until

PARTITIONS = 2

DWD = """  - name: dwd_deals
    kind: dwd
    inputs: [ods_deals]
    sql: SELECT deal_id, {city} AS city, amount, event_time FROM ods_deals
"""


def deploy(wh: Warehouse, city_expr: str) -> str:
    """Writes the file with the DWD layer's SQL; returns its sha256."""
    wh.write()
    text = wh.path.read_text() + DWD.format(city=city_expr)
    wh.path.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def manifests(wh: Warehouse) -> dict[int, dict]:
    return {int(p.stem): json.loads(p.read_text()) for p in wh.checkpoint_dir.glob("*.json")}


def history(strata_bin: str, wh: Warehouse, *extra: str) -> str:
    done = subprocess.run([strata_bin, "history", str(wh.path), *extra], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_history_lists_each_deployed_version_with_its_epochs(tmp_path, strata_bin, kafka, rng):
    topic = unique("deals")
    create_topic(kafka, topic, partitions=PARTITIONS)
    sent = produce(kafka, topic, make_records(1_000, PARTITIONS, malformed_every=0, rng=rng))
    wh = Warehouse(tmp_path, kafka, topic)
    first = deploy(wh, "city")
    strata = Strata(strata_bin, wh, "--bounded", "--no-serve").start()
    assert strata.wait(120) == 0, strata.log()[-3000:]
    first_epochs = sorted(manifests(wh))
    assert first_epochs, "the first run committed no epoch"

    # The layer's SQL changes; the second run picks up where the first ended.
    second = deploy(wh, "upper(city)")
    assert second != first
    sent += produce(kafka, topic, make_records(1_000, PARTITIONS, malformed_every=0, rng=rng, first=1_000))
    strata = Strata(strata_bin, wh, "--no-serve").start()
    wait_until(lambda: (strata.assert_alive(), wh.row_count() >= len(sent))[1], 120, "every row")
    assert strata.stop() == 0, strata.log()[-3000:]
    check_exactly_once(wh, sent)
    on_disk = manifests(wh)
    assert max(on_disk) > first_epochs[-1], "the second run committed no epoch"

    listed = json.loads(history(strata_bin, wh, "--json"))
    assert [v["hash"] for v in listed] == [first, second]
    assert [v["current"] for v in listed] == [False, True]
    # The epoch ranges: the first run's from 1 to the last manifest it
    # wrote, the second's from the next to the newest manifest.
    assert (listed[0]["first_epoch"], listed[0]["last_epoch"]) == (1, first_epochs[-1])
    assert (listed[1]["first_epoch"], listed[1]["last_epoch"]) == (first_epochs[-1] + 1, max(on_disk))
    # Every manifest retained names the version whose range holds it.
    for epoch, manifest in on_disk.items():
        owner = first if epoch <= first_epochs[-1] else second
        assert manifest.get("version") == owner, (epoch, manifest.get("version"))
    assert all(not v["manifests_naming_other_versions"] for v in listed), listed
    assert sum(v["manifests_retained"] for v in listed) == len(on_disk)

    # The files recorded are the files run, byte for byte.
    versions = wh.dir / "data" / "_strata" / "versions" / "test"
    recorded = {hashlib.sha256(p.read_bytes()).hexdigest() for p in versions.glob("*.yaml")}
    assert recorded == {first, second}

    # Each epoch's Delta commit names the version that ran it, as Python
    # deltalake reads the commit info.
    for table in (wh.table_path, wh.dir / "data" / "dwd" / "dwd_deals"):
        commits = [c for c in DeltaTable(str(table)).history() if c.get("operation") == "STREAMING UPDATE"]
        assert commits, table
        named = [c.get("strata.version") for c in reversed(commits)]  # oldest first
        assert set(named) == {first, second}, named
        assert named == sorted(named, key=[first, second].index), "a commit names a version out of order"

    text = history(strata_bin, wh)
    assert first[:12] in text and second[:12] in text, text
    assert f"1-{first_epochs[-1]}" in text, text
