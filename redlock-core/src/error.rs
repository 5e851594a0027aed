//! Errors, and the per-node votes that explain them.

use std::fmt;
use std::time::Duration;

/// What one node answered to one lock operation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Vote {
    /// The node granted the operation (acquired, extended or released).
    Granted,
    /// Another holder owns at least one of the keys on this node.
    Held,
    /// The node no longer holds our value (expired, or taken by another holder).
    Gone,
    /// The node answered with an error, or could not be reached.
    Failed(String),
    /// The node did not answer within the per-node timeout.
    TimedOut(Duration),
    /// The outcome was decided by the other nodes before this one answered.
    Unanswered,
}

impl Vote {
    /// True when the node answered (with a yes or a no), as opposed to failing or timing out.
    pub fn is_answer(&self) -> bool {
        matches!(self, Vote::Granted | Vote::Held | Vote::Gone)
    }
}

impl fmt::Display for Vote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Vote::Granted => f.write_str("granted"),
            Vote::Held => f.write_str("held by another holder"),
            Vote::Gone => f.write_str("our lock is gone (expired or taken over)"),
            Vote::Failed(reason) => write!(f, "error: {reason}"),
            Vote::TimedOut(after) => write!(f, "no answer within {after:?}"),
            Vote::Unanswered => f.write_str("not awaited (quorum already decided)"),
        }
    }
}

/// One node's vote, with the node's name (its URL without password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeVote {
    /// The node, as configured (password masked).
    pub node: String,
    /// What it answered.
    pub vote: Vote,
}

/// The votes of every node in one attempt; displayed as `node: vote; node: vote`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Votes(pub Vec<NodeVote>);

impl Votes {
    /// How many nodes voted `vote`.
    pub fn count(&self, vote: &Vote) -> usize {
        self.0.iter().filter(|v| &v.vote == vote).count()
    }

    /// The nodes that failed or timed out.
    pub fn unreachable(&self) -> impl Iterator<Item = &NodeVote> {
        self.0
            .iter()
            .filter(|v| matches!(v.vote, Vote::Failed(_) | Vote::TimedOut(_)))
    }
}

impl fmt::Display for Votes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.node, v.vote)?;
        }
        Ok(())
    }
}

/// Every error of the engine. Each message says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Other holders kept the lock for the whole wait bound.
    #[error(
        "lock on {resources:?} not acquired within {waited:?} ({attempts} attempts); last votes: {votes}. \
         Another holder has it: wait longer (LockOptions::wait), or shorten the holders' critical sections"
    )]
    NotAcquired {
        /// The resources asked for.
        resources: Vec<String>,
        /// How long the call waited.
        waited: Duration,
        /// How many attempts were made.
        attempts: u32,
        /// The votes of the last attempt.
        votes: Votes,
    },

    /// Too few nodes answered to form a quorum.
    #[error(
        "no quorum for {resources:?}: {quorum} of {nodes} nodes must answer, and only {answered} did; votes: {votes}. \
         Bring the failing nodes back, or check their addresses and the per-node timeout (LockOptions::node_timeout)"
    )]
    QuorumUnreachable {
        /// The resources concerned.
        resources: Vec<String>,
        /// Nodes needed.
        quorum: usize,
        /// Nodes configured.
        nodes: usize,
        /// Nodes that answered at all.
        answered: usize,
        /// The votes of the last attempt.
        votes: Votes,
    },

    /// The lock expired, or was taken over, while it was held.
    #[error(
        "lock on {resources:?} was lost while held: {reason}. The critical section outlived the lock: \
         raise the TTL (LockOptions::ttl), keep nodes reachable, or use fencing tokens in the protected store"
    )]
    LockLost {
        /// The resources concerned.
        resources: Vec<String>,
        /// Why it was lost.
        reason: String,
    },

    /// An extension did not reach a quorum, but the lock is still valid for `validity`.
    #[error(
        "lock on {resources:?} not extended ({validity:?} of validity left); votes: {votes}. \
         Retry before the validity runs out, or release the lock"
    )]
    NotExtended {
        /// The resources concerned.
        resources: Vec<String>,
        /// Remaining validity of the current lease.
        validity: Duration,
        /// The votes of the extension attempt.
        votes: Votes,
    },

    /// A resource name the engine cannot turn into a key.
    #[error("invalid resource {resource:?}: {reason}")]
    InvalidResource {
        /// The resource (possibly truncated for display).
        resource: String,
        /// What is wrong and what to change.
        reason: String,
    },

    /// A lock or engine option out of its range.
    #[error("invalid option `{option}`: {reason}")]
    InvalidOptions {
        /// The option's name.
        option: &'static str,
        /// What is wrong and what to change.
        reason: String,
    },

    /// A node address that cannot be used.
    #[error("invalid node {node:?}: {reason}")]
    InvalidNode {
        /// The node as given (password masked).
        node: String,
        /// What is wrong and what to change.
        reason: String,
    },

    /// The engine was closed ([`Redlock::close`](crate::Redlock::close)):
    /// it takes no more locks.
    #[error(
        "the lock engine was closed (Redlock::close) and takes no more locks: \
         close it only once the process stops locking, or build a new engine"
    )]
    Closed,

    /// Nodes that could not be reached when the engine was built.
    #[error("{} Redis node(s) unreachable at start-up: {}. Start them, fix their addresses, \
             or allow a reachable quorum with RedlockBuilder::require_all_nodes(false)",
            .failures.len(), display_failures(.failures))]
    Unreachable {
        /// `(node, reason)` for each unreachable node.
        failures: Vec<(String, String)>,
    },
}

fn display_failures(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(node, reason)| format!("{node}: {reason}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `Result` with this crate's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
