//! Building an engine: nodes, app name, defaults, connection.

use std::time::Duration;

use crate::engine::{Inner, Redlock};
use crate::error::{Error, Result};
use crate::keepalive::KeepAlive;
use crate::node::{Gate, Node, NodeSettings};
use crate::options::{invalid, LockOptions, MAX_TTL};
use crate::quorum::{self, fan_out, Until};
use crate::resource;
use crate::wakeup::Wakeup;

/// The app name in keys when none is given.
pub const DEFAULT_APP: &str = "app";
/// How long `build` waits for each node by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many operations may wait for one node by default (see
/// [`RedlockBuilder::node_backlog`]).
pub const DEFAULT_NODE_BACKLOG: usize = 65_536;

/// Configures and connects a [`Redlock`] engine.
///
/// ```no_run
/// use std::time::Duration;
/// use redlock_core::{LockOptions, Redlock};
/// # async fn demo() -> Result<(), redlock_core::Error> {
/// let engine = Redlock::builder()
///     .app("shop")
///     .nodes(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"])
///     .defaults(LockOptions::default().ttl(Duration::from_secs(10)))
///     .build()
///     .await?;
/// # let _ = engine; Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedlockBuilder {
    app: String,
    urls: Vec<String>,
    defaults: LockOptions,
    connect_timeout: Duration,
    node_backlog: usize,
    require_all_nodes: bool,
    rejoin_delay: Duration,
    in_memory: bool,
    #[cfg(feature = "tls")]
    tls: Option<fred::types::config::TlsConnector>,
}

impl Default for RedlockBuilder {
    fn default() -> Self {
        RedlockBuilder {
            app: DEFAULT_APP.to_owned(),
            urls: Vec::new(),
            defaults: LockOptions::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            node_backlog: DEFAULT_NODE_BACKLOG,
            require_all_nodes: true,
            rejoin_delay: Duration::ZERO,
            in_memory: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl RedlockBuilder {
    /// The application name: every key starts with `redlock_{app}:`, braces
    /// included (default `app`); it may not contain `:`, braces or whitespace.
    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.app = app.into();
        self
    }

    /// The Redis nodes, as URLs (`redis://[user:password@]host:port[/db]`).
    /// Use 1, 3 or 5 independent servers (not replicas of each other). A
    /// node may also be a primary that Sentinel names
    /// (`redis-sentinel://host:port?sentinelServiceName=name`) or a Redis
    /// Cluster (`redis-cluster://host:port?node=host2:port2`), where all of
    /// the app's keys share one hash slot.
    pub fn nodes<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.urls.extend(urls.into_iter().map(Into::into));
        self
    }

    /// Use one in-process node instead of Redis: real TTLs, the same
    /// compare-and-delete and compare-and-extend semantics, no server.
    ///
    /// For a single process only (a CLI, a demo, your own tests): it excludes
    /// tasks of this process, not other processes.
    pub fn in_memory(mut self) -> Self {
        self.in_memory = true;
        self
    }

    /// The TLS connector for `rediss://` nodes, e.g. one that trusts your own
    /// CA (default: the system's root certificates).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, connector: crate::tls::TlsConnector) -> Self {
        self.tls = Some(connector);
        self
    }

    /// Engine-wide lock options; each call's [`LockOptions`] override them field by field.
    pub fn defaults(mut self, defaults: LockOptions) -> Self {
        self.defaults = defaults;
        self
    }

    /// How long `build` waits for each node to connect (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many lock operations may wait for one Redis node while it works
    /// on earlier ones (default [`DEFAULT_NODE_BACKLOG`]): the bound on what
    /// a node that is down or not keeping up costs in memory, about 500
    /// bytes per operation.
    ///
    /// A release to a node that is down waits for the node's return, so a
    /// node that comes back with its keys drops the ones it missed. At the
    /// bound, a new acquire or extension fails at once on that node, and a
    /// new release takes the place of the oldest operation waiting, which
    /// fails: its keys on that node expire at their TTL. Raise it if this
    /// process holds more locks than this at once.
    pub fn node_backlog(mut self, operations: usize) -> Self {
        self.node_backlog = operations;
        self
    }

    /// Whether `build` fails when any node is unreachable (default `true`).
    /// With `false` it needs only a quorum; the others are retried in the background.
    pub fn require_all_nodes(mut self, require: bool) -> Self {
        self.require_all_nodes = require;
        self
    }

    /// How long a Redis node that lost its keys grants no lock (default
    /// zero: off; at most [`MAX_TTL`]). Set it to the
    /// longest TTL any process gives this app's locks when the nodes run
    /// without persistence.
    ///
    /// A node that restarts empty forgets the locks it held, and could grant
    /// one of them again while its holder still counts on it: with one more
    /// node in that state (or down), two holders overlap. The Redlock
    /// remedy is to keep a restarted node out for a TTL; this makes the
    /// nodes do it. Each node keeps two keys of this app's: on a node that
    /// has neither (it lost its keys, or this app never locked there), the
    /// first acquire starts the delay, on the node's clock, and every
    /// acquire fails there until it has passed, with a vote that says so.
    /// Releases and extensions go on. So the first use of a node also
    /// waits the delay: a new node cannot be told from an emptied one.
    /// Every engine of the app must set it. Each acquire costs the node one
    /// more key read (about 15 % more server instructions per lock).
    ///
    /// Not a remedy for a node that restarts with part of its keys (a
    /// snapshot, or an append-only file synced every second): it keeps the
    /// gate's keys, and not the latest locks. Such nodes need
    /// `appendfsync always`, or to stay down for a TTL.
    pub fn rejoin_delay(mut self, delay: Duration) -> Self {
        self.rejoin_delay = delay;
        self
    }

