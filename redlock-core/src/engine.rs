//! The engine: the Redlock algorithm over the configured nodes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::builder::RedlockBuilder;
use crate::closing::Closing;
use crate::context::LockContext;
use crate::error::{Error, Result, Vote};
use crate::keepalive::{self, KeepAlive};
use crate::lock::{Held, Lock};
use crate::node::{needs_a_fix, Node, NodeCall};
use crate::options::{IsolateOptions, LockOptions, Settings};
use crate::quorum::{self, fan_out, Until};
use crate::resource::LockKeys;
use crate::wakeup::{Wakeup, Watch};
use crate::{level, resource, value};

/// Shared by an engine, its clones and every lock it hands out.
pub(crate) struct Inner {
    pub nodes: Vec<Node>,
    pub quorum: usize,
    pub app: String,
    pub defaults: LockOptions,
    /// `defaults`, resolved once: the settings of a call without options.
    pub default_settings: Settings,
    /// The key prefix of the default instance.
    pub default_prefix: String,
    pub warnings: Vec<String>,
    pub wakeup: Arc<Wakeup>,
    /// Extends the locks whose functions run.
    pub keep_alive: Arc<KeepAlive>,
    /// The release-notification listeners, one per node.
    pub listeners: Vec<tokio::task::JoinHandle<()>>,
    /// Whether the engine is closed, and which acquires and releases are under way.
    pub closing: Arc<Closing>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
        self.keep_alive.stop();
        // Close the connections of an engine nobody uses any more.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for node in std::mem::take(&mut self.nodes) {
            runtime.spawn(async move { node.quit().await });
        }
    }
}

/// A distributed lock engine over N independent Redis nodes. Cheap to clone.
///
/// ```no_run
/// use std::time::Duration;
/// use redlock_core::{LockOptions, Redlock};
///
/// # async fn demo() -> Result<(), redlock_core::Error> {
/// let engine = Redlock::builder()
///     .app("shop")
///     .nodes(["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"])
///     .build()
///     .await?;
/// let total = engine.lock("cart-42", |_ctx| async { 1 + 1 }).await?;
/// let opts = LockOptions::default().ttl(Duration::from_secs(5)).wait(Duration::from_secs(2));
/// let lock = engine.acquire(&["a", "b"], opts).await?;
/// lock.extend(Duration::from_secs(5)).await?;
/// lock.release().await?;
/// # let _ = total; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Redlock {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Redlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redlock")
            .field("app", &self.inner.app)
            .field("nodes", &self.nodes().collect::<Vec<_>>())
            .field("quorum", &self.inner.quorum)
            .finish()
    }
}

impl Redlock {
    /// Starts configuring an engine.
    pub fn builder() -> RedlockBuilder {
        RedlockBuilder::default()
    }

