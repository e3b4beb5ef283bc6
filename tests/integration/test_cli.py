"""The command line: `strata validate` on good and bad files, and the exit
codes every command shares (README "Exit codes")."""

import json
import subprocess

from conftest import Warehouse, unique

# README "Exit codes".
CONFIG, DATA = 2, 3


def run(strata_bin, *args):
    return subprocess.run([strata_bin, *args], capture_output=True, text=True, timeout=60)


def test_validate_accepts_the_quickstart_warehouse(strata_bin):
    out = run(strata_bin, "validate", "examples/quickstart/warehouse.yaml")
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


def test_validate_reports_every_problem_with_file_line_column(strata_bin, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """warehouse: t
kafka:
  bootstrap_servers: 127.0.0.1:9092
schemas:
  deal:
    event_time: ts
    fields:
      - {name: id, type: strng}
      - {name: ts, type: timestamp}
layers:
  - name: ods_deals
    kind: ods
    source: {topic: deals, schema: dael}
  - name: ods_deals
    kind: ods
    soruce: {topic: x, schema: deal}
"""
    )
    out = run(strata_bin, "validate", str(bad))
    assert out.returncode == CONFIG
    err = out.stderr
    assert f"{bad}:8:26: schemas.deal.fields[0].type: unknown type `strng`" in err, err
    assert "help: did you mean `string`?" in err, err
    assert f"{bad}:13:36: layers.ods_deals.source.schema: no schema named `dael`" in err, err
    assert "help: did you mean `deal`?" in err, err
    assert f"{bad}:14:11: layers.ods_deals: layer `ods_deals` is defined twice" in err, err
    assert f"{bad}:14:5: layers.ods_deals.source: missing required key `source`" in err, err
    assert f"{bad}:16:5: layers.ods_deals.soruce: unknown key `soruce`" in err, err
    assert "help: did you mean `source`?" in err, err
    assert "problems found" in err, err


SQL_WAREHOUSE = """warehouse: t
kafka: {bootstrap_servers: "127.0.0.1:9"}
schemas:
  deal:
    event_time: ts
    fields: [{name: id, type: string}, {name: city, type: string}, {name: ts, type: timestamp}]
layers:
  - {name: ods_deals, kind: ods, source: {topic: deals, schema: deal}}
  - name: dws_deals
    kind: dws
    inputs: [ods_deals]
    sql: %s
"""


def test_validate_plans_sql_and_prints_each_layers_columns(strata_bin, tmp_path):
    wh = tmp_path / "wh.yaml"
    wh.write_text(
        SQL_WAREHOUSE
        % "SELECT window_start, city, COUNT(*) AS deals FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end, city"
    )
    out = run(strata_bin, "validate", str(wh))
    assert out.returncode == 0, out.stderr
    assert "dws_deals: window_start Timestamp(" in out.stdout, out.stdout
    assert "city Utf8, deals Int64" in out.stdout, out.stdout


def test_sql_errors_point_at_the_layers_sql_line(strata_bin, tmp_path):
    for sql, message in [
        ("SELECT cty FROM ods_deals", "cty"),
        ("SELECT 1 AS one", "the query reads no input"),
        ("SELECT city, COUNT(*) FROM ods_deals GROUP BY city", "alias it"),
        ("SELECT * FROM ods_deals ORDER BY ts", "ORDER BY over a whole stream"),
    ]:
        wh = tmp_path / "wh.yaml"
        wh.write_text(SQL_WAREHOUSE % sql)
        for command in ["validate", "run"]:
            out = run(strata_bin, command, str(wh))
            assert out.returncode == CONFIG, (command, sql, out.stderr)
            assert f"{wh}:12:10: layers.dws_deals.sql: " in out.stderr, (command, out.stderr)
            assert message in out.stderr, (command, out.stderr)
            # Nothing was started: no table, no server.
            assert not (tmp_path / "data").exists(), command


