//! An in-process server over a small warehouse, for the tests that throw
//! hostile requests at it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::sql::client::FlightSqlServiceClient;
use deltalake::DeltaTable;
use futures::TryStreamExt;
use tokio::sync::oneshot;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use crate::auth::Credentials;
use crate::limits::QueryLimits;
use crate::server::{ServeConfig, start};

pub(crate) const USER: &str = "bi";
pub(crate) const PASSWORD: &str = "s3cret-pw";
/// Rows of `ods.deals`.
pub(crate) const DEALS: i64 = 10_000;

pub(crate) struct TestServer {
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

/// A server with `ods.deals` (id, city, amount) and one user.
pub(crate) async fn start_server(limits: QueryLimits) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("ods/deals");
    std::fs::create_dir_all(&table).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("city", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let cities = ["beijing", "shanghai", "shenzhen", "hangzhou"];
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..DEALS)),
            Arc::new(StringArray::from_iter_values(
                (0..DEALS).map(|i| cities[i as usize % cities.len()]),
            )),
            Arc::new(Float64Array::from_iter_values((0..DEALS).map(|i| i as f64))),
        ],
    )
    .unwrap();
    let url = url::Url::from_directory_path(&table).unwrap();
    DeltaTable::try_from_url(url)
        .await
        .unwrap()
        .write(vec![batch])
        .await
        .unwrap();
    let root = url::Url::from_directory_path(dir.path()).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = start(
        ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            users: vec![Credentials {
                username: USER.into(),
                password: PASSWORD.into(),
            }],
            tls: None,
            root,
            storage_options: HashMap::new(),
            limits,
            handle_key: None,
            string_view: false,
        },
        async move {
            let _ = stopped.await;
        },
    )
    .await
    .unwrap();
    TestServer {
        addr: server.local_addr,
        _dir: dir,
        _stop: stop,
    }
}

/// A signed-in client.
pub(crate) async fn client(addr: SocketAddr) -> FlightSqlServiceClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(120))
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.handshake(USER, PASSWORD).await.unwrap();
    client
}

/// Runs `sql` (GetFlightInfo, then DoGet) and counts the rows.
pub(crate) async fn run(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<usize, Status> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(status)?;
    let mut rows = 0;
    for endpoint in info.endpoint {
        let Some(ticket) = endpoint.ticket else {
            continue;
        };
        let batches: Vec<RecordBatch> = client
            .do_get(ticket)
            .await
            .map_err(status)?
            .try_collect()
            .await
            .map_err(status)?;
        rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
    }
    Ok(rows)
}

/// The status inside a client error.
pub(crate) fn status(e: arrow_flight::error::FlightError) -> Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => Status::unknown(other.to_string()),
    }
}
