//! Sending one operation to every node in parallel and counting the votes.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{NodeVote, Vote, Votes};
use crate::node::{Node, NodeResult};

/// The majority of `nodes`: N/2 + 1.
pub(crate) fn majority(nodes: usize) -> usize {
    nodes / 2 + 1
}

/// When to stop waiting for the remaining nodes.
#[derive(Clone, Copy)]
pub(crate) enum Until {
    /// As soon as `quorum` nodes granted, or so many refused that it cannot happen.
    Decided { quorum: usize },
    /// Every node answered or timed out (connecting: each node's state is wanted).
    All,
    /// Every node answered or timed out, but once `quorum` nodes granted, no
    /// longer than twice what that took (at least [`LATE`]): a release.
    /// Every node is asked, and the usual stragglers answer within
    /// microseconds; a node that stopped answering (paused, cut off) costs
    /// a round trip or two instead of the node timeout on every release.
    /// Its operation still goes out.
    AllButLate { quorum: usize },
}

/// After a quorum answered, the least time left for the other nodes (see
/// [`Until::AllButLate`]): well above a loaded machine's scheduling delays.
const LATE: Duration = Duration::from_millis(50);

/// A node's vote, with the number its operation returned (a fencing token
/// for acquire; 0 when there is none).
pub(crate) type Answer = (Vote, u64);

/// The vote of a node whose answer, whatever it is, is a yes (a release:
/// deleted or already gone, the node is rid of our value; a fence; a connect).
pub(crate) fn any_answer(_: i64) -> Answer {
    (Vote::Granted, 0)
}

/// Makes `call` on every node at once (in node order), all bounded by
/// `timeout`, and turns each node's answer into its vote with `read`; votes
/// are in node order.
/// A node still running when the outcome is decided is `Unanswered`; one
/// still running at the timeout is `TimedOut`. The calls are `Unpin`, as a
/// [`NodeCall`](crate::node::NodeCall) is, so a round needs no allocation per node.
pub(crate) async fn fan_out<'a, C>(
    nodes: &'a [Node],
    timeout: Duration,
    until: Until,
    mut call: impl FnMut(&'a Node) -> C,
    read: impl Fn(i64) -> Answer,
) -> Vec<Answer>
where
    C: Future<Output = NodeResult<i64>> + Unpin,
{
    // `None` once the node has answered.
    let mut pending: Vec<Option<C>> = nodes.iter().map(|node| Some(call(node))).collect();
    let mut votes: Vec<Answer> = vec![(Vote::Unanswered, 0); nodes.len()];
    // One timer for all nodes: they all started now.
    let start = Instant::now();
    let mut deadline = std::pin::pin!(tokio::time::sleep(timeout));
    // Whether the deadline was brought forward for late nodes.
    let mut late = false;
    poll_fn(|cx| {
        for (vote, slot) in votes.iter_mut().zip(pending.iter_mut()) {
            if let Some(call) = slot {
                if let Poll::Ready(result) = Pin::new(call).poll(cx) {
                    *vote = result.map_or_else(|reason| (Vote::Failed(reason), 0), &read);
                    *slot = None;
                }
            }
        }
        if pending.iter().all(Option::is_none) || decided(&votes, until) {
            return Poll::Ready(());
        }
        if let (Until::AllButLate { quorum }, false) = (until, late) {
            if granted(&votes) >= quorum {
                late = true;
                let now = Instant::now();
                let at = (now + ((now - start) * 2).max(LATE)).min(start + timeout);
                deadline.as_mut().reset(at);
            }
        }
        if deadline.as_mut().poll(cx).is_ready() {
            let gave_up = if late {
                Vote::Unanswered
            } else {
                Vote::TimedOut(timeout)
            };
            for ((vote, slot), node) in votes.iter_mut().zip(&pending).zip(nodes) {
                if slot.is_some() {
                    *vote = (gave_up.clone(), 0);
                    node.no_answer();
                }
            }
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
    votes
}

fn granted(votes: &[Answer]) -> usize {
    votes.iter().filter(|(v, _)| *v == Vote::Granted).count()
}

fn decided(votes: &[Answer], until: Until) -> bool {
    let Until::Decided { quorum } = until else {
        return false;
    };
    let granted = granted(votes);
    let refused = votes
        .iter()
        .filter(|(v, _)| !matches!(v, Vote::Granted | Vote::Unanswered))
        .count();
    granted >= quorum || refused > votes.len() - quorum
}

/// Counts of one round of votes.
pub(crate) struct Tally {
    pub granted: usize,
    /// Nodes that gave any answer (yes or no); the rest failed, timed out or were not awaited.
    pub answered: usize,
    /// Nodes that said our value is gone.
    pub gone: usize,
    /// Nodes that failed or timed out.
    pub failed: usize,
}

pub(crate) fn tally(answers: &[Answer]) -> Tally {
    let count = |wanted: fn(&Vote) -> bool| answers.iter().filter(|(v, _)| wanted(v)).count();
    Tally {
        granted: count(|v| *v == Vote::Granted),
        answered: count(Vote::is_answer),
        gone: count(|v| *v == Vote::Gone),
        failed: count(|v| matches!(v, Vote::Failed(_) | Vote::TimedOut(_))),
    }
}

/// Pairs votes with node names, for an error message.
pub(crate) fn named(nodes: &[Node], answers: Vec<Answer>) -> Votes {
    Votes(
        nodes
            .iter()
            .zip(answers)
            .map(|(node, (vote, _))| NodeVote {
                node: node.name.clone(),
                vote,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_of_n() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn decided_as_soon_as_quorum_is_known() {
        let q = Until::Decided { quorum: 2 };
        let (g, h, none) = ((Vote::Granted, 0), (Vote::Held, 0), (Vote::Unanswered, 0));
        assert!(!decided(&[g.clone(), none.clone(), none.clone()], q));
        assert!(decided(&[g.clone(), g.clone(), none.clone()], q));
        assert!(!decided(&[h.clone(), none.clone(), none.clone()], q));
        assert!(decided(&[h.clone(), none.clone(), h.clone()], q));
        assert!(!decided(&[g, none.clone(), none], Until::All));
    }
}
