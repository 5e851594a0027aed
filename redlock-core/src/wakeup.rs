//! Waking the waiters of a lock when it is released, so that a handoff costs
//! round trips rather than a retry delay.
//!
//! The release script publishes the released value on the channel named
//! after each deleted key. A caller that lost an attempt to another holder
//! watches the lock's keys: the engine subscribes to their channels on every
//! node that is connected, and a node's new connection to every key watched
//! then (one subscription per key, however many local waiters). A release
//! wakes one waiter, the longest waiting, once the lock can be taken: when
//! a quorum of nodes reported it (the messages carry the released value,
//! which tells one release from the next), or when this engine's own release
//! is handed to the nodes (a node runs one connection's calls in order, so
//! the attempt follows the release on every node), whichever comes first.
//! So a handoff costs one attempt, not one per waiter with all but one lost,
//! and the attempt does not race the release on the slower nodes.
//!
//! A caller watches the keys only once the nodes refused it, and nothing
//! released before the watch is in place may be missed: one of this
//! engine's releases in between is seen in a count of its releases by key
//! (see [`Watch::count_from`]), and once the subscription is in place on
//! the nodes (a ping answered after it), one waiter tries again, unless a
//! release was handed on meanwhile: a release a node ran before the
//! subscription sent its message to nobody. The same after a subscriber
//! reconnects. The jittered retry timer stays as the fallback for lost
//! messages and expired locks.
//!
//! Handing its own releases to its own waiters favours this engine: its
//! waiter's attempt reaches the nodes a round trip before another
//! process's waiter hears of the release. So a streak of such handoffs
//! lasts at most [`LOCAL_STREAK`]; then one release goes to the others
//! first: this engine's waiter hears of it from the nodes' messages, as
//! theirs do, and then waits twice the time those took before it tries,
//! so that another process's waiter, if there is one, takes the lock
//! (in an even race, the engine whose subscription is older hears first,
//! and won nearly every time). Without it, an engine whose callers kept
//! the lock busy made another's waiter wait out hundreds of holds: 180 to
//! 1,230 holds of 1 ms in one test. If the messages do not come within
//! [`UNREPORTED`] (a subscriber reconnecting, a message lost), this
//! engine's waiter gets the release anyway, rather than at its retry
//! timer (in two benchmark runs on one host, the busy lock's handoffs
//! fell from about 700 a second to 100 to 160, with a p99 wait of 300 ms,
//! the timer's; they were 755 with the streak's end turned off).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::{Key, MultipleStrings, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

/// How long this engine's waiters may take the lock from one another's
/// releases before a release goes to a race open to other engines'
/// waiters (see the module doc). Far above a handoff (a round trip or two),
/// so that the race costs a busy lock little.
const LOCAL_STREAK: Duration = Duration::from_millis(100);

/// How long a release that goes to the others first waits for the nodes'
/// messages before this engine's waiters get it anyway: they may never
/// come (a subscriber reconnecting, a message lost), and the waiters'
/// retry timers are far longer. Far above a message's delay (a round
/// trip), so that it rarely cuts the others' head start short.
const UNREPORTED: Duration = Duration::from_millis(20);

/// How many counters [`Wakeup::own_releases`] spreads keys over: enough
/// that a busy engine's other locks rarely share one with a waiter's.
const RELEASE_COUNTERS: usize = 64;

/// The waiters of one engine.
pub(crate) struct Wakeup {
    watched: Mutex<HashMap<String, Entry>>,
    /// This engine's releases, counted by key hash, watched or not: a
    /// caller refused by the nodes watches the keys only then, and one of
    /// our releases in between went to nobody (see [`Watch::count_from`]).
    own_releases: [AtomicU64; RELEASE_COUNTERS],
    subscribers: Vec<SubscriberClient>,
    /// How many nodes' messages make a release one a waiter can win.
    quorum: usize,
}

struct Entry {
    waiting: Arc<Waiting>,
    watchers: usize,
}

