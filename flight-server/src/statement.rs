//! Statement handles: what a Flight SQL ticket or prepared-statement handle
//! carries between a client's calls.
//!
//! Handles are self-contained (the SQL, and the bound parameters once a
//! client binds them), so any server process can execute any ticket: Flight
//! SQL servers stay stateless readers that scale behind a load balancer.
//! They are signed (HMAC-SHA256 with `serve.handle_key`, shared by the
//! replicas; a random key per process when unset), so a client can only
//! hand back what a server issued: an edited or invented handle is refused
//! before any of it is parsed, and a handle is never larger than the
//! server's limits allow.
//!
//! Layout: `STH1`, the 32-byte tag over the rest, a 16-byte id, the SQL's
//! length (u32, little-endian), the SQL, then the parameters (an Arrow IPC
//! stream, absent when none are bound).

use hmac::{Hmac, KeyInit, Mac};
use prost::bytes::Bytes;
use sha2::Sha256;

const MAGIC: &[u8; 4] = b"STH1";
const TAG: usize = 32;
const ID: usize = 16;
const HEADER: usize = MAGIC.len() + TAG + ID + 4;

/// A statement as handed to clients in tickets and prepared-statement handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatementHandle {
    /// Identifies a prepared statement across binds.
    pub id: [u8; ID],
    /// The SQL, with `?` placeholders already numbered (`$1`, `$2`, ...).
    pub sql: String,
    /// Bound parameters: one row, as an Arrow IPC stream.
    pub params: Option<Bytes>,
}

impl StatementHandle {
    /// A handle for `sql` with no parameters bound.
    pub(crate) fn new(sql: impl Into<String>) -> Self {
        StatementHandle {
            id: rand::random(),
            sql: sql.into(),
            params: None,
        }
    }

    /// The same statement with `params` (an IPC stream) bound.
    pub(crate) fn with_params(&self, params: Vec<u8>) -> Self {
        StatementHandle {
            params: Some(params.into()),
            ..self.clone()
        }
    }
}

/// A handle that this server (or its replicas) did not produce, or that
/// was damaged.
#[derive(Debug, thiserror::Error)]
#[error("not a statement handle of this server ({0}); prepare the statement again")]
pub(crate) struct BadHandle(&'static str);

/// Signs handles and checks them.
pub(crate) struct HandleSigner {
    key: Vec<u8>,
    max_bytes: usize,
}

impl HandleSigner {
    /// Signs with `key`, or with a random key when there is none; refuses
    /// handles over `max_bytes`.
    pub(crate) fn new(key: Option<&[u8]>, max_bytes: usize) -> Self {
        let key = match key {
            Some(k) => k.to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        HandleSigner {
            key,
            max_bytes: max_bytes.max(HEADER),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    /// The handle's bytes.
    pub(crate) fn encode(&self, handle: &StatementHandle) -> Bytes {
        let params = handle.params.as_deref().unwrap_or_default();
        let mut payload = Vec::with_capacity(ID + 4 + handle.sql.len() + params.len());
        payload.extend_from_slice(&handle.id);
        payload.extend_from_slice(&(handle.sql.len() as u32).to_le_bytes());
        payload.extend_from_slice(handle.sql.as_bytes());
        payload.extend_from_slice(params);
        let mut mac = self.mac();
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&tag);
        out.extend_from_slice(&payload);
        out.into()
    }

    /// Checks a handle's size and signature, then reads it.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<StatementHandle, BadHandle> {
        if bytes.len() > self.max_bytes {
            return Err(BadHandle("larger than this server issues"));
        }
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return Err(BadHandle("unknown format"));
        }
        let (tag, payload) = bytes[MAGIC.len()..].split_at(TAG);
        let mut mac = self.mac();
        mac.update(payload);
        mac.verify_slice(tag).map_err(|_| {
            BadHandle("bad signature: issued by a server with another handle_key, or altered")
        })?;
        let (id, rest) = payload.split_at(ID);
        let (len, rest) = rest.split_at(4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > rest.len() {
            return Err(BadHandle("truncated"));
        }
        let (sql, params) = rest.split_at(len);
        let sql = std::str::from_utf8(sql).map_err(|_| BadHandle("SQL is not UTF-8"))?;
        let mut handle_id = [0u8; ID];
        handle_id.copy_from_slice(id);
        Ok(StatementHandle {
            id: handle_id,
            sql: sql.to_string(),
            params: (!params.is_empty()).then(|| Bytes::copy_from_slice(params)),
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn handles_round_trip_and_edits_are_refused() {
        let signer = HandleSigner::new(Some(b"a key shared by every replica...."), 4096);
        let handle = StatementHandle::new("SELECT $1").with_params(vec![1, 2, 3]);
        let bytes = signer.encode(&handle);
        assert_eq!(signer.decode(&bytes).unwrap(), handle);
        // Another replica with the same key reads it; a server with another key does not.
        let replica = HandleSigner::new(Some(b"a key shared by every replica...."), 4096);
        assert_eq!(replica.decode(&bytes).unwrap(), handle);
        let other = HandleSigner::new(None, 4096);
        assert!(other.decode(&bytes).is_err());
        // Every single-byte edit is refused.
        for i in 0..bytes.len() {
            let mut edited = bytes.to_vec();
            edited[i] ^= 0x01;
            assert!(signer.decode(&edited).is_err(), "edit at {i} accepted");
        }
        // As are truncations, extensions and random bytes.
        for n in 0..bytes.len() {
            assert!(signer.decode(&bytes[..n]).is_err());
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(signer.decode(&longer).is_err());
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for _ in 0..5_000 {
            let n = rng.random_range(0..200);
            let mut junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            if rng.random_bool(0.5) && junk.len() >= 4 {
                junk[..4].copy_from_slice(MAGIC);
            }
            assert!(signer.decode(&junk).is_err());
        }
    }

    #[test]
    fn oversized_handles_are_refused_before_checking() {
        let signer = HandleSigner::new(None, 100);
        let big = signer.encode(&StatementHandle::new("x".repeat(200)));
        assert!(
            signer
                .decode(&big)
                .unwrap_err()
                .to_string()
                .contains("larger")
        );
    }
}
