"""The Flight SQL server is read-only: statements that would write files,
register tables, change data or change the session are refused, with an
error the client sees, and leave nothing behind. Checked with the ADBC
Flight SQL driver from PyPI against `strata serve`.
"""

import adbc_driver_flightsql.dbapi
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from test_flight_sql import Server

CITIES = pa.table({
    "city": ["beijing", "shanghai"],
    "gmv": pa.array([900.5, 1200.25], pa.float64()),
    "deals": pa.array([9, 12], pa.int64()),
})


@pytest.fixture
def served(tmp_path, strata_bin):
    write_deltalake(str(tmp_path / "data" / "ads" / "gmv_by_city"), CITIES)
    return Server(strata_bin, tmp_path)


def refused(served, sql: str) -> str:
    """Runs `sql`, which must fail; returns the error the client got. The
    connection still answers a query afterwards."""
    with served.connect() as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_flightsql.dbapi.Error) as err:
            cur.execute(sql)
            cur.fetchall()
        cur.execute("SELECT count(*) FROM ads.gmv_by_city")
        assert cur.fetchone() == (2,)
    assert served.proc.poll() is None, served.log.read_text()
    return str(err.value)


def test_copy_to_is_refused_and_writes_no_file(served, tmp_path):
    out = tmp_path / "exported"
    message = refused(served, f"COPY (SELECT * FROM ads.gmv_by_city) TO '{out}' STORED AS CSV")
    assert "INVALID_ARGUMENT" in message and "DML not supported: COPY" in message, message
    assert not out.exists()


def test_create_external_table_is_refused_and_registers_nothing(served, tmp_path):
    csv = tmp_path / "outside.csv"
    csv.write_text("a\n1\n")
    message = refused(served, f"CREATE EXTERNAL TABLE outside STORED AS CSV LOCATION '{csv}'")
    assert "INVALID_ARGUMENT" in message and "DDL not supported: CreateExternalTable" in message, message
    with served.connect() as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_flightsql.dbapi.Error) as err:
            cur.execute("SELECT * FROM outside")
        assert "outside" in str(err.value), err.value


def test_insert_is_refused_and_the_table_is_unchanged(served):
    table = served.dir / "data" / "ads" / "gmv_by_city"
    message = refused(served, "INSERT INTO ads.gmv_by_city VALUES ('wuhan', 1.0, 1)")
    assert "INVALID_ARGUMENT" in message and "DML not supported: Insert Into" in message, message
    assert DeltaTable(str(table)).version() == 0
    assert DeltaTable(str(table)).to_pyarrow_table().sort_by("city") == CITIES.sort_by("city")


def test_set_is_refused_and_the_session_is_unchanged(served):
    message = refused(served, "SET datafusion.catalog.information_schema = false")
    assert "INVALID_ARGUMENT" in message and "Statement not supported: SetVariable" in message, message
    # information_schema is still there, as the server configured it.
    with served.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'ads'")
        assert cur.fetchall() == [("gmv_by_city",)]