/// The waiters of one key.
#[derive(Default)]
struct Waiting {
    /// Bumped on every release handed on: a waiter that saw it change need not sleep.
    releases: AtomicU64,
    /// The latest release the nodes reported.
    reported: Mutex<Reported>,
    notify: Notify,
}

/// One release, as reported so far.
#[derive(Default)]
struct Reported {
    /// From [`release_id`].
    id: u64,
    /// How many nodes' messages reported it.
    nodes: usize,
    handed_on: bool,
    /// When this engine's waiters began taking the lock from one another's
    /// releases; `None` once a release went to the nodes' messages.
    streak: Option<Instant>,
    /// When this engine sent the release, if it goes to the others first.
    yielded: Option<Instant>,
}

impl Reported {
    /// Makes `id` the release reported, unless it already is.
    fn track(&mut self, id: u64) {
        if self.id != id {
            self.id = id;
            self.nodes = 0;
            self.handed_on = false;
            self.yielded = None;
        }
    }

    /// The release goes to the waiters, and the streak is over; when this
    /// engine sent it, if it went to the others first.
    fn hand_on(&mut self) -> Option<Instant> {
        self.handed_on = true;
        self.streak = None;
        self.yielded.take()
    }
}

impl Waiting {
    /// A node reports the release `id`: handed on once `quorum` nodes did.
    /// A release of unknown id is handed on at once.
    /// A release this engine sent that goes to the others first is handed
    /// on here too, after their head start.
    fn reported(self: &Arc<Self>, id: Option<u64>, quorum: usize) {
        if let Some(id) = id {
            let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            reported.track(id);
            reported.nodes += 1;
            if reported.handed_on || reported.nodes < quorum {
                return;
            }
            // Every engine's waiters hear of it now: the streak is over.
            if let Some(sent) = reported.hand_on() {
                let head_start = sent.elapsed() * 2;
                let waiting = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(head_start).await;
                    waiting.hand_on();
                });
                return;
            }
        }
        self.hand_on();
    }

    /// This engine's release `id` is about to be handed to the nodes: true
    /// if it goes to this engine's waiter as soon as it is, false if the
    /// streak of such handoffs is over and it goes to the others first.
    /// Decided before the release is sent, so that the nodes' messages find
    /// it decided even when they come before the sender runs again (the
    /// nodes' work can preempt it on a loaded machine): taken for another
    /// engine's release, they ended the streak, a release in three on a
    /// 2-core machine running the nodes, and another engine's waiter
    /// waited out hundreds of holds.
    fn releasing(self: &Arc<Self>, id: Option<u64>) -> bool {
        let Some(id) = id else {
            return true;
        };
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        reported.track(id);
        let now = Instant::now();
        if now - *reported.streak.get_or_insert(now) >= LOCAL_STREAK {
            reported.yielded = Some(now);
            let waiting = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(UNREPORTED).await;
                waiting.unreported(id);
            });
            return false;
        }
        // Not news to the messages.
        reported.handed_on = true;
        true
    }

    /// The release `id`, gone to the others first, was sent [`UNREPORTED`]
    /// ago: handed on now if no quorum of messages reported it meanwhile.
    /// The streak ends as if they had.
    fn unreported(&self, id: u64) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if reported.id != id || reported.handed_on {
            return;
        }
        reported.hand_on();
        drop(reported);
        self.hand_on();
    }

    /// Wakes the longest waiter. One that gives up before it runs passes
    /// the release on (`Notify` forwards it).
    fn hand_on(&self) {
        self.releases.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Wakes every waiter, when releases may have been missed.
    fn wake_every(&self) {
        self.releases.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }
}