    pub(crate) fn from_inner(inner: Inner) -> Redlock {
        Redlock {
            inner: Arc::new(inner),
        }
    }

    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Runs `f` while holding `resource`, with the engine's default options.
    ///
    /// The lock is extended in the background while `f` runs, and released
    /// when `f` ends, returns an error value, or panics. If the lock is lost
    /// meanwhile, `f`'s future is dropped and [`Error::LockLost`] returned
    /// (unless [`OnLoss::Continue`](crate::OnLoss::Continue) is set).
    pub async fn lock<F, Fut, T>(&self, resource: &str, f: F) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        self.lock_with(resource, LockOptions::default(), f).await
    }

    /// [`lock`](Redlock::lock) with per-call options.
    pub async fn lock_with<F, Fut, T>(
        &self,
        resource: &str,
        options: LockOptions,
        f: F,
    ) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        let lock = self.acquire(&[resource], options).await?;
        run_locked(lock, f).await
    }

    /// [`lock`](Redlock::lock), with `f` run one data-source level up
    /// ([`current_level`](crate::current_level) + 1).
    ///
    /// Code that picks its connection pool by level (see [`LevelPools`](crate::LevelPools))
    /// then uses a pool of its own inside the lock, so a caller that holds a
    /// connection of the lower level while waiting for this lock can never
    /// starve the holder of connections.
    pub async fn lock_isolate<F, Fut, T>(&self, resource: &str, f: F) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        self.lock_isolate_with(resource, IsolateOptions::default(), f)
            .await
    }

    /// [`lock_isolate`](Redlock::lock_isolate) with per-call options, and optionally an explicit level.
    pub async fn lock_isolate_with<F, Fut, T>(
        &self,
        resource: &str,
        options: IsolateOptions,
        f: F,
    ) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        let level = match options.level {
            Some(level) => level,
            None => level::next_level()?,
        };
        self.lock_with(resource, options.lock, |ctx| level::at_level(level, f(ctx)))
            .await
    }

    /// Acquires all `resources` at once (all or nothing) and returns the guard.
    pub async fn acquire(&self, resources: &[&str], options: LockOptions) -> Result<Lock> {
        let inner = &self.inner;
        let (settings, prefix) = if options.is_unset() {
            let prefix = std::borrow::Cow::Borrowed(inner.default_prefix.as_str());
            (inner.default_settings.clone(), prefix)
        } else {
            let settings = options.or(&inner.defaults).resolve()?;
            let prefix = if settings.instance == inner.default_settings.instance {
                std::borrow::Cow::Borrowed(inner.default_prefix.as_str())
            } else {
                std::borrow::Cow::Owned(resource::key_prefix(&inner.app, &settings.instance))
            };
            (settings, prefix)
        };
        let keys = LockKeys::new(&prefix, resources, settings.fencing)?;
        acquire(&self.inner, keys, settings).await
    }

    /// The Redis key of `resource` under `instance` (default `~`):
    /// `redlock_{app}:{instance}:{resource}`, the braces around the app name
    /// written out (a Redis Cluster hash tag), e.g. `redlock_{shop}:~:user-42`.
    pub fn key(&self, resource: &str, instance: Option<&str>) -> Result<String> {
        let instance = instance.unwrap_or(crate::options::DEFAULT_INSTANCE);
        resource::check_segment("instance", instance)?;
        let prefix = resource::key_prefix(&self.inner.app, instance);
        let keys = LockKeys::new(&prefix, &[resource], false)?;
        Ok(String::from_utf8_lossy(keys.locks()[0].as_bytes()).into_owned())
    }

    /// How many nodes must agree: N/2 + 1.
    pub fn quorum(&self) -> usize {
        self.inner.quorum
    }

    /// The nodes, as configured (passwords masked).
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.inner.nodes.iter().map(|n| n.name.as_str())
    }

    /// The application name in every key.
    pub fn app(&self) -> &str {
        &self.inner.app
    }

    /// Configuration warnings found when the engine was built (e.g. an even node count).
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    /// Closes the engine and every clone of it, for a process that shuts
    /// down: call it before the runtime ends, once the tasks that lock have
    /// ended or been cancelled.
    ///
    /// From the call on, an acquire or lock call fails with
    /// [`Error::Closed`], and so do the ones waiting for a lock. The call
    /// completes once the acquires and releases under way have finished
    /// (each within its node timeout), among them the releases of guards
    /// dropped and of lock calls cancelled, which run in tasks of their
    /// own: without it, a process that exits before they run leaves its
    /// locks held until their TTL. Then it closes the connections to the
    /// nodes.
    ///
    /// A lock still held then is not released (its function may still be
    /// running): its keys expire at their TTL, and a lock call whose
    /// function still runs loses it when its extension fails. Calling it
    /// again does nothing more.
    pub async fn close(&self) {
        let inner = &self.inner;
        inner.closing.close().await;
        // Each node's two steps are bounded by its timeout.
        let bound = inner.default_settings.node_timeout;
        fan_out(
            &inner.nodes,
            bound * 2,
            Until::All,
            |node| {
                Box::pin(async move {
                    node.close(bound).await;
                    Ok(1)
                })
            },
            quorum::any_answer,
        )
        .await;
    }

    /// Whether [`close`](Redlock::close) was called on this engine or a clone of it.
    pub fn is_closed(&self) -> bool {
        self.inner.closing.is_closed()
    }
}

