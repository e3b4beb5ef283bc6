//! Running statements: checking their shape, planning them read-only with
//! their bound parameters, and running them within the limits.
//!
//! Every step that touches a client's SQL or parameters runs on the query
//! runtime (`query_runtime`), holding a slot (`admission`), within the
//! query timeout: planning for `GetFlightInfo` and `CreatePreparedStatement`,
//! decoding parameters for `DoPut`, and planning and running for `DoGet`,
//! whose results stream (`result_stream`).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::prelude::DataFrame;
use prost::bytes::Bytes;
use tonic::Status;

use crate::admission::Admission;
use crate::auth::Caller;
use crate::bound_params::BoundParams;
use crate::catalog::WarehouseCatalog;
use crate::limits::QueryLimits;
use crate::memory_budget::MemoryInUse;
use crate::param_ipc::{IpcPart, decode_parameters, encode_parameters, split_stream};
use crate::plain_strings::plain_schema;
use crate::query_runtime::QueryRuntime;
use crate::result_stream::{DoGetStream, start_stream};
use crate::sql_shape::{ShapeLimits, placeholder_count, shape};
use crate::statement::{HandleSigner, StatementHandle};
use crate::status::query_status;

/// What a prepared statement's creation returns.
pub(crate) struct Prepared {
    pub handle: Bytes,
    pub dataset_schema: SchemaRef,
    pub parameter_schema: Schema,
}

/// Plans and runs statements over the warehouse catalog.
#[derive(Clone)]
pub(crate) struct QueryRunner {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub ctx: SessionContext,
    pub catalog: Arc<WarehouseCatalog>,
    pub runtime: Arc<QueryRuntime>,
    pub admission: Admission,
    pub memory: Arc<MemoryInUse>,
    pub signer: HandleSigner,
    pub bound: BoundParams,
    pub limits: QueryLimits,
    pub string_view: bool,
}

impl QueryRunner {
    pub(crate) fn new(inner: Inner) -> Self {
        QueryRunner {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn catalog(&self) -> &WarehouseCatalog {
        &self.inner.catalog
    }

    /// Queries holding a slot (planning or running), waiting for one, and
    /// the bytes of query memory in use.
    pub(crate) fn load(&self) -> (usize, usize, usize) {
        let inner = &self.inner;
        (
            inner.admission.running(),
            inner.admission.queued(),
            inner.memory.bytes(),
        )
    }

    /// The most bytes a parameter bind may send.
    pub(crate) fn parameter_limit(&self) -> usize {
        self.inner.limits.parameter_bytes
    }

    /// Bytes of parameters kept for clients reusing first handles.
    pub(crate) fn kept_parameter_bytes(&self) -> usize {
        self.inner.bound.bytes()
    }

    pub(crate) fn status(&self, e: DataFusionError, sql: &str) -> Status {
        self.inner.status(e, sql)
    }

    /// A statement's handle and result schema (`GetFlightInfo`).
    pub(crate) async fn statement_info(
        &self,
        caller: Caller,
        sql: String,
    ) -> Result<(Bytes, SchemaRef), Status> {
        self.on_query_runtime(move |inner| async move {
            let shaped = shape(&sql, inner.shape_limits())?;
            let handle = StatementHandle::new(shaped.sql);
            let df = inner.plan(&caller, &handle, false).await?;
            Ok((inner.signer.encode(&handle), inner.result_schema(&df)))
        })
        .await
    }

    /// A new prepared statement (`CreatePreparedStatement`).
    pub(crate) async fn prepare(&self, caller: Caller, sql: String) -> Result<Prepared, Status> {
        self.on_query_runtime(move |inner| async move {
            let shaped = shape(&sql, inner.shape_limits())?;
            let handle = StatementHandle::new(shaped.sql);
            let df = inner.plan(&caller, &handle, false).await?;
            Ok(Prepared {
                handle: inner.signer.encode(&handle),
                dataset_schema: inner.result_schema(&df),
                parameter_schema: inner.parameter_schema(&df, &handle.sql)?,
            })
        })
        .await
    }

    /// A prepared statement's ticket and result schema
    /// (`GetFlightInfo`): the ticket carries the parameters bound, so that
    /// any replica can run it.
    pub(crate) async fn prepared_info(
        &self,
        caller: Caller,
        handle: Bytes,
    ) -> Result<(Bytes, SchemaRef), Status> {
        self.on_query_runtime(move |inner| async move {
            let mut handle = inner.decode_handle(&handle)?;
            if handle.params.is_none()
                && let Some(kept) = inner.bound.get(&caller.0, &handle.id)
            {
                handle.params = Some(kept);
            }
            let df = inner.plan(&caller, &handle, true).await?;
            Ok((inner.signer.encode(&handle), inner.result_schema(&df)))
        })
        .await
    }

    /// Binds one row of parameters (`DoPut`): returns the handle that
    /// carries them, and keeps them for clients that reuse the old one.
    pub(crate) async fn bind(
        &self,
        caller: Caller,
        handle: Bytes,
        parts: Vec<IpcPart>,
    ) -> Result<Bytes, Status> {
        self.on_query_runtime(move |inner| async move {
            let handle = inner.decode_handle(&handle)?;
            let batch = decode_parameters(&parts)?;
            let wanted = placeholder_count(&handle.sql);
            check_parameter_count(batch.num_columns(), wanted)?;
            row_values(&batch)?;
            let params = encode_parameters(&batch)?;
            let bound = handle.with_params(params);
            let encoded = inner.signer.encode(&bound);
            if let Some(params) = &bound.params {
                inner.bound.insert(&caller.0, bound.id, params.clone());
            }
            Ok(encoded)
        })
        .await
    }

    /// Forgets a closed prepared statement's parameters.
    pub(crate) fn close(&self, caller: &Caller, handle: &[u8]) {
        if let Ok(handle) = self.inner.signer.decode(handle) {
            self.inner.bound.remove(&caller.0, &handle.id);
        }
    }

    /// Plans a ticket's statement and streams its result (`DoGet`).
    pub(crate) async fn execute(
        &self,
        caller: Caller,
        ticket: Bytes,
    ) -> Result<DoGetStream, Status> {
        let slot = self.inner.admission.enter().await?;
        start_stream(self.inner.clone(), caller, ticket, slot).await
    }

    /// Runs `job` on the query runtime, holding a slot, within the query
    /// timeout; aborted if the caller stops waiting.
    async fn on_query_runtime<F, Fut, T>(&self, job: F) -> Result<T, Status>
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, Status>> + Send + 'static,
        T: Send + 'static,
    {
        let slot = self.inner.admission.enter().await?;
        let timeout = self.inner.limits.query_timeout;
        let work = job(self.inner.clone());
        self.inner
            .runtime
            .run(async move {
                let _slot = slot;
                tokio::time::timeout(timeout, work)
                    .await
                    .map_err(|_| deadline_exceeded(timeout))?
            })
            .await
    }
}

/// The status of a query stopped by `serve.limits.query_timeout`.
pub(crate) fn deadline_exceeded(timeout: std::time::Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the query ran longer than {timeout:?} (serve.limits.query_timeout) and was stopped"
    ))
}

