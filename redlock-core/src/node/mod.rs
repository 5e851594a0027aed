//! Lock nodes. A node knows three atomic operations on a set of keys
//! (acquire, extend, release); the quorum logic above it never sees how a
//! node stores them.

mod batch;
mod health;
mod memory;
mod redis;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use fred::types::Value;

pub(crate) use memory::MemoryNode;
pub(crate) use redis::{needs_a_fix, RedisNode};

pub(crate) use batch::Gate;
use batch::Turn;

use crate::resource::LockKeys;

/// What a node said to one operation, before timeouts are applied.
pub(crate) type NodeResult<T> = Result<T, String>;

/// Settings shared by all Redis nodes of an engine.
pub(crate) struct NodeSettings {
    pub connect_timeout: Duration,
    /// How many operations may wait for one node (see `batch`).
    pub backlog: usize,
    /// The rejoin gate, if the engine has a rejoin delay.
    pub rejoin: Option<Gate>,
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
    pub fn redis(url: &str, settings: &NodeSettings) -> Result<Node, (String, String)> {
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

    /// A call went unanswered past its timeout: the node's connection may
    /// have gone silent, and is probed (see `health`).
    pub fn no_answer(&self) {
        if let Backend::Redis(node) = &self.backend {
            node.no_answer();
        }
    }

    /// A future that completes when the node's client next reconnects;
    /// `None` for the in-process node.
    pub fn reconnection(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        match &self.backend {
            Backend::Redis(node) => Some(Box::pin(node.reconnection())),
            Backend::Memory(_) => None,
        }
    }

    pub async fn quit(&self) {
        if let Backend::Redis(node) = &self.backend {
            node.quit().await;
        }
    }

    /// Closes the connections once the releases handed to the node have
    /// had their answers; each step within `bound`.
    pub async fn close(&self, bound: Duration) {
        if let Backend::Redis(node) = &self.backend {
            node.close(bound).await;
        }
    }

    // Each operation is on its way when called (queued for a Redis node,
    // done for the in-process one), and answers in the lock script's terms.

    /// Takes all lock keys of `keys` for `value` for `ttl_ms`, or none, and
    /// draws a fencing token from their counters. Answers -1 when a lock key
    /// is held by another, else the node's fencing token (0 without counters).
    pub fn acquire(&self, keys: &LockKeys, value: &Value, ttl_ms: u64) -> NodeCall {
        match &self.backend {
            Backend::Redis(node) => node.acquire(keys, value, ttl_ms).into(),
            Backend::Memory(node) => {
                let token = node.acquire(keys.all(), keys.lock_count(), value, ttl_ms);
                NodeCall::answered(token.map_or(-1, number))
            }
        }
    }

    /// Raises the fencing counters of `keys` to at least `token`. Answers 1.
    pub fn fence(&self, keys: &LockKeys, token: u64) -> NodeCall {
        match &self.backend {
            Backend::Redis(node) => node.fence(keys, token).into(),
            Backend::Memory(node) => {
                node.fence(keys.counters(), token);
                NodeCall::answered(1)
            }
        }
    }

    /// Resets the TTL of all lock keys if they all hold `value`. Answers 1,
    /// or 0 when any is gone.
    pub fn extend(&self, keys: &LockKeys, value: &Value, ttl_ms: u64) -> NodeCall {
        match &self.backend {
            Backend::Redis(node) => node.extend(keys, value, ttl_ms).into(),
            Backend::Memory(node) => {
                NodeCall::answered(node.extend(keys.locks(), value, ttl_ms).into())
            }
        }
    }

    /// Deletes the lock keys that hold `value`; answers how many did. With
    /// `announce`, each deleted key is published, waking waiters elsewhere:
    /// a lock's release announces, a failed attempt's clean-up does not (its
    /// waiters are better left to the real holder's release than woken into
    /// another race).
    pub fn release(&self, keys: &LockKeys, value: &Value, announce: bool) -> NodeCall {
        match &self.backend {
            Backend::Redis(node) => node.release(keys, value, announce).into(),
            Backend::Memory(node) => NodeCall::answered(number(node.release(keys.locks(), value))),
        }
    }
}

/// A count or token as the script would answer it (far below `i64::MAX`).
fn number(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One operation on one node, as a future of its answer. Written by hand,
/// small and `Unpin`: a lock has one in flight per node, and a round keeps
/// its calls in one vector, with no allocation per node.
pub(crate) enum NodeCall {
    /// Queued for, or sent to, a Redis node.
    Sent(Turn),
    /// Answered when made: by the in-process node, or refused at once.
    Answered(Option<NodeResult<i64>>),
}

impl NodeCall {
    /// A call answered before it was made: `answer`, as the script would.
    pub fn answered(answer: i64) -> NodeCall {
        NodeCall::Answered(Some(Ok(answer)))
    }
}

impl From<NodeResult<Turn>> for NodeCall {
    fn from(turn: NodeResult<Turn>) -> NodeCall {
        match turn {
            Ok(turn) => NodeCall::Sent(turn),
            Err(reason) => NodeCall::Answered(Some(Err(reason))),
        }
    }
}

impl Future for NodeCall {
    type Output = NodeResult<i64>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            NodeCall::Sent(turn) => Pin::new(turn).poll(cx),
            NodeCall::Answered(answer) => Poll::Ready(
                answer
                    .take()
                    .unwrap_or_else(|| Err("the call was already answered".to_owned())),
            ),
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
    /// 10,000 locks on 5 nodes: each call must stay small.
    #[test]
    fn a_node_call_is_small() {
        let size = std::mem::size_of::<NodeCall>();
        assert!(size <= 256, "{size} bytes");
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
