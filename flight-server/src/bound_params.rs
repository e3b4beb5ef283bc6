//! Parameters kept on the server for clients that bind parameters and then
//! keep using the prepared statement's first handle (the Flight SQL spec
//! lets servers return an updated handle; some drivers ignore it).
//!
//! The only state a server keeps per statement, so it is bounded: per user
//! (the keys are handle ids the server signed, so a client cannot pick
//! them), at most `serve.limits.prepared_per_user` parameter sets, the least
//! recently used going first, each of at most `parameter_bytes`, and each
//! forgotten `prepared_ttl` after its last use or when its statement is
//! closed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prost::bytes::Bytes;

type Id = [u8; 16];

struct Entry {
    params: Bytes,
    used: Instant,
}

/// Parameter sets by user and handle id.
pub(crate) struct BoundParams {
    per_user: usize,
    ttl: Duration,
    users: Mutex<HashMap<String, HashMap<Id, Entry>>>,
}

impl BoundParams {
    pub(crate) fn new(per_user: usize, ttl: Duration) -> Self {
        BoundParams {
            per_user: per_user.max(1),
            ttl,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps `params` for `user`'s statement `id`.
    pub(crate) fn insert(&self, user: &str, id: Id, params: Bytes) {
        self.insert_at(Instant::now(), user, id, params);
    }

    fn insert_at(&self, now: Instant, user: &str, id: Id, params: Bytes) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what expired, for everyone: users are few (configured).
        users.retain(|_, kept| {
            kept.retain(|_, e| now.duration_since(e.used) < self.ttl);
            !kept.is_empty()
        });
        let kept = users.entry(user.to_string()).or_default();
        while kept.len() >= self.per_user && !kept.contains_key(&id) {
            let oldest = kept.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k);
            match oldest {
                Some(k) => kept.remove(&k),
                None => break,
            };
        }
        kept.insert(id, Entry { params, used: now });
    }

    /// `user`'s parameters for statement `id`, if kept and not expired.
    pub(crate) fn get(&self, user: &str, id: &Id) -> Option<Bytes> {
        self.get_at(Instant::now(), user, id)
    }

    fn get_at(&self, now: Instant, user: &str, id: &Id) -> Option<Bytes> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let kept = users.get_mut(user)?;
        match kept.get_mut(id) {
            Some(e) if now.duration_since(e.used) < self.ttl => {
                e.used = now;
                Some(e.params.clone())
            }
            Some(_) => {
                kept.remove(id);
                None
            }
            None => None,
        }
    }

    /// Forgets a closed statement's parameters.
    pub(crate) fn remove(&self, user: &str, id: &Id) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kept) = users.get_mut(user) {
            kept.remove(id);
        }
    }

    /// Bytes kept, over all users.
    pub(crate) fn bytes(&self) -> usize {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .values()
            .flat_map(|kept| kept.values())
            .map(|e| e.params.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_keeps_at_most_n_and_users_are_apart() {
        let kept = BoundParams::new(3, Duration::from_secs(60));
        for i in 0..150u8 {
            kept.insert("bi", [i; 16], Bytes::from(vec![0u8; 1000]));
        }
        assert_eq!(kept.bytes(), 3000);
        assert!(kept.get("bi", &[149; 16]).is_some());
        assert!(kept.get("bi", &[0; 16]).is_none());
        // Another user does not see them.
        assert!(kept.get("other", &[149; 16]).is_none());
        kept.remove("bi", &[149; 16]);
        assert!(kept.get("bi", &[149; 16]).is_none());
    }

    #[test]
    fn entries_expire() {
        let ttl = Duration::from_secs(600);
        let kept = BoundParams::new(3, ttl);
        let start = Instant::now();
        kept.insert_at(start, "bi", [1; 16], Bytes::from_static(b"x"));
        kept.insert_at(start, "bi", [2; 16], Bytes::from_static(b"y"));
        // Use keeps an entry alive; the other one expires.
        assert!(kept.get_at(start + ttl / 2, "bi", &[1; 16]).is_some());
        assert!(kept.get_at(start + ttl, "bi", &[2; 16]).is_none());
        kept.insert_at(start + ttl, "bi", [3; 16], Bytes::from_static(b"z"));
        assert_eq!(kept.bytes(), 2);
    }
}
