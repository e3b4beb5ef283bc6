//! Who may see the dashboard and the console: the rule Flight SQL follows.
//!
//! The pages show table contents (panel rows), the panels' SQL and the
//! pipeline's numbers. With no users configured the server is for this
//! machine only: it refuses a non-loopback address rather than publish
//! the warehouse to the network. With users (`serve.users`, the same as
//! Flight SQL's) every request needs HTTP Basic credentials, padded or
//! unpadded base64, checked by the Flight SQL server's own authenticator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use strata_flight_server::{Authenticator, Credentials};
use tracing::debug;

use crate::server::DashboardError;

/// The users allowed in; none: loopback only, anonymous.
#[derive(Clone)]
pub(crate) struct Access {
    auth: Arc<Authenticator>,
}

impl Access {
    /// Checks that `listen` is allowed for `users`.
    pub(crate) fn new(
        users: &[(String, String)],
        listen: SocketAddr,
    ) -> Result<Self, DashboardError> {
        if users.is_empty() && !listen.ip().is_loopback() {
            return Err(DashboardError::Exposed { addr: listen });
        }
        let users = users
            .iter()
            .map(|(username, password)| Credentials {
                username: username.clone(),
                password: password.clone(),
            })
            .collect();
        // Tokens are never issued here: only Basic is checked.
        Ok(Access {
            auth: Arc::new(Authenticator::new(users, Duration::ZERO)),
        })
    }

    /// Whether requests carry a checked login (and may see panel SQL).
    pub(crate) fn logins(&self) -> bool {
        self.auth.enabled()
    }
}

/// Lets a request through if no users are configured or its credentials
/// are right; otherwise asks the browser for a login.
pub(crate) async fn require_login(
    State(access): State<Access>,
    request: Request,
    next: Next,
) -> Response {
    if !access.logins() {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let refused = match header {
        None => "log in with a user of `serve.users`".to_string(),
        Some(h) => match access.auth.check_basic(h) {
            Ok(_) => return next.run(request).await,
            Err(status) => status.message().to_string(),
        },
    };
    debug!(path = %request.uri().path(), reason = %refused, "dashboard request refused");
    (
        StatusCode::UNAUTHORIZED,
        [
            (
                header::WWW_AUTHENTICATE,
                "Basic realm=\"strata\", charset=\"UTF-8\"",
            ),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        format!("{refused}\n"),
    )
        .into_response()
}
