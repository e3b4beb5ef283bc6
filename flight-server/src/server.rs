//! Starting the Flight SQL server: where it listens, who may connect, TLS.

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tracing::{info, warn};
use url::Url;

use crate::admission::Admission;
use crate::auth::{Authenticator, Credentials};
use crate::bound_params::BoundParams;
use crate::catalog::{CATALOG, WarehouseCatalog};
use crate::generated_rows::cap_series_functions;
use crate::guarded_service::GuardedService;
use crate::limits::QueryLimits;
use crate::memory_budget::{MemoryInUse, queries_within};
use crate::query_runner::{Inner, QueryRunner};
use crate::query_runtime::QueryRuntime;
use crate::service::StrataFlightSql;
use crate::statement::HandleSigner;

/// How long a session token from the handshake stays valid.
const TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Users allowed in; with none, the server only listens on loopback.
    pub users: Vec<Credentials>,
    /// TLS certificate and key (PEM), if clients should connect over TLS.
    pub tls: Option<TlsFiles>,
    /// The warehouse's storage root (ends in `/`).
    pub root: Url,
    /// object_store options for the root.
    pub storage_options: HashMap<String, String>,
    /// What queries may use.
    pub limits: QueryLimits,
    /// The key statement handles are signed with; `None`: a random key.
    pub handle_key: Option<Vec<u8>>,
    /// Serve strings as `Utf8View` instead of plain `Utf8`.
    pub string_view: bool,
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; is another server using the port? Set serve.listen to another address"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS file could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The warehouse catalog could not be opened.
    #[error("catalog: {0}")]
    Catalog(#[from] DataFusionError),
    /// The query threads could not be started.
    #[error("cannot start the query threads: {0}")]
    Runtime(std::io::Error),
    /// The gRPC server failed.
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A started server.
pub struct RunningServer {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// Waits until the server stops (after the shutdown future resolves).
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ServeError::Tls(format!("server task failed: {e}"))),
        }
    }
}

/// Selects rustls' aws-lc crypto provider for the process. The dependency
/// tree enables both of rustls' providers, and rustls then refuses to pick
/// one by itself; call this before any TLS client or server is built.
pub fn install_crypto_provider() {
    // Already installed (by an earlier call) is fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Starts serving; stops when `shutdown` resolves.
pub async fn start(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningServer, ServeError> {
    let mut listen = config.listen;
    if config.users.is_empty() && !listen.ip().is_loopback() {
        warn!(requested = %listen, "no users configured: serving on loopback only; add serve.users to the warehouse file to accept other hosts");
        listen = SocketAddr::from((Ipv4Addr::LOCALHOST, listen.port()));
    }
    let catalog = Arc::new(WarehouseCatalog::new(
        &config.root,
        config.storage_options.clone(),
    )?);
    catalog.refresh().await?;
    let limits = config.limits.clone();
    let ctx = session(&limits, config.string_view)?;
    ctx.register_catalog(CATALOG, catalog.provider());

    let auth = Arc::new(Authenticator::new(config.users.clone(), TOKEN_TTL));
    let auth_note = if auth.enabled() {
        format!("basic -> bearer, {} user(s)", config.users.len())
    } else {
        "none (loopback only)".to_string()
    };
    if config.handle_key.is_none() {
        info!(
            "statement handles are signed with a random key: they work on this process only; set serve.handle_key to share them between replicas"
        );
    }
    let runner = QueryRunner::new(Inner {
        ctx,
        catalog,
        runtime: QueryRuntime::new(limits.query_threads, limits.expression_depth)
            .map_err(ServeError::Runtime)?,
        admission: Admission::new(
            queries_within(
                limits.memory,
                limits.query_memory,
                limits.concurrent_queries,
            ),
            limits.queued_queries,
            limits.queue_timeout,
        ),
        memory: Arc::new(MemoryInUse::default()),
        signer: HandleSigner::new(config.handle_key.as_deref(), limits.handle_bytes()),
        bound: BoundParams::new(limits.prepared_per_user, limits.prepared_ttl),
        limits: limits.clone(),
        string_view: config.string_view,
    });
    let service = GuardedService::new(Arc::new(StrataFlightSql::new(runner, auth.clone())), auth);

    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: listen,
        source,
    })?;
    let mut builder = Server::builder();
    if let Some(tls) = &config.tls {
        install_crypto_provider();
        let cert = std::fs::read(&tls.cert)
            .map_err(|e| ServeError::Tls(format!("certificate {}: {e}", tls.cert.display())))?;
        let key = std::fs::read(&tls.key)
            .map_err(|e| ServeError::Tls(format!("key {}: {e}", tls.key.display())))?;
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    info!(
        address = %local_addr,
        tls = config.tls.is_some(),
        auth = %auth_note,
        query_threads = limits.query_threads,
        concurrent_queries =
            queries_within(limits.memory, limits.query_memory, limits.concurrent_queries),
        query_memory_mib = limits.query_memory >> 20,
        memory_mib = limits.memory >> 20,
        query_timeout = ?limits.query_timeout,
        "Flight SQL server listening (catalog `strata`, schemas ods, dwd, dws, ads)"
    );
    // Handles come back in tickets and commands: a message must hold the
    // largest handle the server issues.
    let max_message = limits.handle_bytes().max(4 << 20) + (64 << 10);
    let router = builder
        .layer(crate::call_metrics::CallsLayer)
        .add_service(FlightServiceServer::new(service).max_decoding_message_size(max_message));
    // Small responses (a point query's one row) would otherwise wait for
    // Nagle's algorithm and the client's delayed ACK: ~40 ms per round trip.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn
            && let Err(e) = stream.set_nodelay(true)
        {
            warn!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
        conn
    });
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(ServeError::from)
    });
    Ok(RunningServer { local_addr, task })
}

/// The DataFusion session queries are planned in: read-only catalog,
/// parallelism of the query threads, plain strings unless asked, spilling
/// to disk within `serve.limits.spill`, capped series functions.
fn session(limits: &QueryLimits, string_view: bool) -> Result<SessionContext, ServeError> {
    let mut session = SessionConfig::new()
        .with_information_schema(true)
        .with_create_default_catalog_and_schema(false)
        .with_default_catalog_and_schema(CATALOG, "ods")
        .with_target_partitions(limits.query_threads.max(1));
    let options = session.options_mut();
    options.execution.parquet.schema_force_view_types = string_view;
    options.sql_parser.map_string_types_to_utf8view = string_view;
    let disk = if limits.spill == 0 {
        DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled)
    } else {
        DiskManagerBuilder::default().with_max_temp_directory_size(limits.spill)
    };
    // Queries run with pools of their own (`memory_budget`); this one only
    // bounds anything that would run without.
    let runtime = RuntimeEnvBuilder::new()
        .with_disk_manager_builder(disk)
        .with_memory_pool(Arc::new(GreedyMemoryPool::new(limits.query_memory)))
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(session, runtime);
    cap_series_functions(&ctx, limits.generated_rows);
    Ok(ctx)
}
