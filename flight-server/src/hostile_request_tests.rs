//! Hostile requests at the protocol level, through a real server: random
//! and edited statement handles, parameter binds whose Arrow IPC claims
//! absurd lengths or is edited byte by byte, oversized binds. Each is
//! refused with INVALID_ARGUMENT (or succeeds, for edits that keep the data
//! valid); none crashes the process, and the server then answers.

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandPreparedStatementQuery, DoPutPreparedStatementResult, ProstMessageExt,
};
use arrow_flight::{Action, FlightData, FlightDescriptor, Ticket};
use futures::TryStreamExt;
use prost::Message;
use prost::bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::limits::for_tests;
use crate::test_server::{client, run, start_server, status};

type Client = FlightSqlServiceClient<Channel>;

async fn prepare(client: &mut Client, sql: &str) -> Bytes {
    let action = Action {
        r#type: "CreatePreparedStatement".into(),
        body: ActionCreatePreparedStatementRequest {
            query: sql.into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec()
        .into(),
    };
    let mut results = client.do_action(action).await.unwrap();
    let result = results.message().await.unwrap().unwrap();
    let any = Any::decode(&*result.body).unwrap();
    let prepared: ActionCreatePreparedStatementResult = any.unpack().unwrap().unwrap();
    prepared.prepared_statement_handle
}

/// Runs a prepared statement's handle: GetFlightInfo then DoGet.
async fn execute(client: &mut Client, handle: Bytes) -> Result<usize, Status> {
    let cmd = CommandPreparedStatementQuery {
        prepared_statement_handle: handle,
    };
    let mut request = tonic::Request::new(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()));
    let token = client.token().cloned().unwrap_or_default();
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let info = client
        .inner_mut()
        .get_flight_info(request)
        .await?
        .into_inner();
    let mut rows = 0;
    for endpoint in info.endpoint {
        if let Some(ticket) = endpoint.ticket {
            let batches: Vec<RecordBatch> = client
                .do_get(ticket)
                .await
                .map_err(status)?
                .try_collect()
                .await
                .map_err(status)?;
            rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
        }
    }
    Ok(rows)
}

/// A DoGet of a raw ticket.
async fn do_get(client: &mut Client, ticket: Vec<u8>) -> Result<usize, Status> {
    let batches: Vec<RecordBatch> = client
        .do_get(Ticket {
            ticket: ticket.into(),
        })
        .await
        .map_err(status)?
        .try_collect()
        .await
        .map_err(status)?;
    Ok(batches.iter().map(RecordBatch::num_rows).sum())
}

/// A bind's messages, as a client sends them.
async fn bind_messages(handle: &Bytes, batch: &RecordBatch) -> Vec<FlightData> {
    let cmd = CommandPreparedStatementQuery {
        prepared_statement_handle: handle.clone(),
    };
    FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
            cmd.as_any().encode_to_vec(),
        )))
        .with_schema(batch.schema())
        .build(futures::stream::iter([Ok(batch.clone())]))
        .try_collect()
        .await
        .unwrap()
}

/// Sends a bind; the handle the server returns.
async fn bind(client: &mut Client, messages: Vec<FlightData>) -> Result<Bytes, Status> {
    let mut results = client
        .do_put(futures::stream::iter(messages))
        .await
        .map_err(status)?;
    let result = results
        .message()
        .await?
        .ok_or_else(|| Status::unknown("no bind result"))?;
    let put = DoPutPreparedStatementResult::decode(&*result.app_metadata)
        .map_err(|e| Status::unknown(e.to_string()))?;
    put.prepared_statement_handle
        .ok_or_else(|| Status::unknown("no handle"))
}

fn params(city: &str, below: i64) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Utf8, true),
            Field::new("$2", DataType::Int64, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec![city])),
            Arc::new(Int64Array::from(vec![below])),
        ],
    )
    .unwrap()
}