/// The Redlock acquisition loop: attempts until a quorum grants a lock with
/// positive validity, the wait bound passes, the nodes stay unreachable, or
/// too many of them answer with an error that needs a fix.
async fn acquire(engine: &Arc<Inner>, keys: LockKeys, settings: Settings) -> Result<Lock> {
    let _busy = engine.closing.enter().ok_or(Error::Closed)?;
    let nodes = &engine.nodes;
    let started = Instant::now();
    let give_up_at = settings.wait.and_then(|wait| started.checked_add(wait));
    let mut unreachable_since: Option<Instant> = None;
    let mut attempts = 0u32;
    // Set up after the first attempt lost to another holder.
    let mut watch: Option<Watch> = None;
    // Callers of this engine already waiting go first: a caller that just
    // released the lock would otherwise win every race against the waiters
    // it woke, and starve them.
    if engine.wakeup.is_watched(keys.locks()) {
        let queued = watch.insert(engine.wakeup.watch(keys.locks()));
        let seen = queued.releases();
        let at = Instant::now() + retry_pause(&settings);
        pause(engine, at, queued.released_since(seen)).await?;
    }
    loop {
        attempts += 1;
        let seen = engine.wakeup.seen(watch.as_ref(), keys.locks());
        let attempt_start = Instant::now();
        let value = value::fresh();
        let ttl_ms = settings.lease.ttl_ms;
        let votes = fan_out(
            nodes,
            settings.node_timeout,
            Until::Decided {
                quorum: engine.quorum,
            },
            |node| node.acquire(&keys, &value, ttl_ms),
            // A token, or -1 when another holds it.
            |token| match u64::try_from(token) {
                Ok(token) => (Vote::Granted, token),
                Err(_) => (Vote::Held, 0),
            },
        )
        .await;
        let tally = quorum::tally(&votes);
        let token = if tally.granted >= engine.quorum {
            settle_token(engine, &keys, &votes, settings.node_timeout).await
        } else {
            None
        };
        // Validity counts from the start of this attempt, on the monotonic clock.
        // A quorum that answered too late for any validity is not a lock.
        let valid = settings.lease.validity(attempt_start.elapsed()).is_some();
        if let (Some(token), true) = (token, valid) {
            let deadline = attempt_start + settings.lease.ttl - settings.lease.drift;
            let held = Held::new(engine.clone(), keys, value, settings, token, deadline);
            let lock = Lock::new(held);
            // Once the engine closes, it hands out no more locks.
            if engine.closing.is_closed() {
                let _ = lock.release().await;
                return Err(Error::Closed);
            }
            return Ok(lock);
        }
        // A failed attempt leaves nothing behind: every node that may hold our
        // value (granted, failed, timed out, not awaited) is told to drop it.
        if votes.iter().any(|(v, _)| *v != Vote::Held) {
            release_attempt(nodes, &votes, &keys, &value, settings.node_timeout).await;
        }

        let now = Instant::now();
        // Contention, unless so many nodes failed that no quorum was possible.
        let reachable = tally.failed <= nodes.len() - engine.quorum;
        if reachable {
            unreachable_since = None;
        }
        let unreachable_for = now - *unreachable_since.get_or_insert(attempt_start);
        let out_of_time = give_up_at.is_some_and(|at| now >= at);
        let unreachable_too_long =
            !reachable && give_up_at.is_none() && unreachable_for >= settings.lease.ttl;
        // Errors that no retry cures, on too many nodes for a quorum: the
        // caller learns what to fix now, not after a TTL of attempts.
        let incurable = votes
            .iter()
            .filter(|(v, _)| matches!(v, Vote::Failed(reason) if needs_a_fix(reason)))
            .count();
        let needs_fixing = incurable > nodes.len() - engine.quorum;
        if out_of_time || unreachable_too_long || needs_fixing {
            let votes = quorum::named(nodes, votes);
            return Err(if reachable {
                Error::NotAcquired {
                    resources: keys.resources(),
                    waited: now - started,
                    attempts,
                    votes,
                }
            } else {
                Error::QuorumUnreachable {
                    resources: keys.resources(),
                    quorum: engine.quorum,
                    nodes: nodes.len(),
                    answered: tally.answered,
                    votes,
                }
            });
        }
        let cap = |at: Instant| give_up_at.map_or(at, |limit| at.min(limit));
        if tally.granted == 0 && reachable {
            // Another holder has it (a node down does not change that):
            // retry when it is released, or at the jittered timer if that
            // news is lost (or the lock expires).
            let watch = watch.get_or_insert_with(|| engine.wakeup.watch(keys.locks()));
            let at = cap(now + retry_pause(&settings));
            pause(engine, at, watch.released_since(watch.count_from(seen))).await?;
        } else if reachable {
            // A split vote: contenders took a share each. Back off for a
            // random few round trips, so the next race has a winner.
            let round_trip = now - attempt_start;
            let backoff = Duration::from_nanos(value::jitter_nanos(
                u64::try_from((round_trip * 2).min(settings.retry_delay).as_nanos()).unwrap_or(0),
            ));
            pause(engine, cap(now + backoff), std::future::pending()).await?;
        } else {
            // Too many nodes failed for a quorum: retry at the timer, or as
            // soon as one of the failed nodes reconnects (a waiter whose
            // retry delay is long, counting on release messages, would
            // otherwise miss a free lock for that long). A node that failed
            // for another reason does not reconnect, so nothing spins.
            let at = cap(now + retry_pause(&settings));
            let mut back: Vec<_> = nodes
                .iter()
                .zip(&votes)
                .filter(|(_, (vote, _))| !vote.is_answer() && *vote != Vote::Unanswered)
                .filter_map(|(node, _)| node.reconnection())
                .collect();
            let any_back = std::future::poll_fn(move |cx| {
                match back
                    .iter_mut()
                    .any(|node| node.as_mut().poll(cx).is_ready())
                {
                    true => std::task::Poll::Ready(()),
                    false => std::task::Poll::Pending,
                }
            });
            pause(engine, at, any_back).await?;
        }
    }
}