/// Tells one release from another: a hash of the released value. `None`
/// for a message without one (not from this version's script).
fn release_id(value: &Value) -> Option<u64> {
    value.as_bytes().filter(|b| !b.is_empty()).map(hash)
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// The waiters this engine's release goes to as soon as it is sent, from
/// [`Wakeup::releasing`].
pub(crate) struct Handoff(Vec<Arc<Waiting>>);

impl Handoff {
    /// The release was handed to the nodes (a node runs one connection's
    /// calls in order, so a woken waiter's attempt follows it everywhere).
    pub fn sent(self) {
        for waiting in self.0 {
            waiting.hand_on();
        }
    }
}

/// What a caller saw of a lock's releases before an attempt, for the count
/// its wait starts from (see [`Watch::count_from`]).
#[derive(Clone, Copy)]
pub(crate) enum Seen {
    /// Its watch's count of releases.
    Watched(u64),
    /// Not watching yet: this engine's own releases of the keys.
    Unwatched(u64),
}

impl Wakeup {
    pub fn new(subscribers: Vec<SubscriberClient>) -> Arc<Wakeup> {
        Arc::new(Wakeup {
            watched: Mutex::new(HashMap::new()),
            own_releases: std::array::from_fn(|_| AtomicU64::new(0)),
            quorum: crate::quorum::majority(subscribers.len()),
            subscribers,
        })
    }

    /// Starts one listener per node, which also subscribes the node's new
    /// connection to every watched key, and pings the connection every
    /// `heartbeat`: the client closes one that does not answer within its
    /// unresponsive timeout (see `node::redis`), which a connection that
    /// only listens would otherwise never find out. Abort them when the
    /// engine goes.
    pub fn listen(self: &Arc<Self>, heartbeat: Duration) -> Vec<JoinHandle<()>> {
        self.subscribers
            .iter()
            .map(|subscriber| {
                let wakeup = self.clone();
                let mut messages = subscriber.message_rx();
                let mut reconnections = subscriber.reconnect_rx();
                let subscriber = subscriber.clone();
                let mut pings = tokio::time::interval(heartbeat);
                pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = pings.tick() => {
                                if subscriber.is_connected() {
                                    let subscriber = subscriber.clone();
                                    tokio::spawn(bounded(async move {
                                        subscriber.ping::<Value>(None).await
                                    }));
                                }
                            }
                            message = messages.recv() => match message {
                                Ok(message) => wakeup.wake(&message.channel, &message.value),
                                // Messages were dropped: wake everyone rather than miss one.
                                Err(RecvError::Lagged(_)) => wakeup.wake_all(),
                                Err(RecvError::Closed) => return,
                            },
                            reconnected = reconnections.recv() => match reconnected {
                                Ok(_) | Err(RecvError::Lagged(_)) => wakeup.resubscribe(&subscriber),
                                Err(RecvError::Closed) => return,
                            },
                        }
                    }
                })
            })
            .collect()
    }

    /// A node's message: `key`, which held `value`, was released there.
    pub fn wake(&self, key: &str, value: &Value) {
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = watched.get(key) {
            entry.waiting.reported(release_id(value), self.quorum);
        }
    }

    /// This engine is about to release `keys`, which held `value`: what it
    /// hands on once the release is sent (on every release from this
    /// engine: one lock, and nothing more when nobody waits). Called before
    /// the release is sent (see [`Waiting::releasing`]).
    pub fn releasing(&self, keys: &[Key], value: &Value) -> Handoff {
        // Counted before the waiters are looked up: a watch set up after
        // that sees the count changed (see `Watch::count_from`).
        for key in keys {
            self.own_release_counter(key.as_bytes())
                .fetch_add(1, Ordering::SeqCst);
        }
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if watched.is_empty() {
            return Handoff(Vec::new());
        }
        let id = release_id(value);
        Handoff(
            keys.iter()
                .filter_map(|key| watched.get(key.as_str()?))
                .filter(|entry| entry.waiting.releasing(id))
                .map(|entry| entry.waiting.clone())
                .collect(),
        )
    }

    /// What a caller with `watch` has seen of the releases of `keys`, before
    /// an attempt at them.
    pub fn seen(&self, watch: Option<&Watch>, keys: &[Key]) -> Seen {
        match watch {
            Some(watch) => Seen::Watched(watch.releases()),
            None => Seen::Unwatched(self.own_releases_of(keys.iter().map(Key::as_bytes))),
        }
    }

    fn own_releases_of<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> u64 {
        keys.fold(0, |sum, key| {
            sum.wrapping_add(self.own_release_counter(key).load(Ordering::SeqCst))
        })
    }

    fn own_release_counter(&self, key: &[u8]) -> &AtomicU64 {
        // The modulo is below RELEASE_COUNTERS, so it fits any usize.
        &self.own_releases[(hash(key) % RELEASE_COUNTERS as u64) as usize]
    }

    fn wake_all(&self) {
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        for entry in watched.values() {
            entry.waiting.wake_every();
        }
    }

    /// True when a caller of this engine is waiting for one of `keys`.
    pub fn is_watched(&self, keys: &[Key]) -> bool {
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        !watched.is_empty()
            && keys
                .iter()
                .any(|key| key.as_str().is_some_and(|key| watched.contains_key(key)))
    }

    /// Watches `keys` until the returned [`Watch`] is dropped.
    pub fn watch(self: &Arc<Self>, keys: &[Key]) -> Watch {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let mut waiting = Vec::with_capacity(keys.len());
        for key in keys {
            let key = key.as_str().unwrap_or_default().to_owned();
            let entry = watched.entry(key.clone()).or_insert_with(|| {
                let waiting = Arc::<Waiting>::default();
                self.subscribe(&key, &waiting);
                Entry {
                    waiting,
                    watchers: 0,
                }
            });
            entry.watchers += 1;
            waiting.push((key, entry.waiting.clone()));
        }
        Watch {
            wakeup: self.clone(),
            waiting,
        }
    }

    fn unwatch(&self, key: &str) {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = watched.get_mut(key) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                watched.remove(key);
                self.unsubscribe(key);
            }
        }
    }

    /// Called under the `watched` lock (see [`send_now`]).
    fn subscribe(&self, key: &str, waiting: &Arc<Waiting>) {
        // No subscription goes out, so none comes into place to hand a
        // release on for.
        if self.connected().next().is_none() {
            return;
        }
        let subscribing = Arc::new(Subscribing::new(waiting));
        for subscriber in self.connected() {
            let (subscriber, key) = (subscriber.clone(), key.to_owned());
            let subscribing = subscribing.clone();
            send_now(async move {
                let _subscribing = subscribing;
                subscribed(&subscriber, key).await
            });
        }
    }

    /// Called under the `watched` lock (see [`send_now`]).
    fn unsubscribe(&self, key: &str) {
        for subscriber in self.connected() {
            let (subscriber, key) = (subscriber.clone(), key.to_owned());
            send_now(async move { subscriber.unsubscribe(key).await });
        }
    }

    /// The subscribers whose connection is up. A subscription change sent
    /// to one that is reconnecting would wait in a task for the node's
    /// return (two per watched key); instead, its new connection is
    /// subscribed to what is watched then (see [`Wakeup::resubscribe`]).
    /// Called under the `watched` lock, as `resubscribe` reads it, so that
    /// a key watched as the node comes back is in one or the other.
    fn connected(&self) -> impl Iterator<Item = &SubscriberClient> {
        self.subscribers.iter().filter(|s| s.is_connected())
    }

    /// Subscribes a node's new connection to every key watched once the
    /// client reports itself connected (it announces the reconnection just
    /// before): a key watched after that subscribes itself.
    fn resubscribe(self: &Arc<Self>, subscriber: &SubscriberClient) {
        let (wakeup, subscriber) = (self.clone(), subscriber.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(SUBSCRIPTION_TIMEOUT, subscriber.wait_for_connect()).await;
            let watched = wakeup.watched.lock().unwrap_or_else(|e| e.into_inner());
            if !watched.is_empty() {
                let keys: Vec<String> = watched.keys().cloned().collect();
                // The messages sent while the connection was down are lost.
                let subscribing: Vec<_> = watched
                    .values()
                    .map(|entry| Subscribing::new(&entry.waiting))
                    .collect();
                send_now(async move {
                    let _subscribing = subscribing;
                    subscribed(&subscriber, keys).await
                });
            }
        });
    }
}