const SQL: &str = "SELECT id FROM ods.deals WHERE city = ? AND id < ?";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_edited_handles_are_refused() {
    let server = start_server(for_tests()).await;
    let mut client = client(server.addr).await;
    let handle = prepare(&mut client, SQL).await;
    let bound = bind(
        &mut client,
        bind_messages(&handle, &params("beijing", 100)).await,
    )
    .await
    .unwrap();
    assert_eq!(execute(&mut client, bound.clone()).await.unwrap(), 25);
    let mut rng = StdRng::seed_from_u64(rand::random());
    let mut cases = 0;
    for i in 0..bound.len() {
        for _ in 0..2 {
            let mut edited = bound.to_vec();
            edited[i] ^= rng.random_range(1..=255u8);
            let e = execute(&mut client, edited.into()).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
            cases += 1;
        }
    }
    for _ in 0..1_000 {
        let n = rng.random_range(0..2 * bound.len());
        let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let e = execute(&mut client, junk.clone().into()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        // As a DoGet ticket too, raw and wrapped.
        assert!(do_get(&mut client, junk.clone()).await.is_err());
        let wrapped = CommandPreparedStatementQuery {
            prepared_statement_handle: junk.into(),
        };
        let e = do_get(&mut client, wrapped.as_any().encode_to_vec())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        cases += 3;
    }
    println!("{cases} handles refused");
    // The first handle runs with the values bound to it (for clients that
    // ignore the updated handle); a statement never bound does not.
    assert_eq!(execute(&mut client, handle).await.unwrap(), 25);
    let unbound = prepare(&mut client, SQL).await;
    let e = execute(&mut client, unbound).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("no values are bound"),
        "{}",
        e.message()
    );
    let one = prepare(&mut client, "SELECT id FROM ods.deals WHERE id = ?").await;
    let e = bind(&mut client, bind_messages(&one, &params("x", 1)).await)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("2 parameter values bound"),
        "{}",
        e.message()
    );
    assert_eq!(run(&mut client, "SELECT 1").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_that_lie_about_their_lengths_are_refused() {
    let mut limits = for_tests();
    limits.parameter_bytes = 64 << 10;
    limits.prepared_per_user = 4;
    let server = start_server(limits).await;
    let mut client = client(server.addr).await;
    let handle = prepare(&mut client, SQL).await;
    let good = bind_messages(&handle, &params("beijing", 100)).await;
    // The batch message's bodyLength (a flatbuffer field) set to 2^62, and
    // the schema's metadata replaced by a length prefix of 2^31-1.
    let batch_header = good[1].data_header.to_vec();
    let mut found = 0;
    for at in 0..batch_header.len().saturating_sub(8) {
        let mut edited = batch_header.clone();
        edited[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        let mut messages = good.clone();
        messages[1].data_header = edited.into();
        match bind(&mut client, messages).await {
            Err(e) => {
                assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
                found += 1;
            }
            Ok(h) => {
                // An edit the data survives still runs.
                let _ = execute(&mut client, h).await;
            }
        }
    }
    assert!(found > 0);
    // Every byte of every message, edited.
    let mut rng = StdRng::seed_from_u64(rand::random());
    let mut cases = 0;
    for m in 0..good.len() {
        for part in 0..2 {
            let len = if part == 0 {
                good[m].data_header.len()
            } else {
                good[m].data_body.len()
            };
            for at in 0..len {
                let mut messages = good.clone();
                let target = if part == 0 {
                    &mut messages[m].data_header
                } else {
                    &mut messages[m].data_body
                };
                let mut bytes = target.to_vec();
                bytes[at] = rng.random();
                *target = bytes.into();
                if let Ok(h) = bind(&mut client, messages).await {
                    let _ = execute(&mut client, h).await;
                }
                cases += 1;
            }
        }
    }
    // Random bytes as IPC.
    for _ in 0..500 {
        let mut messages = good.clone();
        let n = rng.random_range(0..300);
        messages[1].data_header = (0..n).map(|_| rng.random()).collect::<Vec<u8>>().into();
        let e = bind(&mut client, messages).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        cases += 1;
    }
    println!("{cases} edited binds survived");
    // Over the parameter limit: refused before decoding.
    let big = params(&"x".repeat(100 << 10), 1);
    let e = bind(&mut client, bind_messages(&handle, &big).await)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("parameter_bytes"), "{}", e.message());
    // Many binds of the largest allowed size keep at most 4 per user.
    for i in 0..50 {
        let h = prepare(&mut client, SQL).await;
        let p = params(&"y".repeat(60 << 10), i);
        bind(&mut client, bind_messages(&h, &p).await)
            .await
            .unwrap();
    }
    let mut results = client
        .do_action(Action {
            r#type: "strata.query_status".into(),
            body: Bytes::new(),
        })
        .await
        .unwrap();
    let body = results.message().await.unwrap().unwrap().body;
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let kept = status["kept_parameter_bytes"].as_u64().unwrap();
    assert!(kept <= 4 * (64 << 10), "{status}");
    assert_eq!(run(&mut client, "SELECT 1").await.unwrap(), 1);
}
