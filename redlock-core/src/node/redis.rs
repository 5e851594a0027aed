//! A Redis node: an independent server reached through its own fred client.
//! Its operations go through the node's batch queue (see `batch`).

use fred::clients::{Client, SubscriberClient};
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, EventInterface};
use fred::types::config::{Config, ReconnectPolicy, UnresponsiveConfig};
use fred::types::scripts::Script;
use fred::types::{Builder, Value};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;

use super::batch::{Op, Queue, Turn};
use super::health::{Health, MARK};
use super::{NodeResult, NodeSettings};
use crate::resource::LockKeys;
use crate::scripts;

/// How long a reload of the script after a reconnection may take.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A Redis server as a lock node.
pub(crate) struct RedisNode {
    client: Client,
    /// A second connection, for release notifications (see `wakeup`).
    pub subscriber: SubscriberClient,
    script: Script,
    queue: Arc<Queue>,
    /// Whether the connection can carry a call now.
    health: Arc<Health>,
    /// The task that loads the script again after each reconnection.
    reloader: OnceLock<AbortHandle>,
    /// How long a silent connection has to answer a probe (see `health`):
    /// the engine's connect timeout.
    patience: Duration,
}

impl RedisNode {
    /// Parses `url` and builds a client for it, without connecting.
    pub fn new(url: &str, settings: &NodeSettings) -> Result<RedisNode, String> {
        let tls = url.starts_with("rediss:");
        if tls && cfg!(not(feature = "tls")) {
            return Err(
                "rediss:// needs TLS support: enable the `tls` feature of redlock-core".to_owned(),
            );
        }
        #[allow(unused_mut)]
        let mut config = Config::from_url(url).map_err(|e| {
            format!(
                "{}; write it as redis://[user:password@]host:port[/db]",
                e.details()
            )
        })?;
        #[cfg(feature = "tls")]
        if let (true, Some(connector)) = (tls, &settings.tls) {
            config.tls = Some(connector.clone().into());
        }
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = settings.connect_timeout;
                c.internal_command_timeout = settings.connect_timeout;
                // A call written to a connection that then closes is sent
                // again on the next one, in order: a release sent as its
                // node died reaches it if it comes back with its keys (4 of
                // 10 were lost with one attempt). Its caller does not wait
                // for that: it is bounded by its timeout or the quorum.
                c.max_command_attempts = 2;
            })
            // Keep reconnecting forever, at most once a second, so a restarted node rejoins.
            .set_policy(ReconnectPolicy::new_exponential(0, 20, 1_000, 2));
        let client = builder.build().map_err(|e| e.details().to_owned())?;
        // The subscriber only listens, so a connection that died without
        // closing (its node's host gone, a NAT that forgot it) would never
        // show it, and the node's release messages would be lost for good.
        // The engine pings it (see `wakeup`); a ping unanswered within the
        // connect timeout closes it, and the client reconnects. (Not the
        // command connection: see `health` for why it is kept.)
        builder.with_connection_config(|c| {
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(settings.connect_timeout),
                interval: (settings.connect_timeout / 4).max(Duration::from_millis(10)),
            };
        });
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| e.details().to_owned())?;
        let script = Script::from_lua(scripts::BATCH);
        let health = Arc::new(Health::new());
        let queue = Queue::new(
            client.clone(),
            script.clone(),
            health.clone(),
            settings.backlog,
            settings.rejoin.clone(),
        );
        Ok(RedisNode {
            client,
            subscriber,
            script,
            queue,
            health,
            reloader: OnceLock::new(),
            patience: settings.connect_timeout,
        })
    }

    /// Connects, and loads the scripts so the first lock does not pay for it.
    pub async fn connect(&self) -> NodeResult<()> {
        self.client.init().await.map_err(describe)?;
        self.health.watch(&self.client);
        // Its subscriptions follow the watched keys, also across reconnections (see `wakeup`).
        self.subscriber.init().await.map_err(describe)?;
        self.script.load(&self.client).await.map_err(describe)?;
        self.reload_after_reconnections();
        Ok(())
    }

    /// Loads the script again each time the client reconnects: the node may
    /// have restarted without it, and an acquire that finds it missing fails
    /// there (see `batch`), however long after the restart it comes. One
    /// made before the load lands still does.
    fn reload_after_reconnections(&self) {
        let (client, script) = (self.client.clone(), self.script.clone());
        let mut reconnections = self.client.reconnect_rx();
        let task = tokio::spawn(async move {
            loop {
                match reconnections.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        let _ = tokio::time::timeout(RELOAD_TIMEOUT, script.load(&client)).await;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        if let Err(second) = self.reloader.set(task.abort_handle()) {
            second.abort();
        }
    }

    /// See [`Node::reconnection`](super::Node::reconnection).
    pub fn reconnection(&self) -> impl Future<Output = ()> + Send + 'static {
        let back = next_reconnection(&self.client);
        let (health, client) = (self.health.clone(), self.client.clone());
        async move {
            back.await;
            // Read in, so that the next call finds the node up rather than
            // the error read before it (see `health`).
            health.is_up(&client, true);
        }
    }

    /// See [`Node::no_answer`](super::Node::no_answer).
    pub fn no_answer(&self) {
        self.health.suspect(&self.client, self.patience);
    }

    /// Lets the releases handed to the node have their answers, within
    /// `bound` (see [`Queue::settled`](super::batch::Queue::settled)), then
    /// closes the connections, within `bound` as well.
    pub async fn close(&self, bound: Duration) {
        let _ = tokio::time::timeout(bound, self.queue.settled()).await;
        let _ = tokio::time::timeout(bound, self.quit()).await;
    }

    /// Closes the connections (best effort).
    pub async fn quit(&self) {
        self.queue.close();
        let _ = self.client.quit().await;
        let _ = self.subscriber.quit().await;
    }

    // Each operation is queued when called, and its turn yields the script's
    // answer (see `Node`). A lock has a turn in flight per node, so they are
    // kept small: no async layer here.

    /// See [`Node::acquire`](super::Node::acquire): a token, or -1 when held.
    pub fn acquire(&self, keys: &LockKeys, value: &Value, ttl_ms: u64) -> NodeResult<Turn> {
        self.submit(Op::Acquire {
            keys: keys.clone(),
            value: value.clone(),
            ttl_ms,
        })
    }

    /// See [`Node::fence`](super::Node::fence).
    pub fn fence(&self, keys: &LockKeys, token: u64) -> NodeResult<Turn> {
        let keys = keys.clone();
        self.submit(Op::Fence { keys, token })
    }

    /// See [`Node::extend`](super::Node::extend): 1 when extended.
    pub fn extend(&self, keys: &LockKeys, value: &Value, ttl_ms: u64) -> NodeResult<Turn> {
        self.submit(Op::Extend {
            keys: keys.clone(),
            value: value.clone(),
            ttl_ms,
        })
    }

    /// See [`Node::release`](super::Node::release): how many keys it deleted.
    pub fn release(&self, keys: &LockKeys, value: &Value, announce: bool) -> NodeResult<Turn> {
        self.submit(Op::Release {
            keys: keys.clone(),
            value: value.clone(),
            announce,
        })
    }

    /// Queues one operation; the returned turn yields its result. Once
    /// queued, it runs even if the caller stops waiting.
    fn submit(&self, op: Op) -> NodeResult<Turn> {
        // A node whose connection is closed (see `health`) cannot answer in
        // time: the operation fails at once, so no caller waits out its
        // timeout on a node that is down (a release waits for every node). A
        // release or fence is still sent, by dropping its turn, so that it
        // follows the acquire it undoes once the client reconnects.
        if !self.health.is_up(&self.client, op.must_run()) {
            if op.must_run() {
                drop(self.queue.run(op));
            }
            return Err(match self.health.is_silent() {
                true => format!(
                    "not connected: the connection went silent (a probe had no answer \
                     within {:?}); waiting for the node to answer again",
                    self.patience
                ),
                false => "not connected (reconnecting)".to_owned(),
            });
        }
        Ok(self.queue.run(op))
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        // Its task holds a client, which would keep the connection open.
        if let Some(reloader) = self.reloader.get() {
            reloader.abort();
        }
    }
}

/// Completes when `client` next reconnects and reports itself connected.
/// The receiver is taken now: a caller that looks at the connection after
/// this call misses no reconnection that follows its look.
pub(super) fn next_reconnection(client: &Client) -> impl Future<Output = ()> + Send + 'static {
    let mut reconnections = client.reconnect_rx();
    let client = client.clone();
    async move {
        let _ = reconnections.recv().await;
        // fred announces the reconnection a moment before it reports itself
        // connected, and a call made in between still finds it down. (At
        // most `MARK`: a connection reported in that moment is missed.)
        let _ = tokio::time::timeout(MARK, client.wait_for_connect()).await;
    }
}

/// A client error as the user should read it.
pub(super) fn describe(e: FredError) -> String {
    hint(&format!("{:?}: {}", e.kind(), e.details()))
}

/// The known traps: a node error that no retry cures, only a change to the
/// configuration, and what to change.
fn trap(details: &str) -> Option<&'static str> {
    if details.contains("WRONGTYPE") {
        Some(
            "a lock key collides with application data of another type: \
             choose another `app` name or resource",
        )
    } else if details.contains("NOPERM") {
        Some(
            "the node's ACL user needs that command or key: the README's \
             Security section lists what a lock user needs",
        )
    } else {
        None
    }
}

/// Whether a node's error is a known trap (see [`hint`]): retrying cannot cure it.
pub(crate) fn needs_a_fix(details: &str) -> bool {
    trap(details).is_some()
}

/// A node's error text, with what to change for the known traps.
pub(super) fn hint(details: &str) -> String {
    match trap(details) {
        Some(fix) => format!("{details} ({fix})"),
        None => details.to_owned(),
    }
}
