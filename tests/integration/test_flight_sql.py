"""Serving the warehouse over Arrow Flight SQL, checked with real clients
from PyPI: the ADBC Flight SQL driver, flightsql-dbapi (SQLAlchemy) and
pyarrow.flight. Our own client (`strata query`) is checked too.

Tables are written with the `deltalake` package into the warehouse's
storage root, where the server discovers them; the last test reads tables
while a live ODS pipeline commits (needs the shared broker).
"""

import os
import socket
import subprocess
import time

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import flightsql.sqlalchemy  # noqa: F401  registers the datafusion+flightsql dialect
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from deltalake import DeltaTable, write_deltalake
from sqlalchemy import create_engine, inspect, text

from conftest import (
    Strata, Warehouse, _STARTED, create_topic, free_port, make_records, produce_in_background,
    unique, wait_until,
)

USER, PASSWORD = "bi", "s3cret-pw"

CITIES = pa.table({
    "city": ["beijing", "shanghai", "shenzhen", "hangzhou", "chengdu"],
    "gmv": pa.array([900.5, 1200.25, 800.0, 450.75, 300.0], pa.float64()),
    "deals": pa.array([9, 12, 8, 4, 3], pa.int64()),
})


class Server:
    """`strata serve` over a warehouse directory. `users` maps user names to
    passwords (default: USER with PASSWORD); `serve` is extra YAML for the
    `serve:` section."""

    def __init__(self, strata_bin, dir, users=True, listen_host="127.0.0.1", tls=None, serve="", dashboard=""):
        self.dir = dir
        self.port = free_port()
        if users is True:
            users = {USER: PASSWORD}
        env = {f"TEST_FLIGHT_PASSWORD_{i}": pw for i, pw in enumerate((users or {}).values())}
        users_yaml = "".join(
            f"""
    - {{username: {name}, password: "${{TEST_FLIGHT_PASSWORD_{i}}}"}}""" for i, name in enumerate(users or {}))
        users_yaml = f"""
  users:{users_yaml}""" if users else ""
        tls_yaml = f"""
  tls: {{cert: {tls[0]}, key: {tls[1]}}}""" if tls else ""
        (dir / "warehouse.yaml").write_text(f"""warehouse: served
storage:
  root: ./data
kafka:
  bootstrap_servers: 127.0.0.1:1
serve:
  listen: {listen_host}:{self.port}{users_yaml}{tls_yaml}{serve}
schemas:
  s:
    event_time: t
    fields: [{{name: t, type: timestamp}}]
layers: []{dashboard}
""")
        self.log = dir / "serve.log"
        self.proc = subprocess.Popen(
            [strata_bin, "--log-format", "json", "serve", str(dir / "warehouse.yaml")],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
        _STARTED.append(self.proc)

        def listening():
            assert self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_until(listening, 30, "the Flight SQL server to listen")

    @property
    def uri(self):
        return f"grpc://127.0.0.1:{self.port}"

    def connect(self, user=USER, password=PASSWORD, **kwargs):
        db_kwargs = {"username": user, "password": password} if user else {}
        db_kwargs.update(kwargs)
        # The warehouse is read-only: there are no transactions to turn off.
        return flight_sql.connect(self.uri, db_kwargs=db_kwargs, autocommit=True)


@pytest.fixture
def served(tmp_path, strata_bin):
    root = tmp_path / "data"
    write_deltalake(str(root / "ads" / "gmv_by_city"), CITIES)
    deals = pa.table({
        "deal_id": [f"d{i}" for i in range(5000)],
        "city": [CITIES["city"][i % 5].as_py() for i in range(5000)],
        "amount": pa.array([float(i) for i in range(5000)], pa.float64()),
    })
    write_deltalake(str(root / "ods" / "deals"), deals)
    return Server(strata_bin, tmp_path)


def test_adbc_lists_catalogs_schemas_tables_and_columns(served):
    with served.connect() as conn:
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        catalogs = {c["catalog_name"]: c for c in objects}
        assert list(catalogs) == ["strata"]
        schemas = {s["db_schema_name"]: s for s in catalogs["strata"]["catalog_db_schemas"]}
        assert set(schemas) == {"ods", "dwd", "dws", "ads"}
        tables = {t["table_name"]: t for t in schemas["ads"]["db_schema_tables"]}
        assert set(tables) == {"gmv_by_city"}
        columns = [c["column_name"] for c in tables["gmv_by_city"]["table_columns"]]
        assert columns == ["city", "gmv", "deals"]
        assert {t["table_name"] for t in schemas["ods"]["db_schema_tables"]} == {"deals"}
        schema = conn.adbc_get_table_schema("gmv_by_city", catalog_filter="strata", db_schema_filter="ads")
        assert schema.field("gmv").type == pa.float64()
        assert "TABLE" in conn.adbc_get_table_types()
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "Strata", info


def test_adbc_query_and_fetch_arrow_table(served):
    with served.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT city, gmv, deals FROM ads.gmv_by_city ORDER BY gmv DESC")
        got = cur.fetch_arrow_table()
        want = CITIES.sort_by([("gmv", "descending")])
        assert got.column("city").to_pylist() == want.column("city").to_pylist()
        assert got.column("gmv").to_pylist() == want.column("gmv").to_pylist()
        # Fully qualified names work too, and so does a join across layers.
        cur.execute(
            "SELECT g.city, count(*) AS n, sum(d.amount) AS total FROM strata.ods.deals d "
            "JOIN strata.ads.gmv_by_city g ON d.city = g.city GROUP BY g.city ORDER BY g.city"
        )
        rows = cur.fetchall()
        assert [(c, n) for c, n, _ in rows] == sorted((c, 1000) for c in CITIES["city"].to_pylist())
        assert sum(t for _, _, t in rows) == sum(range(5000))


def test_adbc_parameterized_prepared_statement(served):
    with served.connect() as conn, conn.cursor() as cur:
        sql = "SELECT city, deals FROM ads.gmv_by_city WHERE gmv > ? AND city <> ? ORDER BY city"
        cur.execute(sql, parameters=(500.0, "beijing"))
        assert cur.fetchall() == [("shanghai", 12), ("shenzhen", 8)]
        # The same prepared statement, other values.
        cur.execute(sql, parameters=(100.0, "shanghai"))
        assert [c for c, _ in cur.fetchall()] == ["beijing", "chengdu", "hangzhou", "shenzhen"]
        cur.adbc_prepare("SELECT count(*) FROM ods.deals WHERE amount < ?")
        cur.execute("SELECT count(*) FROM ods.deals WHERE amount < ?", parameters=(10.0,))
        assert cur.fetchone() == (10,)


def test_wrong_password_is_refused(served):
    with pytest.raises(adbc_driver_flightsql.dbapi.Error) as err:
        with served.connect(password="wrong") as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "UNAUTHENTICATED" in str(err.value) or "Unauthenticated" in str(err.value), err.value
    # Without credentials at all.
    with pytest.raises(adbc_driver_flightsql.dbapi.Error) as err:
        with served.connect(user=None) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "nauthenticated" in str(err.value) or "UNAUTHENTICATED" in str(err.value), err.value


def test_errors_carry_codes_and_helpful_messages(served):
    with served.connect() as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_flightsql.dbapi.Error) as err:
            cur.execute("SELECT city FROM ads.gmv_by_cty")
        message = str(err.value)
        assert "NOT_FOUND" in message or "NotFound" in message, message
        assert "did you mean `ads.gmv_by_city`?" in message, message
        with pytest.raises(adbc_driver_flightsql.dbapi.Error) as err:
            cur.execute("SELECT city FROM ads.gmv_by_city WHERE")
        message = str(err.value)
        assert "INVALID_ARGUMENT" in message or "InvalidArgument" in message, message
        assert "Line: 1, Column:" in message, message
        with pytest.raises(adbc_driver_flightsql.dbapi.Error) as err:
            cur.execute("DROP TABLE ads.gmv_by_city")
        assert DeltaTable(str(served.dir / "data" / "ads" / "gmv_by_city")).version() == 0


