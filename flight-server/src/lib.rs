//! Arrow Flight SQL over a warehouse's Delta tables, for BI tools and
//! dashboards.
//!
//! The server exposes catalog `strata` with one schema per layer kind
//! (`ods`, `dwd`, `dws`, `ads`), holding every Delta table found under the
//! warehouse's storage root. Each query reads each table at its newest
//! committed version, so dashboards see what pipelines and backfills commit
//! as soon as they commit it, and never half of a commit. It speaks what
//! JDBC, ODBC and ADBC drivers need: statements, prepared statements with
//! bound parameters, and the metadata calls (`GetSqlInfo`, `GetCatalogs`,
//! `GetDbSchemas`, `GetTables`, `GetTableTypes`, `GetXdbcTypeInfo`,
//! `GetPrimaryKeys`), with Basic -> bearer authentication and optional TLS.
//!
//! The server only reads tables: it depends on nothing in the engine, so it
//! can run beside the pipelines (`strata run`) or alone (`strata serve`), as
//! many stateless copies behind a load balancer as needed.
//!
//! No request may stop the server or starve the pipelines beside it: every
//! query's SQL is measured before it is parsed (`sql_shape`), planned and
//! run on threads of its own with stacks sized for the deepest expression
//! accepted (`query_runtime`), within a slot (`admission`), a memory pool
//! (`memory_budget`) and a timeout, and stopped as soon as its client goes
//! away (`result_stream`); statement handles are signed (`statement`) and
//! their parameters decoded without trusting a length (`param_ipc`).

#![warn(missing_docs)]

mod admission;
mod auth;
mod bound_params;
mod call_metrics;
mod catalog;
mod client;
mod client_tls;
mod generated_rows;
mod guarded_service;
mod latest_table;
mod limits;
mod memory_budget;
mod param_ipc;
mod plain_strings;
mod query_runner;
mod query_runtime;
mod result_stream;
mod server;
mod server_info;
mod service;
mod sql_shape;
mod statement;
mod status;

#[cfg(test)]
mod fuzz_sql_tests;
#[cfg(test)]
mod hostile_request_tests;
#[cfg(test)]
mod test_server;

pub use auth::{Authenticator, Caller, Credentials};
pub use call_metrics::{CallObserver, observe_calls};
pub use catalog::{CATALOG, SCHEMAS, WarehouseCatalog};
pub use client::{ClientConfig, run_query};
pub use latest_table::LatestDeltaTable;
pub use limits::QueryLimits;
pub use query_runtime::THREAD_NAME as QUERY_THREAD_NAME;
pub use server::{
    RunningServer, ServeConfig, ServeError, TlsFiles, install_crypto_provider, start,
};
pub use status::query_status;
