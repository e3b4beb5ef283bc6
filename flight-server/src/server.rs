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
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tracing::{info, warn};
use url::Url;

use crate::auth::{Authenticator, Credentials};
use crate::catalog::{CATALOG, WarehouseCatalog};
use crate::service::StrataFlightSql;

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
    let session = SessionConfig::new()
        .with_information_schema(true)
        .with_create_default_catalog_and_schema(false)
        .with_default_catalog_and_schema(CATALOG, "ods");
    let ctx = SessionContext::new_with_config(session);
    ctx.register_catalog(CATALOG, catalog.provider());

    let auth = Authenticator::new(config.users.clone(), TOKEN_TTL);
    let auth_note = if auth.enabled() {
        format!("basic -> bearer, {} user(s)", config.users.len())
    } else {
        "none (loopback only)".to_string()
    };
    let service = StrataFlightSql::new(ctx, catalog, auth);

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
        "Flight SQL server listening (catalog `strata`, schemas ods, dwd, dws, ads)"
    );
    let router = builder
        .layer(crate::call_metrics::CallsLayer)
        .add_service(FlightServiceServer::new(service));
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
