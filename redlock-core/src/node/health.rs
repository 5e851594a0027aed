//! Whether a node's connection can carry a call now.
//!
//! fred reports a closed connection (`is_connected`) only once its first
//! attempt to reconnect begins, 20 to 70 ms later with our policy. A call
//! made in between waits in fred's queue until the client reconnects or the
//! caller's node timeout runs out, however dead the node is: after a node
//! dies, the calls made at once (a failed attempt's release, a holder's)
//! would wait out the timeout. fred announces the closed connection at once
//! on its error channel, in the task that saw it and before it queues the
//! reconnection; so a release first reads that channel, without waiting,
//! and the reconnection channel, so that an error read late, after the
//! client reconnected, does not count. An acquire or extend only looks at
//! what was read (about 200 instructions less): it waits for a quorum, not
//! for every node, and a release follows it.
//!
//! A connection can also go silent without closing: the node is paused, or
//! the network between drops everything. TCP then reports nothing for up
//! to about 15 minutes, and all that while every call to the node would
//! wait out its timeout, and every release the late nodes' grace. So a
//! call that goes unanswered past its timeout sends a probe (see
//! [`Health::suspect`]); while the probe goes unanswered past the engine's
//! connect timeout, the node counts as not connected, and what waits for it
//! stays in its queue. The connection is kept: what is on its way arrives
//! in order once the node answers again (a new connection would carry the
//! calls sent after the ones stuck on the old, which could still arrive
//! later, and an acquire arriving after its release leaves its key until
//! the TTL). This costs one atomic load per call while nodes answer
//! (fred's own detection of unresponsive connections costs every call
//! 4.4 % more instructions, and reconnects).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, EventInterface};
use fred::types::config::Server;
use tokio::sync::broadcast::{error::TryRecvError, Receiver};

/// How long a connection error counts if fred neither reports the
/// connection closed nor announces a reconnection: past its first
/// reconnection delays.
pub(crate) const MARK: Duration = Duration::from_secs(1);

/// The state of one node's connection.
pub(crate) struct Health {
    /// The client's announcements, once it is connected.
    events: Mutex<Option<Events>>,
    /// Where `broken_at` counts from.
    origin: Instant,
    /// When the last connection error was read, in milliseconds since
    /// `origin`, plus one; 0 when there is none to count.
    broken_at: AtomicU64,
    /// Whether a probe of a silent connection is out.
    probing: AtomicBool,
    /// Whether the probe went unanswered past its patience: the connection
    /// is silent until it answers.
    silent: AtomicBool,
}

/// What the client announces about its connection.
struct Events {
    errors: Receiver<(FredError, Option<Server>)>,
    reconnections: Receiver<Server>,
}

impl Health {
    pub fn new() -> Health {
        Health {
            events: Mutex::new(None),
            origin: Instant::now(),
            broken_at: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            silent: AtomicBool::new(false),
        }
    }

    /// A call to the node went unanswered past its timeout. Unless a probe
    /// is out, sends a `PING` behind the calls on their way; if it has no
    /// answer within `patience`, the connection is silent until it has
    /// (or fails, and the client reconnects). A node that is merely slow
    /// answers in time.
    pub fn suspect(self: &Arc<Self>, client: &Client, patience: Duration) {
        // A client that is not connected is reconnecting already.
        if !client.is_connected() || self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (health, client) = (self.clone(), client.clone());
        let mut reconnections = client.reconnect_rx();
        tokio::spawn(async move {
            let mut probe = std::pin::pin!(client.ping::<()>(None));
            let answered = tokio::time::timeout(patience, probe.as_mut()).await;
            if answered.is_err() {
                health.silent.store(true, Ordering::Release);
                // The probe is answered once the node is back; or the
                // connection fails (at the latest after TCP's own timeout)
                // and the client makes a new one.
                tokio::select! {
                    _ = probe => {}
                    _ = reconnections.recv() => {}
                }
                health.silent.store(false, Ordering::Release);
            }
            health.probing.store(false, Ordering::Release);
        });
    }

    /// Whether the connection went silent (see [`Health::suspect`]).
    pub fn is_silent(&self) -> bool {
        self.silent.load(Ordering::Acquire)
    }

    /// Starts reading `client`'s connection errors and reconnections.
    pub fn watch(&self, client: &Client) {
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(Events {
            errors: client.error_rx(),
            reconnections: client.reconnect_rx(),
        });
    }

    /// Whether a call made now on `client` can be answered before the client
    /// reconnects; reading the client's announcements first if `look`.
    pub fn is_up(&self, client: &Client, look: bool) -> bool {
        if !client.is_connected() {
            // fred has taken the error in: from now on its state is the truth.
            self.broken_at.store(0, Ordering::Relaxed);
            return false;
        }
        if self.is_silent() {
            return false;
        }
        if look {
            self.read_events();
        }
        let marked = self.broken_at.load(Ordering::Relaxed);
        marked == 0 || self.now() >= marked.saturating_add(MARK.as_millis() as u64)
    }

    /// Marks the connection broken, or clears the mark, from what the client
    /// announced since the last look.
    fn read_events(&self) {
        if let Some(events) = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let errors = count(&mut events.errors);
            if count(&mut events.reconnections) > 0 {
                // Reconnected since the last look. An error read with it
                // cannot be placed before or after it; fred's state decides.
                self.broken_at.store(0, Ordering::Relaxed);
            } else if errors > 0 {
                self.broken_at.store(self.now(), Ordering::Relaxed);
            }
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX / 2)
            .saturating_add(1)
    }
}

/// Takes every announcement waiting in `events`, and says how many there were.
fn count<T: Clone>(events: &mut Receiver<T>) -> usize {
    let mut seen = 0;
    loop {
        match events.try_recv() {
            Ok(_) | Err(TryRecvError::Lagged(_)) => seen += 1,
            Err(TryRecvError::Empty | TryRecvError::Closed) => return seen,
        }
    }
}