impl Inner {
    pub(crate) fn status(&self, e: DataFusionError, sql: &str) -> Status {
        let known: Vec<String> = self
            .catalog
            .tables()
            .into_iter()
            .map(|(schema, name, _)| format!("{schema}.{name}"))
            .collect();
        query_status(e, sql, &known)
    }

    fn shape_limits(&self) -> ShapeLimits {
        ShapeLimits {
            sql_bytes: self.limits.sql_bytes,
            expression_depth: self.limits.expression_depth,
        }
    }

    pub(crate) fn decode_handle(&self, bytes: &[u8]) -> Result<StatementHandle, Status> {
        self.signer
            .decode(bytes)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }

    /// The result schema clients see.
    pub(crate) fn result_schema(&self, df: &DataFrame) -> SchemaRef {
        let schema = df.schema().as_arrow();
        match (self.string_view, plain_schema(schema)) {
            (false, Some(plain)) => plain,
            _ => Arc::new(schema.clone()),
        }
    }

    /// Plans `handle`'s SQL (read-only: no DDL, DML or SET) with its
    /// parameters (the handle's, or those kept for its id) bound. With
    /// `require_values`, a parameter without a value is an error.
    pub(crate) async fn plan(
        &self,
        caller: &Caller,
        handle: &StatementHandle,
        require_values: bool,
    ) -> Result<DataFrame, Status> {
        // Handles are signed, but replicas may have other limits.
        shape(&handle.sql, self.shape_limits())?;
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
        let wanted = parameter_count(&df).map_err(|e| self.status(e, &handle.sql))?;
        let params = match &handle.params {
            Some(p) => Some(p.clone()),
            None => self.bound.get(&caller.0, &handle.id),
        };
        let Some(params) = params else {
            if require_values && wanted > 0 {
                return Err(Status::invalid_argument(format!(
                    "the statement has {wanted} parameter{} ($1{}) but no values are bound; bind one value per `?`",
                    if wanted == 1 { "" } else { "s" },
                    if wanted > 1 {
                        format!(" to ${wanted}")
                    } else {
                        String::new()
                    }
                )));
            }
            return Ok(df);
        };
        let batch = decode_parameters(&split_stream(&params)?)?;
        check_parameter_count(batch.num_columns(), wanted)?;
        df.with_param_values(row_values(&batch)?)
            .map_err(|e| self.status(e, &handle.sql))
    }

    /// The positional parameters (`$1`, `$2`, ...) of a planned statement,
    /// typed where DataFusion could infer a type (else `Null`).
    fn parameter_schema(&self, df: &DataFrame, sql: &str) -> Result<Schema, Status> {
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

/// The highest `$n` the planned statement uses.
fn parameter_count(df: &DataFrame) -> Result<usize, DataFusionError> {
    Ok(df
        .logical_plan()
        .get_parameter_types()?
        .keys()
        .filter_map(|name| name.strip_prefix('$')?.parse::<usize>().ok())
        .max()
        .unwrap_or(0))
}

fn check_parameter_count(bound: usize, wanted: usize) -> Result<(), Status> {
    if bound == wanted {
        return Ok(());
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    Err(Status::invalid_argument(if bound > wanted {
        format!(
            "{bound} parameter value{} bound, but the statement has {wanted} placeholder{}: bind one value per `?`",
            plural(bound),
            plural(wanted)
        )
    } else {
        format!(
            "only {bound} parameter value{} bound, but the statement has {wanted} placeholder{}: parameter ${} has no value",
            plural(bound),
            plural(wanted),
            bound + 1
        )
    }))
}

fn is_missing_table(e: &DataFusionError) -> bool {
    matches!(e.find_root(), DataFusionError::Plan(m) if m.contains("' not found"))
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
