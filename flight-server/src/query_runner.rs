//! Running statements: planning them read-only with their bound
//! parameters, and streaming their results.
//!
//! Results stream: DataFusion produces record batches as it scans, each is
//! encoded and sent as it comes, so a large result never sits whole in
//! memory; a client that goes away drops the stream, and with it the query.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::prelude::DataFrame;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::Status;
use tracing::debug;

use crate::catalog::WarehouseCatalog;
use crate::statement::StatementHandle;
use crate::status::query_status;

/// A query result on its way to the client.
pub(crate) type DoGetStream =
    Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// Parameters bound by clients that keep using the original prepared
/// statement handle, by handle id; forgotten on close or after an hour.
const BOUND_PARAMS_TTL: Duration = Duration::from_secs(3600);

/// Plans and runs statements over the warehouse catalog.
pub(crate) struct QueryRunner {
    ctx: SessionContext,
    catalog: Arc<WarehouseCatalog>,
    bound: Mutex<HashMap<String, (String, Instant)>>,
    active: Arc<AtomicUsize>,
}

impl QueryRunner {
    pub(crate) fn new(ctx: SessionContext, catalog: Arc<WarehouseCatalog>) -> Self {
        QueryRunner {
            ctx,
            catalog,
            bound: Mutex::new(HashMap::new()),
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(crate) fn catalog(&self) -> &WarehouseCatalog {
        &self.catalog
    }

    /// Queries whose results are still streaming.
    pub(crate) fn active_queries(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub(crate) fn status(&self, e: DataFusionError, sql: &str) -> Status {
        let known: Vec<String> = self
            .catalog
            .tables()
            .into_iter()
            .map(|(schema, name, _)| format!("{schema}.{name}"))
            .collect();
        query_status(e, sql, &known)
    }

    /// Plans `handle`'s SQL (read-only: no DDL, DML or SET) with its
    /// parameters bound.
    pub(crate) async fn plan(&self, handle: &StatementHandle) -> Result<DataFrame, Status> {
        self.catalog
            .refresh()
            .await
            .map_err(|e| self.status(e, &handle.sql))?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = match self.ctx.sql_with_options(&handle.sql, options).await {
            Ok(df) => df,
            Err(e) if is_missing_table(&e) => {
                self.catalog
                    .refresh_now()
                    .await
                    .map_err(|e| self.status(e, &handle.sql))?;
                self.ctx
                    .sql_with_options(&handle.sql, options)
                    .await
                    .map_err(|e| self.status(e, &handle.sql))?
            }
            Err(e) => return Err(self.status(e, &handle.sql)),
        };
        let params = match handle
            .params()
            .map_err(|e| Status::invalid_argument(e.to_string()))?
        {
            Some(batch) => Some(batch),
            None => self.server_side_params(handle)?,
        };
        match params {
            Some(batch) => df
                .with_param_values(row_values(&batch)?)
                .map_err(|e| self.status(e, &handle.sql)),
            None => Ok(df),
        }
    }

    pub(crate) fn server_side_params(
        &self,
        handle: &StatementHandle,
    ) -> Result<Option<RecordBatch>, Status> {
        let bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        let Some((params, _)) = bound.get(&handle.id) else {
            return Ok(None);
        };
        let with = StatementHandle {
            params: Some(params.clone()),
            ..handle.clone()
        };
        with.params().map_err(|e| Status::internal(e.to_string()))
    }

    /// Runs `df` and streams its batches to the client.
    pub(crate) async fn stream(&self, df: DataFrame, sql: &str) -> Result<DoGetStream, Status> {
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.execute_stream().await.map_err(|e| self.status(e, sql))?;
        let guard = ActiveQuery::start(self.active.clone());
        let batches = batches.map(move |batch| {
            let _running = &guard;
            batch.map_err(|e| FlightError::ExternalError(Box::new(e)))
        });
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Box::pin(flight))
    }

    /// Plans `handle` and streams its result.
    pub(crate) async fn execute(&self, handle: &StatementHandle) -> Result<DoGetStream, Status> {
        let df = self.plan(handle).await?;
        self.stream(df, &handle.sql).await
    }

    /// Binds one row of parameters to a prepared statement: the returned
    /// handle carries them, and they are kept here too for clients that
    /// keep using the old handle.
    pub(crate) fn bind(
        &self,
        handle: &StatementHandle,
        batch: &RecordBatch,
    ) -> Result<StatementHandle, Status> {
        row_values(batch)?;
        let bound = handle
            .with_params(batch)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(params) = &bound.params {
            let now = Instant::now();
            let mut map = self.bound.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, (_, at)| now.duration_since(*at) < BOUND_PARAMS_TTL);
            map.insert(handle.id.clone(), (params.clone(), now));
        }
        Ok(bound)
    }

    /// Forgets a closed prepared statement's parameters.
    pub(crate) fn forget(&self, handle: &StatementHandle) {
        let mut map = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&handle.id);
    }

    /// The positional parameters (`$1`, `$2`, ...) of a planned statement,
    /// typed where DataFusion could infer a type (else `Null`).
    pub(crate) fn parameter_schema(&self, df: &DataFrame, sql: &str) -> Result<Schema, Status> {
        let mut types: Vec<(usize, Option<DataType>)> = df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| self.status(e, sql))?
            .into_iter()
            .filter_map(|(name, t)| name.strip_prefix('$')?.parse().ok().map(|i| (i, t)))
            .collect();
        types.sort_by_key(|(i, _)| *i);
        Ok(Schema::new(
            types
                .into_iter()
                .map(|(i, t)| Field::new(format!("${i}"), t.unwrap_or(DataType::Null), true))
                .collect::<Vec<_>>(),
        ))
    }
}

fn is_missing_table(e: &DataFusionError) -> bool {
    matches!(e.find_root(), DataFusionError::Plan(m) if m.contains("' not found"))
}

/// Counts a streaming query until its stream is dropped: finished, failed,
/// or abandoned by a client that disconnected.
struct ActiveQuery(Arc<AtomicUsize>);

impl ActiveQuery {
    fn start(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        ActiveQuery(counter)
    }
}

impl Drop for ActiveQuery {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        debug!("query stream ended");
    }
}

/// The one row of bound parameters as positional values.
fn row_values(batch: &RecordBatch) -> Result<Vec<ScalarValue>, Status> {
    if batch.num_rows() != 1 {
        return Err(Status::invalid_argument(format!(
            "bind exactly one row of parameters to a query (got {} rows)",
            batch.num_rows()
        )));
    }
    batch
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0))
        .collect::<Result<_, _>>()
        .map_err(|e| Status::invalid_argument(format!("parameter: {e}")))
}
