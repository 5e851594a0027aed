//! Coalescing the operations waiting for one Redis node into one script call.
//!
//! A caller that finds no call in flight becomes the leader: it sends its
//! operation as a batch of its own (nothing else is queued while the queue
//! is idle; an unfenced acquire of one resource then goes as a plain `SET`,
//! see [`Link::set_nx_get`]) and reads the reply itself, with no task hop
//! and no channel on the uncontended path. Operations queued meanwhile form the next batches,
//! sent by a task: at most two calls are in flight, so that the server runs
//! one while the client reads the other's answers, and while both are out
//! each batch takes half of what waits (at least 32), so the two stay
//! even. A batch is handed to the connection as it is taken, and Redis runs
//! one connection's calls in order, so a release queued after an acquire
//! always runs after it (a leader leads only with nothing queued). That
//! holds after the node lost the script too (a restart): the calls on
//! their way all fail, and only releases and fences are sent again (see
//! [`Link::call`]). An
//! operation is on its way once queued: a caller that stops waiting
//! (timeout, quorum already decided) cancels nothing. A leader dropped
//! while its acquire or extend is out, the usual fate of the last node's
//! call when a quorum answered first, leaves the call for the next caller
//! to finish before its own; anything else a dropped leader started goes
//! to a task, with what is queued behind it.
//!
//! From the moment the client announces a connection error until it has
//! reconnected, what is queued stays here rather than in the client's own
//! queue, which has no bound, sends what it holds late, and drops it after
//! about 10 s (a release among it is lost); it goes out once the client is
//! back. What waits is bounded (the engine's `node_backlog`), so a node
//! that is down or stalled under load costs bounded memory. At the bound, a
//! new acquire or extend fails at once (the node could not answer it in
//! time), and a new release or fence takes the place of the oldest
//! operation waiting, which fails: the oldest are the acquires their
//! callers gave up on, and the releases whose keys expire first.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{KeysInterface, LuaInterface};
use fred::types::scripts::Script;
use fred::types::{Expiration, Key, SetOptions, Value};
use tokio::sync::{oneshot, Notify};

use super::health::{Health, MARK};
use super::NodeResult;
use crate::resource::LockKeys;

/// At most this many operations per script call, so one call never holds
/// the server for long.
const MAX_BATCH: usize = 256;

/// How long a call made by a task waits for its answer before it fails and
/// the queue goes on (callers have given up long before: this only unblocks
/// the queue). A leader's own call needs no timer: its caller bounds it, and
/// if the caller gives up, the call is finished by a task, bounded.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many calls in flight per node: while the server runs one,
/// the next is on its way, so that neither the client nor the server waits
/// for the other under load.
const MAX_CALLS: u8 = 2;

/// While the other call is out, a batch takes half of what waits, but at
/// least this many: below it, a second call costs the server more than the
/// overlap gains (measured with 64 tasks on one node: halves down to 16
/// operations ran at 0.85-0.92 of the floor on the current-thread runtime,
/// halves of at least 32 at 1.04-1.10).
const MIN_HALF: usize = 32;

/// An operation of the batch script, on a lock's keys (shared, not copied).
pub(crate) enum Op {
    /// Takes the lock keys and draws a fencing token from the counters.
    Acquire {
        keys: LockKeys,
        value: Value,
        ttl_ms: u64,
    },
    /// Resets the TTL of the lock keys.
    Extend {
        keys: LockKeys,
        value: Value,
        ttl_ms: u64,
    },
    /// Deletes the lock keys that hold `value`.
    Release {
        keys: LockKeys,
        value: Value,
        announce: bool,
    },
    /// Raises the counters to `token`.
    Fence { keys: LockKeys, token: u64 },
}

impl Op {
    /// Whether the operation must run even when its caller stopped waiting,
    /// or the node is reconnecting: it undoes or completes an earlier one.
    pub fn must_run(&self) -> bool {
        matches!(self, Op::Release { .. } | Op::Fence { .. })
    }

    /// Whether the operation takes a lock (the rejoin gate's concern).
    fn acquires(&self) -> bool {
        matches!(self, Op::Acquire { .. })
    }

    /// The keys the script gets for this operation.
    fn keys(&self) -> &[Key] {
        match self {
            Op::Acquire { keys, .. } => keys.all(),
            Op::Extend { keys, .. } | Op::Release { keys, .. } => keys.locks(),
            Op::Fence { keys, .. } => keys.counters(),
        }
    }