def test_state_ttl_is_planned_for_a_group_by_without_windows_and_refused_elsewhere(strata_bin, tmp_path):
    wh = tmp_path / "wh.yaml"
    wh.write_text(SQL_WAREHOUSE % "SELECT city, COUNT(*) AS deals FROM ods_deals GROUP BY city" + "    state_ttl: 7d\n")
    out = run(strata_bin, "validate", "--plan", str(wh))
    assert out.returncode == 0, out.stderr
    assert "upserted by city; groups not updated for 7d are forgotten (state_ttl)" in out.stdout, out.stdout

    wh.write_text(
        SQL_WAREHOUSE
        % "SELECT window_start, city, COUNT(*) AS deals FROM TABLE(TUMBLE(TABLE ods_deals, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end, city"
        + "    state_ttl: 7d\n"
    )
    out = run(strata_bin, "validate", str(wh))
    assert out.returncode == CONFIG, out.stderr
    assert "`state_ttl` applies to a GROUP BY without windows" in out.stderr, out.stderr
    assert "window aggregate: TUMBLE 1m" in out.stderr, out.stderr


def test_validate_prints_what_a_chain_of_windows_costs_in_freshness(strata_bin):
    """Each layer's watermark lag: the reference warehouse's 1-second dedup
    window forwards a watermark 1 s behind its own, so the per-minute layer
    downstream of it is 3 s (ODS delay) + 1 s behind the newest event."""
    out = run(strata_bin, "validate", "examples/beike/warehouse.yaml")
    assert out.returncode == 0, out.stderr
    layers, name = {}, None
    for line in out.stdout.splitlines()[1:]:
        if not line.startswith("    "):
            name = line.strip().split(":", 1)[0]
        layers[name] = layers.get(name, "") + line + "\n"

    assert "window aggregate: TUMBLE 1s on ods_deals.event_time" in layers["dwd_deals"]
    assert ("watermark: 3s behind the newest event; forwards 4s (its rows can be dated 1s before its watermark)"
            in layers["dwd_deals"]), layers["dwd_deals"]
    assert "watermark: 4s behind the newest event\n" in layers["dws_store_minute"], layers["dws_store_minute"]
    assert "watermark: 3s behind the newest event" in layers["ods_deals"]


def test_validate_plan_shows_each_layers_operator_tables_and_readers(strata_bin):
    out = run(strata_bin, "validate", "--plan", "examples/beike/warehouse.yaml")
    assert out.returncode == 0, out.stderr
    plan = out.stdout[out.stdout.index("dataflow `beike`"):]
    assert "dataflow `beike`: 2 source(s), 12 layer(s), an epoch every 1s" in plan
    dwd = plan[plan.index("layer dwd_deals (dwd)"):plan.index("layer dwd_deals_wide")]
    for line in ["window aggregate: TUMBLE 1s on ods_deals.event_time",
                 "late rows of ods_deals (by event_time): late once its window has closed (window end <= watermark)",
                 "output watermark: the layer's minus 1s",
                 "table dwd_deals_late (late rows of ods_deals, appended)",
                 "table dwd_deals_rejected (rows the filter rejected, appended)",
                 "read by dwd_deals_wide"]:
        assert line in dwd, (line, dwd)
    assert "table ads_city_gmv_today (rows, upserted by event_day, city_name)" in plan


def test_output_to_a_closed_pipe_ends_quietly(strata_bin):
    """`strata validate --plan FILE | head -1`: the reader goes away before
    the plan is printed; the command ends with 0, without a panic."""
    proc = subprocess.Popen([strata_bin, "validate", "--plan", "examples/beike/warehouse.yaml"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"panicked" not in err, err


def test_a_checkpoint_of_a_newer_format_is_refused_as_data(strata_bin, kafka, tmp_path):
    """A checkpoint written by a newer Strata: `strata run` refuses to read
    it, says what to do, exits 3 (data), and writes nothing."""
    wh = Warehouse(tmp_path / "wh", kafka, unique("newer"))
    wh.checkpoint_dir.mkdir(parents=True)
    newer = wh.checkpoint_dir / "00000000000000000001.json"
    newer.write_text(json.dumps({"format": 99, "epoch": 1}))
    out = run(strata_bin, "run", "--no-serve", str(wh.path))
    assert out.returncode == DATA, out.stderr
    assert "manifest format 99, written by a newer Strata" in out.stderr, out.stderr
    assert [p.name for p in wh.checkpoint_dir.iterdir()] == [newer.name]
    assert not wh.table_path.exists()