def test_flightsql_dbapi_sqlalchemy_inspects_and_queries(served):
    engine = create_engine(f"datafusion+flightsql://{USER}:{PASSWORD}@127.0.0.1:{served.port}?insecure=true")
    inspector = inspect(engine)
    assert set(inspector.get_schema_names()) >= {"ods", "ads"}
    assert inspector.get_table_names(schema="ads") == ["gmv_by_city"]
    columns = [c["name"] for c in inspector.get_columns("gmv_by_city", schema="ads")]
    assert columns == ["city", "gmv", "deals"]
    with engine.connect() as conn:
        total = conn.execute(text("SELECT sum(deals) FROM ads.gmv_by_city")).scalar()
    assert total == 36


def test_strata_query_cli(served, strata_bin):
    out = subprocess.run(
        [strata_bin, "query", "--endpoint", f"http://127.0.0.1:{served.port}", "--user", USER,
         "SELECT city, deals FROM ads.gmv_by_city WHERE deals > 8 ORDER BY deals"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "STRATA_PASSWORD": PASSWORD},
    )
    assert out.returncode == 0, out.stderr
    assert "| beijing  | 9     |" in out.stdout and "| shanghai | 12    |" in out.stdout, out.stdout
    assert "2 rows" in out.stdout


def test_a_client_that_disconnects_mid_stream_does_not_leak_the_query(served):
    client = flight.FlightClient(served.uri)
    headers = [client.authenticate_basic_token(USER, PASSWORD)]
    options = flight.FlightCallOptions(headers=headers)

    def active():
        [result] = list(client.do_action(flight.Action("strata.active_queries", b""), options))
        return int(result.body.to_pybytes())

    with served.connect() as conn, conn.cursor() as cur:
        # 5000 x 5000 rows: far more than a client reads before hanging up.
        cur.execute("SELECT a.deal_id, b.amount FROM ods.deals a CROSS JOIN ods.deals b")
        reader = cur.fetch_record_batch()
        reader.read_next_batch()
        assert active() == 1
    wait_until(lambda: active() == 0, 30, "the abandoned query to stop")