    /// The key, value and TTL of an acquire of one resource without
    /// fencing: sent alone, it is one `SET … NX GET` rather than a script
    /// call (see [`Link::set_nx_get`]).
    fn plain_acquire(&self) -> Option<(&Key, &Value, u64)> {
        match self {
            Op::Acquire {
                keys,
                value,
                ttl_ms,
            } => match keys.all() {
                [key] => Some((key, value, *ttl_ms)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the operation, sent alone, goes bare (no head): the usual
    /// acquire or release of one resource, which the script tells by its
    /// shape (see `scripts`). Each script argument costs the server about
    /// 1,700 instructions.
    fn goes_bare(&self) -> bool {
        match self {
            Op::Acquire { keys, .. }
            | Op::Release {
                keys,
                announce: true,
                ..
            } => keys.lock_count() == 1,
            _ => false,
        }
    }

    /// Appends the operation's `ARGV` part: its head unless `bare`, then its
    /// arguments (see `scripts`).
    fn push_args(&self, args: &mut Vec<Value>, bare: bool) {
        if !bare {
            args.push(self.head());
        }
        match self {
            Op::Acquire { value, ttl_ms, .. } | Op::Extend { value, ttl_ms, .. } => {
                args.extend([value.clone(), integer(*ttl_ms)])
            }
            Op::Release { value, .. } => args.push(value.clone()),
            Op::Fence { token, .. } => args.push(integer(*token)),
        }
    }

    /// The operation's code and number of resources, e.g. `T1`. The heads
    /// of one resource, the usual lock, are static text: no formatting.
    fn head(&self) -> Value {
        let (one, resources) = match self {
            Op::Acquire { keys, .. } if keys.counters().is_empty() => ("A1", keys.lock_count()),
            Op::Acquire { keys, .. } => ("T1", keys.lock_count()),
            Op::Extend { keys, .. } => ("E1", keys.lock_count()),
            Op::Release {
                keys,
                announce: true,
                ..
            } => ("R1", keys.lock_count()),
            Op::Release { keys, .. } => ("D1", keys.lock_count()),
            Op::Fence { keys, .. } => ("F1", keys.counters().len()),
        };
        match resources {
            1 => Value::from_static_str(one),
            _ => Value::from(format!("{}{resources}", &one[..1])),
        }
    }
}

/// A TTL or a token as a script argument.
fn integer(n: u64) -> Value {
    Value::Integer(signed(n))
}

/// A TTL or a token as Redis takes it (both far below `i64::MAX`).
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The rejoin gate (see `scripts`): every call that acquires opens with
/// it, so that a node that lost its keys grants no lock for `delay_ms`.
#[derive(Clone, Debug)]
pub(crate) struct Gate {
    /// `rejoin` and `warming`.
    keys: [Key; 2],
    /// `J<delay_ms>`.
    head: Value,
}

impl Gate {
    /// The gate of `app`'s locks, for a delay of `delay_ms`.
    pub fn new(app: &str, delay_ms: u64) -> Gate {
        Gate {
            keys: crate::resource::rejoin_keys(app).map(Key::from),
            head: Value::from(format!("J{delay_ms}")),
        }
    }
}

/// One queued operation.
struct Request {
    op: Op,
    reply: oneshot::Sender<NodeResult<i64>>,
}

/// The queue of one node.
pub(crate) struct Queue {
    link: Arc<Link>,
    state: Mutex<State>,
    /// At most this many operations wait (see the module doc).
    backlog: usize,
    /// Set once the engine closes and waits for the queue to settle (see
    /// [`Queue::settled`]); read under the state's lock.
    settling: AtomicBool,
    /// Wakes [`Queue::settled`] when a call's place is freed.
    settled: Notify,
}

/// The node's connection and the lock script: what a call needs. Calls hold
/// it rather than the queue, so an abandoned call kept in the queue's state
/// makes no reference cycle, and the queue goes with its engine.
struct Link {
    client: Client,
    script: Script,
    /// Whether the connection can carry a call now.
    health: Arc<Health>,
    /// Set when the engine closes the connection: from then on nothing
    /// waits for a reconnection.
    closed: AtomicBool,
    /// Whether the node takes `SET … NX GET` (Redis 7.0 and later); cleared
    /// by the first acquire it refuses, which the script then makes.
    takes_set_nx_get: AtomicBool,
    /// The rejoin gate, if the engine has a rejoin delay.
    gate: Option<Gate>,
}

#[derive(Default)]
struct State {
    /// Waiting for a batch, in arrival order.
    pending: VecDeque<Request>,
    /// The last batch's emptied vector, the next batch's (saves an
    /// allocation per batch).
    spare: Vec<Request>,
    /// Calls in flight, or about to be (at most [`MAX_CALLS`]). While
    /// operations are pending, every one of them will take the next batch
    /// when it is answered.
    calls: u8,
    /// A leader's acquire or extend, sent, that its caller stopped waiting
    /// for (the quorum was decided without this node) while nothing was
    /// queued behind it. The next caller finishes it before its own call:
    /// cheaper than a task per lock and node. It keeps its place in `calls`,
    /// and is set only while nothing is pending.
    abandoned: Option<Call>,
}

impl State {
    /// See [`Queue::settled`].
    fn has_settled(&self) -> bool {
        self.calls == 0 || (self.pending.is_empty() && self.abandoned.is_some())
    }
}

/// A node call as a leader or a task makes it.
type Call = Pin<Box<dyn Future<Output = NodeResult<i64>> + Send>>;

/// A batch's call, answering with the emptied batch.
type Exchange = Pin<Box<dyn Future<Output = Vec<Request>> + Send>>;

impl Queue {
    pub fn new(
        client: Client,
        script: Script,
        health: Arc<Health>,
        backlog: usize,
        gate: Option<Gate>,
    ) -> Arc<Queue> {
        Arc::new(Queue {
            link: Arc::new(Link {
                client,
                script,
                health,
                closed: AtomicBool::new(false),
                takes_set_nx_get: AtomicBool::new(true),
                gate,
            }),
            state: Mutex::new(State::default()),
            backlog,
            settling: AtomicBool::new(false),
            settled: Notify::new(),
        })
    }

    /// Puts `op` on its way to the node: when the returned turn is first
    /// polled if no call is in flight, else in a batch. A release or
    /// fence goes out even if the turn is dropped; an acquire or extend
    /// whose turn is dropped before it is sent does not.
    pub fn run(self: &Arc<Self>, op: Op) -> Turn {
        let mut state = self.lock();
        // A leader never overtakes an operation queued before it.
        if state.pending.is_empty() && (state.abandoned.is_some() || state.calls == 0) {
            // An abandoned call passes its place in `calls` on.
            let earlier = state.abandoned.take();
            if earlier.is_none() {
                state.calls = 1;
            }
            return Turn::Lead(InFlight {
                queue: self.clone(),
                earlier,
                must_run: op.must_run(),
                op: Some(op),
                call: None,
            });
        }
        let (reply, answer) = oneshot::channel();
        if state.pending.len() >= self.backlog {
            if !op.must_run() {
                let _ = reply.send(Err(self.behind()));
                return Turn::Wait(answer);
            }
            if let Some(oldest) = state.pending.pop_front() {
                let _ = oldest.reply.send(Err(format!(
                    "{}; this operation made way for a newer release \
                     (a lock's keys there expire at their TTL)",
                    self.behind()
                )));
            }
        }
        state.pending.push_back(Request { op, reply });
        if state.calls < MAX_CALLS {
            // A task sends it, with whatever queues before the task runs.
            state.calls += 1;
            tokio::spawn(self.clone().drain());
        }
        Turn::Wait(answer)
    }

    /// Sends what is queued, batch after batch, until nothing is (run by a
    /// task that holds a place in `calls`).
    async fn drain(self: Arc<Self>) {
        let mut emptied = Vec::new();
        let mut exchange: Option<Exchange> = None;
        let mut reconnection: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
        std::future::poll_fn(|cx| loop {
            if let Some(call) = exchange.as_mut() {
                emptied = ready!(call.as_mut().poll(cx));
                exchange = None;
            }
            if let Some(wait) = reconnection.as_mut() {
                ready!(wait.as_mut().poll(cx));
                reconnection = None;
            }
            let mut state = self.lock();
            // While the client reconnects, what waits stays here, within
            // the backlog (see the module doc).
            if !state.pending.is_empty() && !self.link.can_send() {
                drop(state);
                reconnection = Some(Box::pin(self.link.clone().reconnection()));
                continue;
            }
            let Some(batch) = self.take_batch(&mut state, std::mem::take(&mut emptied)) else {
                self.freed(state);
                return Poll::Ready(());
            };
            let mut call: Exchange = Box::pin(self.clone().exchange(batch));
            // Its first poll hands the call to the connection: under the
            // lock, so batches go out in the order they were taken, and no
            // leader's call overtakes one taken before it.
            match call.as_mut().poll(cx) {
                Poll::Ready(done) => emptied = done,
                Poll::Pending => exchange = Some(call),
            }
        })
        .await
    }

    /// After a call: operations queued meanwhile go out from a task, so the
    /// caller goes on; with none, the call's place is free.
    fn move_on(self: &Arc<Self>) {
        let mut state = self.lock();
        if state.pending.is_empty() {
            state.calls -= 1;
            self.freed(state);
        } else {
            tokio::spawn(self.clone().drain());
        }
    }

    /// A call's place was freed, or left to an abandoned call: wakes
    /// [`Queue::settled`] if it waits and the queue has settled.
    fn freed(&self, state: std::sync::MutexGuard<'_, State>) {
        let wake = self.settling.load(Ordering::Relaxed) && state.has_settled();
        drop(state);
        if wake {
            self.settled.notify_waiters();
        }
    }

    /// Completes once no operation waits here and no call is out but an
    /// acquire or extend its caller left (see [`State::abandoned`]): the
    /// releases handed to the node have had their answers. The engine
    /// waits for it before it closes the connection.
    pub async fn settled(&self) {
        // Set before the state is read, and read by `freed` under the
        // state's lock: a place freed after this read sees the flag.
        self.settling.store(true, Ordering::Relaxed);
        loop {
            let mut changed = std::pin::pin!(self.settled.notified());
            changed.as_mut().enable();
            if self.lock().has_settled() {
                return;
            }
            changed.await;
        }
    }

    /// The engine closes the connection: operations no longer wait for it
    /// to come back.
    pub fn close(&self) {
        self.link.closed.store(true, Ordering::Relaxed);
    }

    /// Why an operation is not sent when the backlog is full.
    fn behind(&self) -> String {
        format!(
            "{} operations already wait for this node, the engine's `node_backlog`: \
             it is down or not keeping up (raise `node_backlog` if this process \
             takes more locks than that at once)",
            self.backlog
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next batch: the first operations still wanted, at most
    /// [`MAX_BATCH`] (and about half of what waits while the other call is
    /// out), or `None` (and the caller's place in `calls` freed) when none
    /// is pending. `emptied` is the vector of the batch just answered, kept
    /// for reuse.
    fn take_batch(&self, state: &mut State, emptied: Vec<Request>) -> Option<Vec<Request>> {
        let mut batch = if emptied.capacity() > state.spare.capacity() {
            emptied
        } else {
            std::mem::take(&mut state.spare)
        };
        // While the other call is out, half of what is pending goes now and
        // half with the other's next batch: two calls of even size overlap
        // (see `MIN_HALF`).
        let limit = if state.calls == MAX_CALLS {
            MAX_BATCH.min(state.pending.len().div_ceil(2).max(MIN_HALF))
        } else {
            MAX_BATCH
        };
        while batch.len() < limit {
            let Some(request) = state.pending.pop_front() else {
                break;
            };
            // An acquire or extend nobody waits for any more is not sent at all.
            if request.op.must_run() || !request.reply.is_closed() {
                batch.push(request);
            }
        }
        if state.pending.is_empty() && state.pending.capacity() > MAX_BATCH {
            // A burst is over: give its memory back.
            state.pending = VecDeque::new();
        }
        if batch.is_empty() {
            state.calls -= 1;
            state.spare = batch;
            return None;
        }
        Some(batch)
    }

    /// Sends `batch` and answers its callers; returns the emptied vector.
    async fn exchange(self: Arc<Self>, mut batch: Vec<Request>) -> Vec<Request> {
        let calls = batch.iter().map(|r| &r.op);
        match bounded(self.link.call(calls, false)).await {
            Ok(Some(reply)) => answer(&mut batch, Ok(reply)),
            Err(failure) => answer(&mut batch, Err(failure)),
            // Nothing ran (see `Link::call`): what must run goes again.
            Ok(None) => {
                let (mut again, not_sent): (Vec<Request>, Vec<Request>) =
                    batch.drain(..).partition(|r| r.op.must_run());
                for request in not_sent {
                    let _ = request.reply.send(Err(NOT_SENT_AGAIN.to_owned()));
                }
                if !again.is_empty() {
                    let calls = again.iter().map(|r| &r.op);
                    let reply = bounded(self.link.call(calls, false)).await;
                    let reply = reply.and_then(|r| r.ok_or_else(|| SCRIPT_LOST_AGAIN.to_owned()));
                    answer(&mut again, reply);
                }
            }
        }
        batch
    }
}

/// Answers the callers of `batch` from the script's reply to it, and
/// empties it.
fn answer(batch: &mut Vec<Request>, reply: NodeResult<Value>) {
    let results = match reply {
        // The script answers a batch of one with its bare result.
        Ok(result) if batch.len() == 1 && !matches!(result, Value::Array(_)) => Ok(vec![result]),
        Ok(Value::Array(results)) if results.len() == batch.len() => Ok(results),
        Ok(other) => Err(format!("unexpected reply to the lock script: {other:?}")),
        Err(failure) => Err(failure),
    };
    match results {
        Ok(results) => {
            for (request, result) in batch.drain(..).zip(results) {
                let _ = request.reply.send(parse(result));
            }
        }
        Err(failure) => {
            for request in batch.drain(..) {
                let _ = request.reply.send(Err(failure.clone()));
            }
        }
    }
}

/// Why an acquire or extend fails when the node had lost the script.
const NOT_SENT_AGAIN: &str = "the node had lost the lock script (it restarted, or its \
    scripts were flushed); the script is loaded again, but an acquire or extend \
    is not sent again: it could run after a release sent behind it";

/// Why a release or fence sent again fails when the script is missing again.
const SCRIPT_LOST_AGAIN: &str = "the node lost the lock script again as it was loaded";

impl Link {
    /// Whether a call made now goes to the node: its connection is up (see
    /// `health`: from the moment the client announces an error, not tens of
    /// milliseconds later when it reports itself disconnected, and a call
    /// handed to it meanwhile would wait in its queue), or closed for good
    /// (the call then fails at once).
    fn can_send(&self) -> bool {
        self.closed.load(Ordering::Relaxed) || self.health.is_up(&self.client, true)
    }

    /// Waits until the client reconnects, at most [`MARK`] (how long an
    /// error counts without a reconnection).
    async fn reconnection(self: Arc<Self>) {
        let back = super::redis::next_reconnection(&self.client);
        if !self.can_send() {
            let _ = tokio::time::timeout(MARK, back).await;
        }
    }

    /// Sends `op` alone and returns its result.
    async fn exchange_one(self: Arc<Self>, op: Op) -> NodeResult<i64> {
        // Behind the rejoin gate, an acquire is a script call.
        let gated = self.gate.is_some() && op.acquires();
        if let (Some((key, value, ttl_ms)), false) = (op.plain_acquire(), gated) {
            if self.takes_set_nx_get.load(Ordering::Relaxed) {
                match self.set_nx_get(key, value, ttl_ms).await {
                    Some(result) => return result,
                    // Nothing ran: the script makes it, now and from now on.
                    None => self.takes_set_nx_get.store(false, Ordering::Relaxed),
                }
            }
        }
        let bare = op.goes_bare();
        match self.call(std::iter::once(&op), bare).await? {
            Some(reply) => parse(reply),
            None if op.must_run() => {
                let reply = self.call(std::iter::once(&op), bare).await?;
                parse(reply.ok_or_else(|| SCRIPT_LOST_AGAIN.to_owned())?)
            }
            None => Err(NOT_SENT_AGAIN.to_owned()),
        }
    }

    /// An acquire of one lock key without fencing, as the script's would
    /// be: granted (0) if the key was free or already holds `value` (a call
    /// sent again after a reconnection; its TTL stays as the first call set
    /// it, a moment earlier), else -1; a key of another type is an error.
    /// One command instead of a script call spares the server about a third
    /// of a lock's cost (`scripts/script-cost.sh`). `None` when the server
    /// does not take `NX` with `GET` (before Redis 7.0): nothing ran.
    async fn set_nx_get(&self, key: &Key, value: &Value, ttl_ms: u64) -> Option<NodeResult<i64>> {
        let ttl = Expiration::PX(signed(ttl_ms));
        let reply = self
            .client
            .set::<Value, _, _>(
                key.clone(),
                value.clone(),
                Some(ttl),
                Some(SetOptions::NX),
                true,
            )
            .await;
        match reply {
            Ok(Value::Null) => Some(Ok(0)),
            Ok(held) if held.as_bytes() == value.as_bytes() => Some(Ok(0)),
            Ok(_) => Some(Ok(-1)),
            Err(e) if refuses_nx_get(&e) => None,
            Err(e) => Some(Err(super::redis::describe(e))),
        }
    }

    /// One `EVALSHA` carrying `ops` (one `bare` operation, or operations
    /// with heads). `None` when the node had lost the script (it restarted,
    /// or its scripts were flushed): nothing ran, and the script is loaded
    /// again. The caller sends again only what must run (releases and
    /// fences): the calls already on their way to the node all fail so,
    /// and each sends itself again, in no set order; an acquire sent again
    /// could run after the release that undoes it, and leave its key there
    /// until the TTL. A release or fence runs the same in any order.
    async fn call<'a>(
        &self,
        ops: impl Iterator<Item = &'a Op> + Clone,
        bare: bool,
    ) -> NodeResult<Option<Value>> {
        let (client, script) = (&self.client, &self.script);
        let (keys, args) = encode(ops, bare, self.gate.as_ref());
        match client.evalsha(script.sha1().clone(), keys, args).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                script.load(client).await.map_err(super::redis::describe)?;
                Ok(None)
            }
            reply => reply.map(Some).map_err(super::redis::describe),
        }
    }
}

/// Whether `e` is a server's refusal of `SET` with both `NX` and `GET`:
/// Redis before 7.0 calls it a syntax error, and runs nothing.
fn refuses_nx_get(e: &fred::error::Error) -> bool {
    e.details().starts_with("ERR syntax error")
}

/// `call`, failed if it has no answer within [`BATCH_TIMEOUT`].
async fn bounded<T>(call: impl Future<Output = NodeResult<T>>) -> NodeResult<T> {
    tokio::time::timeout(BATCH_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {BATCH_TIMEOUT:?}")))
}

/// One operation's way through the queue, as a future of its result:
/// written by hand, so that the many of them in flight at once (one per
/// lock and node) are small.
pub(crate) enum Turn {
    /// The caller sends it, after an abandoned call if there is one.
    Lead(InFlight),
    /// It waits in the queue for a batch.
    Wait(oneshot::Receiver<NodeResult<i64>>),
}

impl Future for Turn {
    type Output = NodeResult<i64>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Turn::Lead(in_flight) => Pin::new(in_flight).poll(cx),
            Turn::Wait(answer) => Pin::new(answer).poll(cx).map(|answer| {
                answer.unwrap_or_else(|_| Err("the node's queue dropped the operation".to_owned()))
            }),
        }
    }
}

/// A leader's turn: an abandoned call to finish first, then its own.
///
/// If the leader is dropped first (its caller gave up, or the quorum was
/// decided without this node), what it started is finished: an acquire or
/// extend already sent, with nothing queued behind it, is left for the next
/// caller (see [`State::abandoned`]); anything else goes to a task, which
/// also sends what is queued behind it. So a release always runs, no caller
/// waits forever, and the queue keeps moving. An acquire or extend not yet
/// sent is dropped, as a queued one is.
pub(crate) struct InFlight {
    queue: Arc<Queue>,
    earlier: Option<Call>,
    op: Option<Op>,
    /// Whether `op` must run (see [`Op::must_run`]).
    must_run: bool,
    /// `op`'s call, once sent.
    call: Option<Call>,
}

impl Future for InFlight {
    type Output = NodeResult<i64>;

    /// Finishes the earlier call, then makes this one and returns its
    /// result; after it, dropping `self` does nothing.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(earlier) = this.earlier.as_mut() {
            let _ = ready!(earlier.as_mut().poll(cx));
            this.earlier = None;
        }
        if let Some(op) = this.op.take() {
            this.call = Some(Box::pin(this.queue.link.clone().exchange_one(op)));
        }
        let Some(call) = this.call.as_mut() else {
            return Poll::Ready(Err("the call was already answered".to_owned()));
        };
        let result = ready!(call.as_mut().poll(cx));
        this.call = None;
        this.queue.move_on();
        Poll::Ready(result)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let op = self.op.take();
        // What was sent, bounded: the earlier call is already.
        let (sent, must_run): (Option<Call>, bool) = match (self.earlier.take(), self.call.take()) {
            (Some(earlier), _) => (Some(earlier), false),
            (None, Some(call)) => (Some(Box::pin(bounded(call))), self.must_run),
            (None, None) => match &op {
                // Answered: the queue has moved on.
                None => return,
                // Dropped before it was first polled, having sent nothing.
                Some(op) if !op.must_run() => return self.queue.move_on(),
                Some(_) => (None, true),
            },
        };
        let unsent = op.filter(Op::must_run);
        if sent.is_some() && !must_run && unsent.is_none() {
            let mut state = self.queue.lock();
            if state.pending.is_empty() && state.abandoned.is_none() {
                state.abandoned = sent;
                return self.queue.freed(state);
            }
        }
        let queue = self.queue.clone();
        if let Some(op) = unsent {
            // First, where its leader would have sent it, and the task sends
            // it with what queued behind it.
            let (reply, _) = oneshot::channel();
            queue.lock().pending.push_front(Request { op, reply });
        }
        tokio::spawn(async move {
            if let Some(sent) = sent {
                let _ = sent.await;
            }
            queue.drain().await;
        });
    }
}

