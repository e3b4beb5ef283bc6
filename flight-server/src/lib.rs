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

#![warn(missing_docs)]

mod auth;
mod call_metrics;
mod catalog;
mod client;
mod latest_table;
mod query_runner;
mod server;
mod server_info;
mod service;
mod statement;
mod status;

pub use auth::{Authenticator, Credentials};
pub use call_metrics::{CallObserver, observe_calls};
pub use catalog::{CATALOG, SCHEMAS, WarehouseCatalog};
pub use client::{ClientConfig, run_query};
pub use latest_table::LatestDeltaTable;
pub use server::{
    RunningServer, ServeConfig, ServeError, TlsFiles, install_crypto_provider, start,
};
pub use service::StrataFlightSql;
pub use statement::{BadHandle, StatementHandle, number_placeholders};
pub use status::query_status;
