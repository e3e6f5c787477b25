//! A short-lived in-memory cache for the proxy's hot path: API token → caller, and
//! account → (account row, ready Buddy client with the decrypted credential). Without
//! it every proxied call costs three store queries and a decryption.
//!
//! Entries live for `CIGATE_HOT_CACHE_MS` (1 s by default; 0 disables the cache). This
//! instance forgets an entry at once when it changes it (token deleted, account updated,
//! deleted, marked by a Buddy 401 — anything that changes an account's credential or
//! status must call [`HotCache::forget_account`]); other instances see the change
//! within the TTL. Tokens are keyed by their SHA-256, never by the plaintext.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::gateway::Linked;

struct Entry<V> {
    value: V,
    expires: Instant,
}

/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

struct Map<K, V>(Mutex<HashMap<K, Entry<V>>>);

impl<K: Eq + Hash, V: Clone> Map<K, V> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry<V>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get<Q: Eq + Hash + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let map = self.lock();
        map.get(key)
            .filter(|entry| entry.expires > Instant::now())
            .map(|entry| entry.value.clone())
    }

    fn insert(&self, key: K, value: V, ttl: Duration) {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= SWEEP_AT {
            map.retain(|_, entry| entry.expires > now);
        }
        map.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
            },
        );
    }

    fn retain(&self, keep: impl Fn(&K, &V) -> bool) {
        self.lock().retain(|key, entry| keep(key, &entry.value));
    }
}

pub struct HotCache {
    ttl: Duration,
    tokens: Map<[u8; 32], Caller>,
    /// Keyed by account id (ids are unique across environments; a lookup checks the
    /// environment too).
    accounts: Map<String, Arc<Linked>>,
}

impl std::fmt::Debug for HotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotCache").field("ttl", &self.ttl).finish()
    }
}

fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl HotCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            tokens: Map::new(),
            accounts: Map::new(),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    pub fn token(&self, token: &str) -> Option<Caller> {
        if !self.enabled() {
            return None;
        }
        self.tokens.get(&token_key(token))
    }

    pub fn remember_token(&self, token: &str, caller: Caller) {
        if self.enabled() {
            self.tokens.insert(token_key(token), caller, self.ttl);
        }
    }

    /// After an API token is deleted.
    pub fn forget_token_id(&self, token_id: &str) {
        self.tokens.retain(|_, caller| caller.token_id != token_id);
    }

    pub fn account(&self, environment_id: &str, account_id: &str) -> Option<Arc<Linked>> {
        if !self.enabled() {
            return None;
        }
        self.accounts
            .get(account_id)
            .filter(|linked| linked.account.environment_id == environment_id)
    }

    /// `linked.account` must belong to the caller's environment (it was loaded for it).
    pub fn remember_account(&self, linked: Arc<Linked>) {
        if self.enabled() {
            let key = linked.account.id.clone();
            self.accounts.insert(key, linked, self.ttl);
        }
    }

    /// After anything changes the account's row or credential.
    pub fn forget_account(&self, account_id: &str) {
        self.accounts.retain(|id, _| id != account_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(token_id: &str) -> Caller {
        Caller {
            environment_id: "env".into(),
            token_id: token_id.into(),
        }
    }

    #[test]
    fn tokens_expire_and_are_forgotten() {
        let cache = HotCache::new(Duration::from_secs(60));
        cache.remember_token("plain", caller("t1"));
        assert_eq!(cache.token("plain").unwrap().token_id, "t1");
        assert!(cache.token("other").is_none());
        cache.forget_token_id("t1");
        assert!(cache.token("plain").is_none());

        let cache = HotCache::new(Duration::from_nanos(1));
        cache.remember_token("plain", caller("t1"));
        std::thread::sleep(Duration::from_millis(2));
        assert!(cache.token("plain").is_none(), "expired");

        let off = HotCache::new(Duration::ZERO);
        off.remember_token("plain", caller("t1"));
        assert!(off.token("plain").is_none(), "disabled");
    }
}
