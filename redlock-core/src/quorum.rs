//! Sending one operation to every node in parallel and counting the votes.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

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
    /// Every node answered or timed out (release: every node must be asked).
    All,
}

/// A node's vote, with the number its operation returned (a fencing token
/// for acquire; 0 when there is none).
pub(crate) type Answer = (Vote, u64);

/// Runs `op` on every node at once, each bounded by `timeout`; answers are in node order.
pub(crate) async fn fan_out<'a, F, Fut>(
    nodes: &'a [Node],
    timeout: Duration,
    until: Until,
    op: F,
) -> Vec<Answer>
where
    F: Fn(&'a Node) -> Fut,
    Fut: Future<Output = NodeResult<Answer>> + 'a,
{
    let mut pending: Vec<Pin<Box<_>>> = nodes
        .iter()
        .map(|node| {
            let call = op(node);
            Box::pin(async move {
                match tokio::time::timeout(timeout, call).await {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(reason)) => (Vote::Failed(reason), 0),
                    Err(_) => (Vote::TimedOut(timeout), 0),
                }
            })
        })
        .collect();
    let mut votes: Vec<Option<Answer>> = vec![None; nodes.len()];
    poll_fn(|cx| {
        for (slot, call) in votes.iter_mut().zip(pending.iter_mut()) {
            if slot.is_none() {
                if let Poll::Ready(vote) = call.as_mut().poll(cx) {
                    *slot = Some(vote);
                }
            }
        }
        if votes.iter().all(Option::is_some) || decided(&votes, until) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    votes
        .into_iter()
        .map(|v| v.unwrap_or((Vote::Unanswered, 0)))
        .collect()
}

fn decided(votes: &[Option<Answer>], until: Until) -> bool {
    let Until::Decided { quorum } = until else {
        return false;
    };
    let granted = votes
        .iter()
        .filter(|v| matches!(v, Some((Vote::Granted, _))))
        .count();
    let refused = votes
        .iter()
        .filter(|v| matches!(v, Some((vote, _)) if *vote != Vote::Granted))
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
        let g = Some((Vote::Granted, 0));
        let h = Some((Vote::Held, 0));
        assert!(!decided(&[g.clone(), None, None], q));
        assert!(decided(&[g.clone(), g.clone(), None], q));
        assert!(!decided(&[h.clone(), None, None], q));
        assert!(decided(&[h.clone(), None, h.clone()], q));
        assert!(!decided(&[g, None, None], Until::All));
    }
}
