//! Lock nodes. A node knows three atomic operations on a set of keys
//! (acquire, extend, release); the quorum logic above it never sees how a
//! node stores them.

mod batch;
mod memory;
mod redis;

use std::time::Duration;

use fred::types::Value;

pub(crate) use memory::MemoryNode;
pub(crate) use redis::RedisNode;

use crate::resource::LockKeys;

/// What a node said to one operation, before timeouts are applied.
pub(crate) type NodeResult<T> = Result<T, String>;

/// Connection settings shared by all nodes of an engine.
pub(crate) struct ConnectSettings {
    pub connect_timeout: Duration,
    /// The TLS connector for `rediss://` nodes (default: the system's roots).
    #[cfg(feature = "tls")]
    pub tls: Option<fred::types::config::TlsConnector>,
}

/// One lock node, with the name it goes by in errors.
pub(crate) struct Node {
    /// The URL as configured, with any password masked: safe to show in errors.
    pub name: String,
    backend: Backend,
}

enum Backend {
    Redis(RedisNode),
    Memory(MemoryNode),
}

impl Node {
    /// A Redis node for `url` (not yet connected).
    pub fn redis(url: &str, settings: &ConnectSettings) -> Result<Node, (String, String)> {
        let name = mask_password(url);
        match RedisNode::new(url, settings) {
            Ok(node) => Ok(Node {
                name,
                backend: Backend::Redis(node),
            }),
            Err(reason) => Err((name, reason)),
        }
    }

    /// The in-process node.
    pub fn memory() -> Node {
        Node {
            name: "in-memory".to_owned(),
            backend: Backend::Memory(MemoryNode::default()),
        }
    }

    /// The pub/sub connection of a Redis node, for release notifications.
    pub fn subscriber(&self) -> Option<fred::clients::SubscriberClient> {
        match &self.backend {
            Backend::Redis(node) => Some(node.subscriber.clone()),
            Backend::Memory(_) => None,
        }
    }

    pub async fn connect(&self) -> NodeResult<()> {
        match &self.backend {
            Backend::Redis(node) => node.connect().await,
            Backend::Memory(_) => Ok(()),
        }
    }

    pub async fn quit(&self) {
        if let Backend::Redis(node) = &self.backend {
            node.quit().await;
        }
    }

    /// Takes all lock keys of `keys` for `value` for `ttl_ms`, or none, and
    /// draws a fencing token from their counters. Returns `None` when a lock
    /// key is held by another, else the node's fencing token (0 without
    /// counters).
    pub async fn acquire(
        &self,
        keys: &LockKeys,
        value: &Value,
        ttl_ms: u64,
    ) -> NodeResult<Option<u64>> {
        match &self.backend {
            Backend::Redis(node) => {
                // Bound first, so the future keeps one copy of the turn.
                let turn = node.acquire(keys, value, ttl_ms)?;
                Ok(u64::try_from(turn.await?).ok())
            }
            Backend::Memory(node) => Ok(node.acquire(keys.all(), keys.lock_count(), value, ttl_ms)),
        }
    }

    /// Raises the fencing counters of `keys` to at least `token`.
    pub async fn fence(&self, keys: &LockKeys, token: u64) -> NodeResult<()> {
        match &self.backend {
            Backend::Redis(node) => {
                let turn = node.fence(keys, token)?;
                turn.await.map(drop)
            }
            Backend::Memory(node) => {
                node.fence(keys.counters(), token);
                Ok(())
            }
        }
    }

    /// Resets the TTL of all lock keys if they all hold `value`: false when any is gone.
    pub async fn extend(&self, keys: &LockKeys, value: &Value, ttl_ms: u64) -> NodeResult<bool> {
        match &self.backend {
            Backend::Redis(node) => {
                let turn = node.extend(keys, value, ttl_ms)?;
                Ok(turn.await? == 1)
            }
            Backend::Memory(node) => Ok(node.extend(keys.locks(), value, ttl_ms)),
        }
    }

    /// Deletes the lock keys that hold `value`; returns how many did. With
    /// `announce`, each deleted key is published, waking waiters elsewhere:
    /// a lock's release announces, a failed attempt's clean-up does not (its
    /// waiters are better left to the real holder's release than woken into
    /// another race).
    pub async fn release(&self, keys: &LockKeys, value: &Value, announce: bool) -> NodeResult<u64> {
        match &self.backend {
            Backend::Redis(node) => {
                let turn = node.release(keys, value, announce)?;
                Ok(turn.await?.max(0) as u64)
            }
            Backend::Memory(node) => Ok(node.release(keys.locks(), value)),
        }
    }
}

/// `redis://user:secret@host` -> `redis://user:***@host`.
pub(crate) fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let Some(at) = url[scheme_end..].rfind('@').map(|i| i + scheme_end) else {
        return url.to_owned();
    };
    let userinfo = &url[scheme_end..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &url[at..]
        ),
        None if !userinfo.is_empty() => format!("{}***{}", &url[..scheme_end], &url[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock has a node call in flight per node, 50,000 at once for
    /// 10,000 locks on 5 nodes: each call's future must stay small.
    #[test]
    fn a_node_call_is_a_small_future() {
        let settings = ConnectSettings {
            connect_timeout: Duration::from_secs(1),
            #[cfg(feature = "tls")]
            tls: None,
        };
        let node = Node::redis("redis://127.0.0.1:1", &settings).unwrap();
        let keys = LockKeys::new("p:", &["a"], true).unwrap();
        let value = Value::from("v");
        let sizes = [
            std::mem::size_of_val(&node.acquire(&keys, &value, 1)),
            std::mem::size_of_val(&node.extend(&keys, &value, 1)),
            std::mem::size_of_val(&node.release(&keys, &value, true)),
            std::mem::size_of_val(&node.fence(&keys, 1)),
        ];
        assert!(sizes.iter().all(|&size| size <= 256), "{sizes:?} bytes");
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(mask_password("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(mask_password("rediss://secret@h:1"), "rediss://***@h:1");
    }
}