/// Subscribes `subscriber` to `channels`; completes once the node ran it.
/// The client completes a subscription as soon as it is sent, and the node
/// runs a connection's commands in order: its answer to a ping sent next
/// says that the subscription is in place.
async fn subscribed(
    subscriber: &SubscriberClient,
    channels: impl Into<MultipleStrings> + Send,
) -> Result<(), fred::error::Error> {
    subscriber.subscribe(channels).await?;
    subscriber.ping::<Value>(None).await.map(drop)
}

/// A key's subscription on its way to the nodes. A release a node runs
/// before the subscription arrives sends its message to nobody, and the
/// key's waiters, refused while it was held, would wait out their retry
/// timers. So once every node's change is over (answered, or given up:
/// see [`bounded`]) and the last clone of this is dropped, one waiter is
/// handed a release, unless one was handed on meanwhile: it tries again, and wins
/// or now hears of the next release. One attempt per new subscription,
/// not per waiter.
struct Subscribing {
    waiting: Arc<Waiting>,
    /// The key's releases handed on when the subscription was sent.
    releases: u64,
}

impl Subscribing {
    fn new(waiting: &Arc<Waiting>) -> Subscribing {
        Subscribing {
            waiting: waiting.clone(),
            releases: waiting.releases.load(Ordering::Acquire),
        }
    }
}

