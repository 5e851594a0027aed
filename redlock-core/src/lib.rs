//! The quorum lock engine of redlock: the Redlock algorithm over N
//! independent Redis nodes, with automatic extension while the locked
//! function runs.
//!
//! ```no_run
//! use redlock_core::{Redlock, LockOptions};
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), redlock_core::Error> {
//! let engine = Redlock::builder()
//!     .app("myapp")
//!     .nodes(["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"])
//!     .build()
//!     .await?;
//! let n = engine.lock("name", |_ctx| async move { 1 }).await?;
//! let r = engine
//!     .lock_with("name", LockOptions::default().ttl(Duration::from_secs(5)), |ctx| async move {
//!         ctx.validity()
//!     })
//!     .await?;
//! engine.close().await; // on shutdown: the releases under way reach the nodes
//! # let _ = (n, r); Ok(()) }
//! ```
//!
//! A node is a Redis server of version 6.2 or later (standalone, behind
//! Sentinel, or a Cluster); the tests run on 6.2, 7.0 and 8.2.
//!
//! Guarantees and their limits are in the README: safety rests on bounded
//! clock drift and on nodes keeping their keys (or waiting out
//! [`RedlockBuilder::rejoin_delay`] once they lost them); a process pause
//! can outlive any lease.

#![warn(missing_docs)]

mod builder;
mod closing;
mod context;
mod engine;
mod error;
mod keepalive;
mod level;
mod lock;
mod node;
mod options;
mod pools;
mod quorum;
mod resource;
mod scripts;
mod value;
mod wakeup;

pub use builder::{RedlockBuilder, DEFAULT_APP, DEFAULT_CONNECT_TIMEOUT, DEFAULT_NODE_BACKLOG};
pub use context::LockContext;
pub use engine::Redlock;
pub use error::{Error, NodeVote, Result, Vote, Votes};
pub use level::{at_level, current_level, inherit_level};
pub use lock::Lock;
pub use options::{
    IsolateOptions, LockOptions, OnLoss, DEFAULT_DRIFT_FACTOR, DEFAULT_INSTANCE,
    DEFAULT_RETRY_DELAY, DEFAULT_RETRY_JITTER, DEFAULT_TTL, MAX_TTL,
};
pub use pools::LevelPools;
pub use resource::{check_resource, MAX_RESOURCE_LEN};

/// TLS for `rediss://` nodes (feature `tls`): build a connector from a
/// rustls `ClientConfig` and pass it to [`RedlockBuilder::tls`].
#[cfg(feature = "tls")]
pub mod tls {
    pub use fred::rustls;
    pub use fred::types::config::TlsConnector;
}

#[doc(hidden)]
pub mod __private {
    //! Used by the code `#[meta_redlock]` generates; not a public API.
    pub use crate::resource::{build_resource, write_parts, Part};
}

/// Declares a module's lock resources and generates its typed lock methods.
///
/// See the `redlock-macros` crate documentation for the full syntax.
pub use redlock_macros::meta_redlock;