/// The script's `KEYS` and `ARGV` for `ops`: every operation's keys, and
/// every operation's `ARGV` part, in queue order; without the head if `bare`.
/// The `gate` goes first if any of them acquires.
fn encode<'a>(
    ops: impl Iterator<Item = &'a Op> + Clone,
    bare: bool,
    gate: Option<&Gate>,
) -> (Vec<Key>, Vec<Value>) {
    let gate = gate.filter(|_| ops.clone().any(Op::acquires));
    let gate_keys = gate.map_or(&[][..], |gate| &gate.keys[..]);
    let mut keys =
        Vec::with_capacity(gate_keys.len() + ops.clone().map(|op| op.keys().len()).sum::<usize>());
    // An operation has at most three `ARGV` entries, the gate one.
    let mut args = Vec::with_capacity(1 + 3 * ops.clone().count());
    if let Some(gate) = gate {
        keys.extend_from_slice(gate_keys);
        args.push(gate.head.clone());
    }
    for op in ops {
        keys.extend_from_slice(op.keys());
        op.push_args(&mut args, bare);
    }
    (keys, args)
}

/// An operation's result: an integer, or the text of its error.
fn parse(result: Value) -> NodeResult<i64> {
    match result {
        Value::Integer(n) => Ok(n),
        Value::String(text) => Err(super::redis::hint(
            text.strip_prefix("ERR ").unwrap_or(&text),
        )),
        other => Err(format!("unexpected result from the lock script: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(op: Op) -> Request {
        Request {
            op,
            reply: oneshot::channel().0,
        }
    }

    fn text(values: &[Value]) -> Vec<String> {
        values
            .iter()
            .map(|v| v.as_string().unwrap_or_default())
            .collect()
    }

    /// A queue whose client never connects: for what happens before a call.
    fn unconnected_queue() -> Arc<Queue> {
        let health = Arc::new(Health::new());
        Queue::new(
            Client::default(),
            Script::from_lua("return 0"),
            health,
            4,
            None,
        )
    }

    fn one_key() -> LockKeys {
        LockKeys::new("p:", &["a"], true).unwrap()
    }

    fn acquire() -> Op {
        Op::Acquire {
            keys: one_key(),
            value: Value::from("v"),
            ttl_ms: 1,
        }
    }

    fn release() -> Op {
        Op::Release {
            keys: one_key(),
            value: Value::from("v"),
            announce: true,
        }
    }

    #[test]
    fn only_a_syntax_error_sends_a_plain_acquire_back_to_the_script() {
        use fred::error::{Error, ErrorKind};
        let refusal = Error::new(ErrorKind::Unknown, "ERR syntax error");
        assert!(refuses_nx_get(&refusal));
        for other in [
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "NOPERM this user has no permissions to run the 'set' command",
            "Connection closed unexpectedly.",
        ] {
            assert!(
                !refuses_nx_get(&Error::new(ErrorKind::Unknown, other)),
                "{other}"
            );
        }
    }

    #[test]
    fn only_an_unfenced_acquire_of_one_resource_is_a_plain_set() {
        let unfenced = |resources: &[&str]| Op::Acquire {
            keys: LockKeys::new("p:", resources, false).unwrap(),
            value: Value::from("v"),
            ttl_ms: 1,
        };
        assert!(unfenced(&["a"]).plain_acquire().is_some());
        assert!(unfenced(&["a", "b"]).plain_acquire().is_none());
        assert!(acquire().plain_acquire().is_none(), "fenced");
        assert!(release().plain_acquire().is_none());
    }

    #[test]
    fn a_turn_dropped_before_it_is_polled_leaves_the_queue_idle() {
        let queue = unconnected_queue();
        let turn = queue.run(acquire());
        assert!(matches!(turn, Turn::Lead(_)) && queue.lock().calls == 1);
        drop(turn);
        assert_eq!(queue.lock().calls, 0, "the place would be lost for good");
    }

    /// An unconnected queue whose leader sent `op` and was dropped: the
    /// leader's first poll sends its call, which the client never answers.
    async fn sent_then_dropped(op: Op) -> Arc<Queue> {
        let queue = unconnected_queue();
        let mut turn = queue.run(op);
        let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut turn).poll(cx))).await;
        assert!(first.is_pending(), "{first:?}");
        drop(turn);
        queue
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_acquire_passes_its_place_to_the_next_caller() {
        let queue = sent_then_dropped(acquire()).await;
        {
            let state = queue.lock();
            assert!(state.abandoned.is_some() && state.calls == 1);
        }
        let next = queue.run(acquire());
        assert!(matches!(
            &next,
            Turn::Lead(InFlight {
                earlier: Some(_),
                ..
            })
        ));
        assert_eq!(
            queue.lock().calls,
            1,
            "still one call out: the abandoned one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_dropped_with_its_call_out_gives_its_place_back() {
        let queue = sent_then_dropped(release()).await;
        assert_eq!(queue.lock().calls, 1, "a task finishes the release");
        // The task's wait is bounded; paused time runs through it.
        for _ in 0..10 {
            tokio::time::sleep(BATCH_TIMEOUT).await;
            if queue.lock().calls == 0 {
                return;
            }
        }
        panic!("the dropped leader's place was never given back");
    }

    /// What `turn` answers when polled once now.
    fn poll_once(turn: &mut Turn) -> Poll<NodeResult<i64>> {
        Pin::new(turn).poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn a_full_backlog_fails_new_acquires_and_drops_the_oldest_for_a_release() {
        let queue = unconnected_queue();
        // Both calls out, so that what comes next waits, and no task sends it.
        queue.lock().calls = MAX_CALLS;
        let mut waiting: Vec<Turn> = (0..queue.backlog).map(|_| queue.run(release())).collect();
        let Poll::Ready(Err(refused)) = poll_once(&mut queue.run(acquire())) else {
            panic!("an acquire queued behind a full backlog");
        };
        assert!(refused.contains("node_backlog"), "{refused}");
        assert_eq!(queue.lock().pending.len(), queue.backlog);

        waiting.push(queue.run(release()));
        assert_eq!(queue.lock().pending.len(), queue.backlog, "still bounded");
        let Poll::Ready(Err(oldest)) = poll_once(&mut waiting.remove(0)) else {
            panic!("the oldest operation still waits");
        };
        assert!(oldest.contains("made way for a newer release"), "{oldest}");
        // The others, and the newest, still wait for the node.
        assert!(waiting.iter_mut().all(|turn| poll_once(turn).is_pending()));
    }

    #[tokio::test(start_paused = true)]
    async fn what_waits_for_a_reconnection_stays_in_the_queue_until_it_is_closed() {
        let queue = unconnected_queue();
        // A call out, so that these wait, and a task to send them.
        queue.lock().calls = 1;
        let turns: Vec<Turn> = (0..3).map(|_| queue.run(release())).collect();
        assert_eq!(queue.lock().calls, 2, "a task was started");
        // Paused time runs through many reconnection waits.
        tokio::time::sleep(BATCH_TIMEOUT * 5).await;
        assert_eq!(
            queue.lock().pending.len(),
            3,
            "nothing is handed to a client that is not connected"
        );

        queue.close();
        for turn in turns {
            assert!(turn.await.is_err(), "a closed client fails the call");
        }
        assert!(queue.lock().pending.is_empty());
    }

    #[test]
    fn an_abandoned_call_does_not_keep_its_queue_alive() {
        let queue = unconnected_queue();
        let call = queue.link.clone().exchange_one(release());
        queue.lock().abandoned = Some(Box::pin(bounded(call)));
        let gone = Arc::downgrade(&queue);
        drop(queue);
        assert!(gone.upgrade().is_none(), "the queue outlived its engine");
    }

    #[test]
    fn the_usual_lock_alone_goes_bare_and_anything_else_with_its_head() {
        let keys = one_key();
        let value = Value::from("v");
        let lone = |op: Op| {
            let bare = op.goes_bare();
            text(&encode(std::iter::once(&op), bare, None).1)
        };
        let acquire = Op::Acquire {
            keys: keys.clone(),
            value: value.clone(),
            ttl_ms: 30_000,
        };
        assert_eq!(lone(acquire), ["v", "30000"]);
        let release = |announce| Op::Release {
            keys: keys.clone(),
            value: value.clone(),
            announce,
        };
        assert_eq!(lone(release(true)), ["v"]);
        assert_eq!(lone(release(false)), ["D1", "v"]);
        let extend = Op::Extend {
            keys: keys.clone(),
            value: value.clone(),
            ttl_ms: 5,
        };
        assert_eq!(lone(extend), ["E1", "v", "5"]);
        let two = LockKeys::new("p:", &["a", "b"], true).unwrap();
        let acquire_two = Op::Acquire {
            keys: two,
            value,
            ttl_ms: 5,
        };
        assert_eq!(lone(acquire_two), ["T2", "v", "5"]);
    }

    #[test]
    fn a_batch_lays_out_keys_then_each_operations_arguments() {
        let fenced = one_key();
        let plain = LockKeys::new("p:", &["b", "c"], false).unwrap();
        let value = Value::from("v");
        let batch = [
            request(Op::Acquire {
                keys: fenced.clone(),
                value: value.clone(),
                ttl_ms: 30_000,
            }),
            request(Op::Release {
                keys: plain,
                value,
                announce: true,
            }),
            request(Op::Fence {
                keys: fenced,
                token: 1 << 40,
            }),
        ];
        let (keys, args) = encode(batch.iter().map(|r| &r.op), false, None);
        let keys: Vec<_> = keys
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            keys,
            [
                "p:a",
                "redlock-fence_p:a",
                "p:b",
                "p:c",
                "redlock-fence_p:a"
            ]
        );
        assert_eq!(
            text(&args),
            ["T1", "v", "30000", "R2", "v", "F1", "1099511627776"]
        );
    }

    #[test]
    fn a_call_that_acquires_opens_with_the_rejoin_gate() {
        let gate = Gate::new("shop", 30_000);
        let value = Value::from("v");
        let acquire = request(Op::Acquire {
            keys: one_key(),
            value: value.clone(),
            ttl_ms: 5,
        });
        let release = request(Op::Release {
            keys: one_key(),
            value,
            announce: true,
        });
        let (keys, args) = encode([&acquire.op, &release.op].into_iter(), false, Some(&gate));
        assert_eq!(
            keys[..2]
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect::<Vec<_>>(),
            ["redlock_{shop}::rejoin", "redlock_{shop}::rejoin-warming"]
        );
        assert_eq!(text(&args), ["J30000", "T1", "v", "5", "R1", "v"]);
        let lone = |op: &Op| text(&encode(std::iter::once(op), op.goes_bare(), Some(&gate)).1);
        assert_eq!(
            lone(&acquire.op),
            ["J30000", "v", "5"],
            "bare behind the gate"
        );
        assert_eq!(lone(&release.op), ["v"], "no acquire, no gate");
    }
}