def test_without_users_the_server_listens_on_loopback_only(tmp_path, strata_bin):
    server = Server(strata_bin, tmp_path, users=False, listen_host="0.0.0.0")
    log = server.log.read_text()
    assert "serving on loopback only" in log, log
    with server.connect(user=None) as conn, conn.cursor() as cur:
        cur.execute("SELECT 42")
        assert cur.fetchone() == (42,)
    others = [ip for ip in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
              if ":" not in ip and not ip.startswith("127.")]
    for ip in others:
        with pytest.raises(OSError):
            socket.create_connection((ip, server.port), timeout=1).close()


def self_signed(dir):
    """A certificate as `openssl req -x509` makes it: self-signed, marked
    as a CA (basicConstraints CA:TRUE), for 127.0.0.1 and localhost."""
    cert, key = dir / "server.crt", dir / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    text = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-text"],
                          check=True, capture_output=True, text=True).stdout
    assert "CA:TRUE" in text, text
    return cert, key


def strata_query(strata_bin, endpoint, sql, *extra):
    return subprocess.run(
        [strata_bin, "query", "--endpoint", endpoint, "--user", USER, *extra, sql],
        capture_output=True, text=True, timeout=60, env={**os.environ, "STRATA_PASSWORD": PASSWORD},
    )