    /// Checks the configuration and connects to every node.
    pub async fn build(self) -> Result<Redlock> {
        resource::check_segment("app", &self.app)?;
        let default_settings = self.defaults.resolve()?;
        let default_prefix = resource::key_prefix(&self.app, &default_settings.instance);
        let keep_alive = KeepAlive::new(default_settings.lease.ttl);
        if self.in_memory {
            if !self.urls.is_empty() {
                return Err(invalid(
                    "nodes",
                    "both in_memory() and Redis nodes given; choose one".to_owned(),
                ));
            }
            if !self.rejoin_delay.is_zero() {
                return Err(invalid(
                    "rejoin_delay",
                    "the in-process node loses its locks only with its process; \
                     the delay is for Redis nodes: remove it, or give Redis nodes"
                        .to_owned(),
                ));
            }
            return Ok(Redlock::from_inner(Inner {
                nodes: vec![Node::memory()],
                quorum: 1,
                app: self.app,
                defaults: self.defaults,
                default_settings,
                default_prefix,
                warnings: Vec::new(),
                wakeup: Wakeup::new(Vec::new()),
                listeners: Vec::new(),
                keep_alive,
                closing: Default::default(),
            }));
        }
        if self.urls.is_empty() {
            return Err(invalid(
                "nodes",
                "no Redis node given; pass 1, 3 or 5 URLs such as \"redis://127.0.0.1:6379\", \
                 or use in_memory() within a single process"
                    .to_owned(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid(
                "connect_timeout",
                "it is zero; use a few seconds".to_owned(),
            ));
        }
        if self.node_backlog == 0 {
            return Err(invalid(
                "node_backlog",
                format!(
                    "it is zero, so no lock operation could wait for a node; \
                     use at least the number of locks this process takes at once \
                     (default {DEFAULT_NODE_BACKLOG})"
                ),
            ));
        }
        let mut warnings = Vec::new();
        if self.urls.len() % 2 == 0 {
            warnings.push(format!(
                "{} nodes: an even count tolerates no more failures than {} nodes and needs a larger quorum; \
                 use an odd count",
                self.urls.len(),
                self.urls.len() - 1
            ));
        }
        let rejoin = match u64::try_from(self.rejoin_delay.as_millis()).unwrap_or(u64::MAX) {
            0 if self.rejoin_delay.is_zero() => None,
            0 => {
                return Err(invalid(
                    "rejoin_delay",
                    format!(
                        "{:?} is under a millisecond, the nodes' unit; use the longest lock TTL \
                         (or zero to turn it off)",
                        self.rejoin_delay
                    ),
                ))
            }
            _ if self.rejoin_delay > MAX_TTL => {
                return Err(invalid(
                    "rejoin_delay",
                    format!(
                        "{:?} is over the limit of {MAX_TTL:?}, the longest lock TTL; \
                         use the longest TTL of this app's locks",
                        self.rejoin_delay
                    ),
                ))
            }
            delay_ms => {
                if self.rejoin_delay < default_settings.lease.ttl {
                    warnings.push(format!(
                        "rejoin_delay {:?} is shorter than the default TTL {:?}: a node that lost \
                         its keys may grant a lock again while its holder still counts on it; \
                         use the longest TTL of this app's locks",
                        self.rejoin_delay, default_settings.lease.ttl
                    ));
                }
                Some(Gate::new(&self.app, delay_ms))
            }
        };
        let settings = NodeSettings {
            connect_timeout: self.connect_timeout,
            backlog: self.node_backlog,
            rejoin,
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
        };
        let nodes = self
            .urls
            .iter()
            .map(|url| Node::redis(url, &settings))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|(node, reason)| Error::InvalidNode { node, reason })?;

        let votes = fan_out(
            &nodes,
            self.connect_timeout,
            Until::All,
            |node| Box::pin(async move { node.connect().await.map(|()| 1) }),
            quorum::any_answer,
        )
        .await;
        let quorum = quorum::majority(nodes.len());
        let failures: Vec<(String, String)> = quorum::named(&nodes, votes)
            .unreachable()
            .map(|v| (v.node.clone(), v.vote.to_string()))
            .collect();
        let reachable = nodes.len() - failures.len();
        if !failures.is_empty() && (self.require_all_nodes || reachable < quorum) {
            for node in &nodes {
                node.quit().await;
            }
            return Err(Error::Unreachable { failures });
        }
        let wakeup = Wakeup::new(nodes.iter().filter_map(Node::subscriber).collect());
        let listeners = wakeup.listen(self.connect_timeout);
        Ok(Redlock::from_inner(Inner {
            nodes,
            quorum,
            app: self.app,
            defaults: self.defaults,
            default_settings,
            default_prefix,
            warnings,
            wakeup,
            listeners,
            keep_alive,
            closing: Default::default(),
        }))
    }
}