impl Drop for Subscribing {
    fn drop(&mut self) {
        if self.waiting.releases.load(Ordering::Acquire) == self.releases {
            self.waiting.hand_on();
        }
    }
}

/// Hands a subscription change to its connection now, and leaves its
/// answer to a task, bounded. Called under the `watched` lock, so that the
/// changes of a key reach each node in the order they were made: the first
/// poll of a fred command sends it. Each in a task of its own, two changes
/// ran in either order, and a key left and watched again at once could end
/// unsubscribed on a node, its waiters left to their timers (5 of 300 in a
/// probe on a loaded machine).
fn send_now<T: Send + 'static>(change: impl Future<Output = T> + Send + 'static) {
    let mut change = Box::pin(change);
    let waker = Waker::from(Arc::new(Unwoken));
    // The change alone, without its bound: a timer polled here could find
    // the runtime shutting down (a waiter dropped with it), and panic.
    if change
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_pending()
    {
        // The task polls it again, with a waker of its own.
        tokio::spawn(bounded(change));
    }
}

/// The waker of a change's first poll, made before its task: its task
/// polls it again.
struct Unwoken;

impl Wake for Unwoken {
    fn wake(self: Arc<Self>) {}
}

/// How long a subscription change may wait for its node (one that stops
/// answering, or dies as the change is sent).
const SUBSCRIPTION_TIMEOUT: Duration = Duration::from_secs(5);

/// `change`, given up after [`SUBSCRIPTION_TIMEOUT`].
async fn bounded<T>(change: impl Future<Output = T>) {
    let _ = tokio::time::timeout(SUBSCRIPTION_TIMEOUT, change).await;
}

/// A waiter's interest in some keys.
pub(crate) struct Watch {
    wakeup: Arc<Wakeup>,
    waiting: Vec<(String, Arc<Waiting>)>,
}

impl Watch {
    /// A number that changes whenever one of the keys is released.
    pub fn releases(&self) -> u64 {
        self.waiting
            .iter()
            .map(|(_, w)| w.releases.load(Ordering::Acquire))
            .fold(0, u64::wrapping_add)
    }

