//! The in-process node: the same three operations as the Lua scripts, on a
//! map guarded by a mutex, with real TTL expiry on the monotonic clock.
//!
//! It serves a single process: the embedded default, users' own tests, the
//! demo. It gives no protection across processes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use fred::types::{Key, Value};
use tokio::time::Instant;

#[derive(Default)]
pub(crate) struct MemoryNode {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    held: HashMap<Key, Entry>,
    /// Fencing counters: they never expire, like the Redis counter keys.
    counters: HashMap<Key, u64>,
    /// Operations since expired entries were last swept out.
    since_sweep: usize,
}

struct Entry {
    value: Value,
    expires: Instant,
}

impl MemoryNode {
    pub fn acquire(&self, keys: &[Key], locks: usize, value: &Value, ttl_ms: u64) -> Option<u64> {
        let (keys, counters) = keys.split_at(locks.min(keys.len()));
        let mut entries = self.lock();
        let now = Instant::now();
        let taken = keys.iter().any(|key| {
            entries
                .live(key, now)
                .is_some_and(|entry| entry.value != *value)
        });
        if taken {
            return None;
        }
        let expires = now + Duration::from_millis(ttl_ms);
        for key in keys {
            entries.held.insert(
                key.clone(),
                Entry {
                    value: value.clone(),
                    expires,
                },
            );
        }
        if counters.is_empty() {
            return Some(0);
        }
        let token = 1 + counters
            .iter()
            .map(|key| entries.counters.get(key).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        entries.raise(counters, token);
        Some(token)
    }

    pub fn fence(&self, counters: &[Key], token: u64) {
        self.lock().raise(counters, token);
    }

    pub fn extend(&self, keys: &[Key], value: &Value, ttl_ms: u64) -> bool {
        let mut entries = self.lock();
        let now = Instant::now();
        let ours = keys.iter().all(|key| {
            entries
                .live(key, now)
                .is_some_and(|entry| entry.value == *value)
        });
        if !ours {
            return false;
        }
        let expires = now + Duration::from_millis(ttl_ms);
        for key in keys {
            if let Some(entry) = entries.held.get_mut(key) {
                entry.expires = expires;
            }
        }
        true
    }

    pub fn release(&self, keys: &[Key], value: &Value) -> u64 {
        let mut entries = self.lock();
        let now = Instant::now();
        let mut deleted = 0;
        for key in keys {
            if entries
                .live(key, now)
                .is_some_and(|entry| entry.value == *value)
            {
                entries.held.remove(key);
                deleted += 1;
            }
        }
        deleted
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.sweep_now_and_then();
        entries
    }
}

impl Entries {
    fn raise(&mut self, counters: &[Key], token: u64) {
        for key in counters {
            let counter = self.counters.entry(key.clone()).or_default();
            *counter = (*counter).max(token);
        }
    }

    /// The entry of `key` unless it has expired.
    fn live(&self, key: &Key, now: Instant) -> Option<&Entry> {
        self.held.get(key).filter(|entry| entry.expires > now)
    }

    /// Drops expired entries once per as many operations as there are
    /// entries, so memory follows the live locks at constant amortised cost.
    fn sweep_now_and_then(&mut self) {
        self.since_sweep += 1;
        if self.since_sweep >= self.held.len() {
            let now = Instant::now();
            self.held.retain(|_, entry| entry.expires > now);
            self.since_sweep = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<Key> {
        names.iter().map(|n| Key::from(*n)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn behaves_like_the_scripts() {
        let node = MemoryNode::default();
        let (a, b) = (Value::from("a"), Value::from("b"));
        assert_eq!(
            node.acquire(&keys(&["x", "y", "fx", "fy"]), 2, &a, 100),
            Some(1)
        );
        assert_eq!(
            node.acquire(&keys(&["y", "z"]), 2, &b, 100),
            None,
            "all or nothing"
        );
        assert_eq!(
            node.acquire(&keys(&["z", "fz"]), 1, &b, 100),
            Some(1),
            "z was left free"
        );
        assert_eq!(
            node.acquire(&keys(&["x", "fx"]), 1, &a, 100),
            Some(2),
            "our own value: harmless"
        );
        assert_eq!(
            node.acquire(&keys(&["w", "fx", "fz"]), 1, &b, 100),
            Some(3),
            "highest counter + 1"
        );
        node.fence(&keys(&["fz"]), 10);
        node.fence(&keys(&["fz"]), 5);
        assert_eq!(
            node.acquire(&keys(&["z", "fz"]), 1, &b, 100),
            Some(11),
            "fence only raises"
        );

        assert_eq!(
            node.release(&keys(&["x", "z"]), &a),
            1,
            "never deletes a foreign value"
        );
        assert!(node.extend(&keys(&["y"]), &a, 1_000));
        assert!(!node.extend(&keys(&["y", "z"]), &a, 1_000), "z is not ours");

        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            node.acquire(&keys(&["z"]), 1, &a, 100),
            Some(0),
            "b's z expired"
        );
        assert_eq!(
            node.acquire(&keys(&["y"]), 1, &b, 100),
            None,
            "y was extended"
        );
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(!node.extend(&keys(&["y"]), &a, 1_000), "y expired");
        assert_eq!(node.release(&keys(&["y"]), &a), 0);
    }

    #[test]
    fn expired_entries_are_swept() {
        let node = MemoryNode::default();
        let v = Value::from("v");
        for i in 0..1_000 {
            node.acquire(&keys(&[&format!("k{i}")]), 1, &v, 0);
        }
        let left = node.lock().held.len();
        assert!(left < 10, "{left} expired entries kept");
    }
}