/// Waits until `at`, or until `woken` completes; fails with
/// [`Error::Closed`] as soon as the engine closes.
async fn pause(engine: &Inner, at: Instant, woken: impl Future<Output = ()>) -> Result<()> {
    tokio::select! {
        () = tokio::time::sleep_until(at) => Ok(()),
        () = woken => Ok(()),
        () = engine.closing.closed() => Err(Error::Closed),
    }
}

/// Best-effort release of one failed attempt's value on every node that
/// may hold it: not on those that said another holds the lock (with one
/// node down, every attempt of a waiter fails, and the nodes that refused
/// it are most of the others).
async fn release_attempt(
    nodes: &[Node],
    votes: &[quorum::Answer],
    keys: &LockKeys,
    value: &fred::types::Value,
    timeout: Duration,
) {
    let mut votes = votes.iter();
    fan_out(
        nodes,
        timeout,
        Until::AllButLate {
            quorum: quorum::majority(nodes.len()),
        },
        |node| match votes.next() {
            Some((Vote::Held, _)) => NodeCall::answered(0),
            _ => node.release(keys, value, false),
        },
        quorum::any_answer,
    )
    .await;
}

/// The fencing token of a granted attempt: the highest token among the
/// granting nodes. When they all drew it, a majority already holds it;
/// otherwise it is written back, and must reach a quorum *of the granting
/// nodes* before the lock is handed out. A later holder's quorum shares
/// one of those, where it could take the key only once this lock's was
/// gone, so it draws there after the write-back. A node that did not grant
/// this lock counts for nothing: the later holder may have drawn its token
/// there already (`fencing::a_written_back_token_reaches_a_quorum_of_the_granting_nodes`).
async fn settle_token(
    engine: &Inner,
    keys: &LockKeys,
    votes: &[quorum::Answer],
    timeout: Duration,
) -> Option<u64> {
    let mut granted = votes.iter().filter(|(vote, _)| *vote == Vote::Granted);
    let token = granted.clone().map(|(_, token)| *token).max().unwrap_or(0);
    if keys.counters().is_empty() || granted.all(|(_, t)| *t == token) {
        return Some(token);
    }
    let mut votes = votes.iter();
    let written = fan_out(
        &engine.nodes,
        timeout,
        Until::Decided {
            quorum: engine.quorum,
        },
        |node| match votes.next() {
            Some((Vote::Granted, _)) => node.fence(keys, token),
            _ => NodeCall::answered(NOT_GRANTING),
        },
        |answer| match answer {
            NOT_GRANTING => (Vote::Held, 0),
            _ => (Vote::Granted, 0),
        },
    )
    .await;
    (quorum::tally(&written).granted >= engine.quorum).then_some(token)
}

/// What [`settle_token`] counts as a node's refusal of the write-back: it
/// did not grant the lock (a fence answers 1).
const NOT_GRANTING: i64 = -1;

/// The retry delay, plus or minus up to the jitter.
fn retry_pause(settings: &Settings) -> Duration {
    let jitter = u64::try_from(settings.retry_jitter.as_nanos()).unwrap_or(u64::MAX / 4);
    let offset = value::jitter_nanos(jitter);
    (settings.retry_delay + Duration::from_nanos(offset)).saturating_sub(settings.retry_jitter)
}

/// Runs `f` under `lock`, extending it in the background, then releases it.
async fn run_locked<F, Fut, T>(lock: Lock, f: F) -> Result<T>
where
    F: FnOnce(LockContext) -> Fut,
    Fut: Future<Output = T>,
{
    let held = lock.held().clone();
    let work = f(lock.context());
    let outcome = tokio::select! {
        biased;
        value = work => Ok(value),
        () = keepalive::keep(&held) => Err(Error::LockLost {
            resources: held.resources().to_vec(),
            reason: "its validity ran out before an extension succeeded".to_owned(),
        }),
    };
    // A failed release is not the caller's loss: the keys expire at their TTL.
    let _ = lock.release().await;
    outcome
}