    /// The count of releases a wait after an attempt the nodes refused
    /// starts from, given what the caller had `seen` before it. For a watch
    /// set up after the attempt, one behind [`releases`](Watch::releases)
    /// if this engine released one of the keys since, so that
    /// [`released_since`](Watch::released_since) completes at once: that
    /// release may have come after the refusal and before the watch, and
    /// gone to nobody. The caller waited out its retry timer, and every
    /// caller of this engine queued behind it (a test's three callers
    /// stopped for 30 s after one hold).
    pub fn count_from(&self, seen: Seen) -> u64 {
        match seen {
            Seen::Watched(count) => count,
            Seen::Unwatched(own_releases) => {
                // Read before the own releases: one counted after this is
                // handed on to the watch, and changes its count.
                let count = self.releases();
                let keys = self.waiting.iter().map(|(key, _)| key.as_bytes());
                if self.wakeup.own_releases_of(keys) == own_releases {
                    count
                } else {
                    count.wrapping_sub(1)
                }
            }
        }
    }

    /// Completes once a key was released after [`releases`](Watch::releases) returned `seen`.
    pub async fn released_since(&self, seen: u64) {
        let mut notified: Vec<Pin<Box<_>>> = self
            .waiting
            .iter()
            .map(|(_, w)| Box::pin(w.notify.notified()))
            .collect();
        for n in &mut notified {
            n.as_mut().enable();
        }
        if self.releases() != seen {
            return;
        }
        poll_fn(|cx| {
            if notified.iter_mut().any(|n| n.as_mut().poll(cx).is_ready()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for (key, _) in &self.waiting {
            self.wakeup.unwatch(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handed_on(waiting: &Waiting) -> u64 {
        waiting.releases.load(Ordering::Acquire)
    }

    /// This engine releases `id`, and sends the release.
    fn release(waiting: &Arc<Waiting>, id: Option<u64>) {
        if waiting.releasing(id) {
            waiting.hand_on();
        }
    }

    #[test]
    fn a_release_is_handed_on_once_when_a_quorum_reported_it() {
        let waiting = Arc::new(Waiting::default());
        let (x, y) = (Some(1), Some(2));
        waiting.reported(x, 2);
        assert_eq!(handed_on(&waiting), 0, "one node of three is not a quorum");
        waiting.reported(x, 2);
        assert_eq!(handed_on(&waiting), 1);
        waiting.reported(x, 2);
        assert_eq!(handed_on(&waiting), 1, "the third node is news to nobody");
        release(&waiting, y);
        assert_eq!(handed_on(&waiting), 2, "our own release, once sent");
        waiting.reported(y, 2);
        waiting.reported(y, 2);
        assert_eq!(handed_on(&waiting), 2);
        waiting.reported(None, 2);
        assert_eq!(
            handed_on(&waiting),
            3,
            "a release without a value is handed on at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_streak_of_own_handoffs_ends_with_a_release_the_others_get_first() {
        let waiting = Arc::new(Waiting::default());
        let mut last = 0;
        let mut own_release = || {
            last += 1;
            release(&waiting, Some(last));
            handed_on(&waiting)
        };
        assert_eq!(own_release(), 1, "handed on as it goes to the nodes");
        tokio::time::advance(LOCAL_STREAK / 2).await;
        assert_eq!(own_release(), 2);
        tokio::time::advance(LOCAL_STREAK / 2).await;
        assert_eq!(own_release(), 2, "the streak is over: not handed on yet");

        // The nodes' messages come a millisecond later: the others' waiters
        // try now, and this engine's 2 ms later.
        tokio::time::advance(Duration::from_millis(1)).await;
        waiting.reported(Some(last), 2);
        waiting.reported(Some(last), 2);
        tokio::time::sleep(Duration::from_micros(1_990)).await;
        assert_eq!(handed_on(&waiting), 2, "still the others' head start");
        tokio::time::sleep(Duration::from_micros(20)).await;
        assert_eq!(handed_on(&waiting), 3);

        release(&waiting, Some(last + 1));
        assert_eq!(handed_on(&waiting), 4, "a new streak begins");
    }

    #[tokio::test(start_paused = true)]
    async fn messages_before_the_sender_runs_again_do_not_end_the_streak() {
        let waiting = Arc::new(Waiting::default());
        for id in 1..=10 {
            assert!(waiting.releasing(Some(id)), "release {id} is the streak's");
            // The nodes ran the release and their messages came in before
            // the sender handed it on.
            waiting.reported(Some(id), 2);
            waiting.reported(Some(id), 2);
            assert_eq!(handed_on(&waiting), id - 1, "the messages are not news");
            waiting.hand_on();
            tokio::time::advance(LOCAL_STREAK / 10).await;
        }
        assert!(
            !waiting.releasing(Some(11)),
            "the streak is over, however early the messages came"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_gone_to_the_others_is_handed_on_without_messages_after_a_bound() {
        let waiting = Arc::new(Waiting::default());
        release(&waiting, Some(1));
        tokio::time::advance(LOCAL_STREAK).await;
        release(&waiting, Some(2));
        assert_eq!(
            handed_on(&waiting),
            1,
            "the streak is over: not handed on yet"
        );

        // No node's message comes.
        tokio::time::sleep(UNREPORTED - Duration::from_micros(10)).await;
        assert_eq!(handed_on(&waiting), 1, "the messages still have time");
        tokio::time::sleep(Duration::from_micros(20)).await;
        assert_eq!(handed_on(&waiting), 2, "handed on without them");

        // Late messages are news to nobody; the streak began anew.
        waiting.reported(Some(2), 1);
        assert_eq!(handed_on(&waiting), 2);
        release(&waiting, Some(3));
        assert_eq!(handed_on(&waiting), 3, "a new streak: handed on at once");
        tokio::time::sleep(UNREPORTED * 2).await;
        assert_eq!(handed_on(&waiting), 3, "and only once");
    }

    /// Whether a wait from `count` is over at once.
    async fn over_at_once(watch: &Watch, count: u64) -> bool {
        tokio::time::timeout(Duration::ZERO, watch.released_since(count))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn an_own_release_between_a_refusal_and_the_watch_ends_the_wait_at_once() {
        let wakeup = Wakeup::new(Vec::new());
        let keys = [Key::from("k")];
        let value = Value::from("0123456789abcdef");

        // Refused, and watching before any release: the wait goes on.
        let seen = wakeup.seen(None, &keys);
        let watch = wakeup.watch(&keys);
        let count = watch.count_from(seen);
        assert!(!over_at_once(&watch, count).await);
        drop(watch);

        // The holder, of this engine, released as the caller was refused:
        // nobody watched, so nobody was handed the release.
        let seen = wakeup.seen(None, &keys);
        wakeup.releasing(&keys, &value).sent();
        let watch = wakeup.watch(&keys);
        let count = watch.count_from(seen);
        assert!(
            over_at_once(&watch, count).await,
            "the release was missed: the caller waits out its retry timer"
        );

        // Once watching, the watch's own count is what was seen.
        let seen = wakeup.seen(Some(&watch), &keys);
        let count = watch.count_from(seen);
        assert!(!over_at_once(&watch, count).await);
        wakeup
            .releasing(&keys, &Value::from("fedcba9876543210"))
            .sent();
        assert!(over_at_once(&watch, count).await);
    }

    #[tokio::test]
    async fn a_change_is_sent_before_send_now_returns_and_finished_by_a_task() {
        let (sent, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(Notify::new()));
        let change = {
            let (sent, answered) = (sent.clone(), answered.clone());
            async move {
                sent.fetch_add(1, Ordering::SeqCst);
                // The command's answer, which comes later.
                tokio::task::yield_now().await;
                answered.notify_one();
            }
        };
        send_now(change);
        assert_eq!(sent.load(Ordering::SeqCst), 1, "in the caller, in order");
        answered.notified().await;
    }

    #[test]
    fn release_ids_tell_values_apart_and_ignore_empty_messages() {
        let a = release_id(&Value::from("0123456789abcdef0123456789abcdef"));
        let b = release_id(&Value::from("fedcba9876543210fedcba9876543210"));
        assert!(a.is_some() && b.is_some() && a != b);
        assert_eq!(release_id(&Value::from("")), None);
    }
}
