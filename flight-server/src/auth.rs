//! Flight authentication: HTTP Basic on the handshake, a bearer token after.
//!
//! This is the flow JDBC, ODBC, ADBC and DBeaver drivers speak: the client
//! sends `authorization: Basic ...` with the handshake and gets back
//! `authorization: Bearer <token>`, which it sends on every later call.
//! Some clients send Basic on every call instead; that is accepted too.
//! Basic credentials are accepted in base64 with or without padding: RFC
//! 7617 clients differ, and ADBC's Go driver leaves the padding out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// A user allowed to query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// Standard base64, padded or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Sessions (bearer tokens) one user may hold at once.
const TOKENS_PER_USER: usize = 10_000;

/// Who made a call: the user name, or `""` when the server has no users.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller(pub String);

/// Checks credentials and issues and checks bearer tokens.
pub struct Authenticator {
    users: Vec<Credentials>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    ttl: Duration,
}

impl Authenticator {
    /// An authenticator for `users`; with none, every call is allowed.
    pub fn new(users: Vec<Credentials>, ttl: Duration) -> Self {
        Authenticator {
            users,
            tokens: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// Whether credentials are required.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }

    /// The handshake: checks Basic credentials and returns a new token.
    pub fn handshake(&self, metadata: &MetadataMap) -> Result<String, Status> {
        let token = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        if !self.enabled() {
            return Ok(token);
        }
        let header = authorization(metadata)?.ok_or_else(|| {
            Status::unauthenticated(
                "this server requires a user name and password; configure them in your client (ADBC: username/password options)",
            )
        })?;
        let caller = self.check_basic(header)?;
        let now = Instant::now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|_, (_, expires)| *expires > now);
        // A client that connects in a loop cannot grow the table without
        // end: past the cap, the user's oldest session goes.
        let mine: Vec<(&String, Instant)> = tokens
            .iter()
            .filter(|(_, (user, _))| *user == caller.0)
            .map(|(t, (_, expires))| (t, *expires))
            .collect();
        if mine.len() >= TOKENS_PER_USER
            && let Some(oldest) = mine
                .iter()
                .min_by_key(|(_, e)| *e)
                .map(|(t, _)| (*t).clone())
        {
            tokens.remove(&oldest);
        }
        tokens.insert(token.clone(), (caller.0, now + self.ttl));
        Ok(token)
    }

    /// Checks a call's `authorization` header: a live bearer token, or Basic
    /// credentials.
    pub fn check(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        if !self.enabled() {
            return Ok(Caller::default());
        }
        let header = authorization(metadata)?.ok_or_else(|| {
            Status::unauthenticated("no credentials: authenticate with the handshake first")
        })?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            return match tokens.get(token.trim()) {
                Some((user, expires)) if *expires > Instant::now() => Ok(Caller(user.clone())),
                Some(_) => Err(Status::unauthenticated(
                    "the session token expired; connect again",
                )),
                None => Err(Status::unauthenticated(
                    "unknown session token (the server restarted?); connect again",
                )),
            };
        }
        self.check_basic(header)
    }

    /// Checks an `authorization: Basic ...` header value against the users
    /// (the dashboard's HTTP server asks too, so both check alike).
    pub fn check_basic(&self, header: &str) -> Result<Caller, Status> {
        let encoded = header.strip_prefix("Basic ").ok_or_else(|| {
            Status::unauthenticated("use Basic authentication (user name and password)")
        })?;
        let decoded = BASE64
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Status::unauthenticated("malformed Basic credentials"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| Status::unauthenticated("malformed Basic credentials"))?;
        let ok = self.users.iter().fold(false, |found, u| {
            found
                | (constant_time_eq(u.username.as_bytes(), user.as_bytes())
                    & constant_time_eq(u.password.as_bytes(), password.as_bytes()))
        });
        if ok {
            Ok(Caller(user.to_string()))
        } else {
            Err(Status::unauthenticated("wrong user name or password"))
        }
    }
}

fn authorization(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    match metadata.get("authorization") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| Status::unauthenticated("the authorization header is not text")),
    }
}

/// Compares without an early exit, so response time does not reveal how
/// much of a password was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    use super::*;

    fn with_header(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    fn basic(user: &str, pass: &str) -> MetadataMap {
        with_header(&format!(
            "Basic {}",
            STANDARD.encode(format!("{user}:{pass}"))
        ))
    }

    fn auth() -> Authenticator {
        Authenticator::new(
            vec![Credentials {
                username: "bi".into(),
                password: "s3cret".into(),
            }],
            Duration::from_secs(60),
        )
    }

    #[test]
    fn handshake_issues_a_token_that_later_calls_use() {
        let a = auth();
        let token = a.handshake(&basic("bi", "s3cret")).unwrap();
        let caller = a.check(&with_header(&format!("Bearer {token}"))).unwrap();
        assert_eq!(caller, Caller("bi".into()));
        assert!(a.check(&with_header("Bearer nope")).is_err());
        a.check(&basic("bi", "s3cret")).unwrap();
    }

    #[test]
    fn basic_credentials_with_or_without_padding() {
        // user:password of every length mod 3: 0, 1 and 2 bytes of padding.
        for password in ["s3cret", "s3cret1", "s3cret12"] {
            let a = Authenticator::new(
                vec![Credentials {
                    username: "bi".into(),
                    password: password.into(),
                }],
                Duration::from_secs(60),
            );
            let pair = format!("bi:{password}");
            for encoded in [STANDARD.encode(&pair), STANDARD_NO_PAD.encode(&pair)] {
                let caller = a.check(&with_header(&format!("Basic {encoded}"))).unwrap();
                assert_eq!(caller, Caller("bi".into()));
                a.handshake(&with_header(&format!("Basic {encoded}")))
                    .unwrap();
            }
        }
    }

    #[test]
    fn wrong_or_missing_credentials_are_refused() {
        let a = auth();
        for m in [
            basic("bi", "wrong"),
            basic("x", "s3cret"),
            basic("bi", "s3cre"),
            MetadataMap::new(),
        ] {
            let err = a.handshake(&m).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
        }
        assert_eq!(
            a.check(&MetadataMap::new()).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn without_users_everything_is_allowed() {
        let a = Authenticator::new(vec![], Duration::from_secs(1));
        a.check(&MetadataMap::new()).unwrap();
        assert!(!a.handshake(&MetadataMap::new()).unwrap().is_empty());
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