def test_tls(tmp_path, strata_bin):
    cert, key = self_signed(tmp_path)
    write_deltalake(str(tmp_path / "data" / "ads" / "gmv_by_city"), CITIES)
    server = Server(strata_bin, tmp_path, tls=(cert, key))
    uri = f"grpc+tls://127.0.0.1:{server.port}"
    db_kwargs = {"username": USER, "password": PASSWORD,
                 adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value: cert.read_text()}
    with flight_sql.connect(uri, db_kwargs=db_kwargs, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ads.gmv_by_city")
        assert cur.fetchone() == (5,)
    # A plaintext client cannot talk to it.
    with pytest.raises(adbc_driver_flightsql.dbapi.Error):
        with server.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    # Our own client trusts the same self-signed certificate given with --ca,
    # by IP address and by name.
    for host in ["127.0.0.1", "localhost"]:
        out = strata_query(strata_bin, f"https://{host}:{server.port}", "SELECT count(*) AS n FROM ads.gmv_by_city",
                           "--ca", str(cert))
        assert out.returncode == 0, out.stderr
        assert "| 5 |" in out.stdout, out.stdout
    # Without it, the error says what failed and what to do.
    out = strata_query(strata_bin, f"https://127.0.0.1:{server.port}", "SELECT 1")
    assert out.returncode != 0
    assert "self-signed CA certificate" in out.stderr and "--ca" in out.stderr, out.stderr
    # Another self-signed certificate is not the server's.
    (tmp_path / "other").mkdir()
    other, _ = self_signed(tmp_path / "other")
    out = strata_query(strata_bin, f"https://127.0.0.1:{server.port}", "SELECT 1", "--ca", str(other))
    assert out.returncode != 0 and "invalid peer certificate" in out.stderr, out.stderr
    # Plain text against TLS, and TLS against plain text, say so.
    out = strata_query(strata_bin, f"http://127.0.0.1:{server.port}", "SELECT 1")
    assert out.returncode != 0 and "https://" in out.stderr, out.stderr


def test_dashboard_reads_through_tls_with_the_self_signed_certificate(tmp_path, strata_bin):
    import json
    import urllib.request

    cert, key = self_signed(tmp_path)
    write_deltalake(str(tmp_path / "data" / "ads" / "gmv_by_city"), CITIES)
    page_port = free_port()
    Server(strata_bin, tmp_path, tls=(cert, key), dashboard=f"""
dashboard:
  listen: 127.0.0.1:{page_port}
  refresh: 1s
  panels:
    - {{title: GMV, chart: bar, label: city, value: gmv, sql: "SELECT city, gmv FROM ads.gmv_by_city ORDER BY gmv DESC"}}
""")

    # Users are configured: the dashboard asks for the same login as Flight SQL.
    import base64
    login = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def panel():
        request = urllib.request.Request(f"http://127.0.0.1:{page_port}/api/panels/0",
                                         headers={"Authorization": f"Basic {login}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return json.loads(r.read())
        except OSError:
            return None

    data = wait_until(panel, 30, "the dashboard to answer")
    assert "error" not in data, data
    assert len(data["rows"]) == 5, data


def test_adbc_logs_in_with_passwords_of_every_length_mod_3(tmp_path, strata_bin):
    """ADBC (Go) sends Basic credentials without base64 padding; the server
    accepts both forms, whatever the length of user:password."""
    users = {"bi": "pw3456", "bi1": "pw34567", "bi22": "pw345678"}
    assert {len(f"{u}:{p}") % 3 for u, p in users.items()} == {0, 1, 2}
    write_deltalake(str(tmp_path / "data" / "ads" / "gmv_by_city"), CITIES)
    server = Server(strata_bin, tmp_path, users=users)
    for user, password in users.items():
        with server.connect(user=user, password=password) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM ads.gmv_by_city")
            assert cur.fetchone() == (5,), user
        with pytest.raises(adbc_driver_flightsql.dbapi.Error) as err:
            with server.connect(user=user, password=password + "x") as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
        assert "nauthenticated" in str(err.value) or "UNAUTHENTICATED" in str(err.value), err.value


def test_every_call_but_the_handshake_needs_credentials(served):
    client = flight.FlightClient(served.uri)
    for call in [lambda o: list(client.list_actions(o)),
                 lambda o: list(client.do_action(flight.Action("strata.active_queries", b""), o)),
                 lambda o: list(client.list_flights(options=o)),
                 lambda o: client.get_flight_info(flight.FlightDescriptor.for_command(b"x"), o)]:
        with pytest.raises(flight.FlightUnauthenticatedError):
            call(flight.FlightCallOptions())
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(USER, PASSWORD)])
    actions = {a.type for a in client.list_actions(options)}
    assert {"CreatePreparedStatement", "strata.active_queries", "strata.query_status"} <= actions, actions


def test_strings_are_plain_utf8_and_sort_in_pyarrow(served, tmp_path, strata_bin):
    with served.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT city, upper(city) AS u, deals FROM ads.gmv_by_city")
        table = cur.fetch_arrow_table()
    assert table.schema.field("city").type == pa.string(), table.schema
    assert table.schema.field("u").type == pa.string(), table.schema
    ordered = table.sort_by([("city", "ascending")])
    assert ordered.column("city").to_pylist() == sorted(CITIES["city"].to_pylist())
    assert table.take([0]).num_rows == 1
    # string_view: true serves Arrow's view type to the clients that want it.
    viewed = tmp_path / "viewed"
    viewed.mkdir()
    write_deltalake(str(viewed / "data" / "ads" / "gmv_by_city"), CITIES)
    server = Server(strata_bin, viewed, serve="\n  string_view: true")
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT city FROM ads.gmv_by_city")
        assert cur.fetch_arrow_table().schema.field("city").type == pa.string_view()


def test_user_mistakes_are_invalid_arguments(served):
    with served.connect() as conn, conn.cursor() as cur:
        for sql, params, says in [
            ("SELECT 1/0", None, "Divide by zero"),
            ("SELECT CAST('abc' AS INT)", None, "abc"),
            ("SELECT city FROM ads.gmv_by_city WHERE deals > ?", None, "no values are bound"),
            ("SELECT city FROM ads.gmv_by_city WHERE deals > ?", (1, 2), "2 parameter values bound"),
        ]:
            with pytest.raises(adbc_driver_flightsql.dbapi.Error) as err:
                cur.execute(sql, parameters=params)
                cur.fetchall()
            message = str(err.value)
            assert "INVALID_ARGUMENT" in message or "InvalidArgument" in message, (sql, message)
            assert says in message, (sql, message)
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_queries_during_commits_see_whole_epochs(tmp_path, strata_bin, kafka, rng):
    """While an ODS pipeline commits every 100 ms, every count(*) a client
    sees is the row count of some committed Delta version."""
    topic = unique("deals")
    create_topic(kafka, topic, partitions=2)
    records = make_records(20_000, partitions=2, malformed_every=0, rng=rng)
    producer, errors = produce_in_background(kafka, topic, records, chunk=400, pause=0.05)
    port = free_port()
    wh = Warehouse(tmp_path, kafka, topic, interval="100ms", serve_port=port)
    strata = Strata(strata_bin, wh).start()
    wait_until(lambda: (strata.assert_alive(), wh.row_count() > 0)[1], 60, "the first commit")
    seen = []
    with flight_sql.connect(f"grpc://127.0.0.1:{port}", autocommit=True) as conn, conn.cursor() as cur:
        while producer.is_alive() or len(seen) < 20:
            cur.execute("SELECT count(*), count(DISTINCT _kafka_offset * 10 + _kafka_partition) FROM ods.ods_deals")
            count, distinct = cur.fetchone()
            assert count == distinct
            seen.append(count)
    producer.join()
    assert not errors, errors
    wait_until(lambda: wh.row_count() == len(records), 60, "all rows")
    assert strata.stop() == 0, strata.log()[-3000:]
    table = DeltaTable(str(wh.table_path))
    version_counts = {DeltaTable(str(wh.table_path), version=v).to_pyarrow_table(columns=["deal_id"]).num_rows
                      for v in range(table.version() + 1)}
    assert set(seen) <= version_counts, sorted(set(seen) - version_counts)
    assert len(set(seen)) > 3, seen
