//! Waking the waiters of a lock when it is released, so that a handoff costs
//! round trips rather than a retry delay.
//!
//! The release script publishes each deleted key on the channel of the same
//! name. A caller that lost an attempt to another holder watches the lock's
//! keys: the engine subscribes to their channels on every node (one
//! subscription per key, however many local waiters) and wakes the waiters
//! on a message, or at once when the release came from this engine. The
//! jittered retry timer stays as the fallback for missed messages and
//! expired locks.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use fred::clients::SubscriberClient;
use fred::interfaces::{EventInterface, PubsubInterface};
use fred::types::Key;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The waiters of one engine.
pub(crate) struct Wakeup {
    watched: Mutex<HashMap<String, Entry>>,
    subscribers: Vec<SubscriberClient>,
}

struct Entry {
    waiting: Arc<Waiting>,
    watchers: usize,
}

/// The waiters of one key.
#[derive(Default)]
struct Waiting {
    /// Bumped on every release: a waiter that saw it change need not sleep.
    releases: AtomicU64,
    notify: Notify,
}

impl Waiting {
    fn wake(&self) {
        self.releases.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }
}

impl Wakeup {
    pub fn new(subscribers: Vec<SubscriberClient>) -> Arc<Wakeup> {
        Arc::new(Wakeup {
            watched: Mutex::new(HashMap::new()),
            subscribers,
        })
    }

    /// Starts one listener per node; abort them when the engine goes.
    pub fn listen(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        self.subscribers
            .iter()
            .map(|subscriber| {
                let (wakeup, mut messages) = (self.clone(), subscriber.message_rx());
                tokio::spawn(async move {
                    loop {
                        match messages.recv().await {
                            Ok(message) => wakeup.wake(&message.channel),
                            // Messages were dropped: wake everyone rather than miss one.
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                wakeup.wake_all()
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        }
                    }
                })
            })
            .collect()
    }

    /// Wakes the waiters of `key`, if any.
    pub fn wake(&self, key: &str) {
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = watched.get(key) {
            entry.waiting.wake();
        }
    }

    /// Wakes the waiters of each of `keys` (on every release: one lock, and
    /// nothing more when nobody waits).
    pub fn wake_keys(&self, keys: &[Key]) {
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if watched.is_empty() {
            return;
        }
        for key in keys.iter().filter_map(Key::as_str) {
            if let Some(entry) = watched.get(key) {
                entry.waiting.wake();
            }
        }
    }

    fn wake_all(&self) {
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        for entry in watched.values() {
            entry.waiting.wake();
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
                self.subscribe(&key);
                Entry {
                    waiting: Arc::default(),
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

    fn subscribe(&self, key: &str) {
        for subscriber in &self.subscribers {
            let (subscriber, key) = (subscriber.clone(), key.to_owned());
            tokio::spawn(async move { subscriber.subscribe(key).await });
        }
    }

    fn unsubscribe(&self, key: &str) {
        for subscriber in &self.subscribers {
            let (subscriber, key) = (subscriber.clone(), key.to_owned());
            tokio::spawn(async move { subscriber.unsubscribe(key).await });
        }
    }
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
