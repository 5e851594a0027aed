//! Test harness: real `redis-server` processes on free loopback ports, each in
//! its own temporary directory, that a test can kill, pause, resume and
//! restart. Every server is stopped when its handle drops, also when the
//! test panics.
//!
//! When `REDLOCK_TEST_PIDS` names a directory, each live server has a file
//! there named by its pid, so the test script can stop servers whose test
//! process was killed before it could clean up.

#![allow(dead_code)] // each test binary uses a different part

pub mod checker;
pub mod cluster;
pub mod proxy;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::CustomCommand;
use redlock::{Error, LockOptions, Redlock, Vote};

/// How long a server may take to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// One real `redis-server` process.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    paused: bool,
    extra: Vec<String>,
    /// A Sentinel's configuration: the server runs as a Sentinel.
    sentinel: Option<String>,
}

impl RedisServer {
    /// Starts a server on a free loopback port, without persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server that writes every change to its append-only file
    /// before answering (`appendfsync always`): a restart keeps its keys.
    pub fn start_persistent() -> RedisServer {
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// Starts a server with extra command-line settings (e.g. TLS, ACL users).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_as(extra, None)
    }

    /// Starts a Sentinel that watches the primary on `primary` under the
    /// name `service`, and alone decides it is down, after 1 s without an
    /// answer.
    pub fn start_sentinel(service: &str, primary: u16) -> RedisServer {
        let config = format!(
            "sentinel monitor {service} 127.0.0.1 {primary} 1\n\
             sentinel down-after-milliseconds {service} 1000\n\
             sentinel failover-timeout {service} 10000\n"
        );
        RedisServer::start_as(&[], Some(config))
    }

    fn start_as(extra: &[&str], sentinel: Option<String>) -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "redlock-test-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the server's temp dir");
        // Another test may take the port between our probe and the server's bind: try again.
        for _ in 0..20 {
            let port = free_port();
            let mut server = RedisServer {
                port,
                dir: dir.clone(),
                child: None,
                paused: false,
                extra: extra.iter().map(|s| (*s).to_owned()).collect(),
                sentinel: sentinel.clone(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port (is redis-server installed?)");
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's own directory (for TLS files and the like).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process (SIGKILL) and waits for it: the node is down, its keys lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                signal(&child, libc::SIGCONT);
                self.paused = false;
            }
            let _ = child.kill();
            let _ = child.wait();
            self.forget_pid(child.id());
        }
    }

    /// Stops the process (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            signal(child, libc::SIGSTOP);
            self.paused = true;
        }
    }

    /// Continues a paused process (SIGCONT).
    pub fn resume(&mut self) {
        if let Some(child) = &self.child {
            signal(child, libc::SIGCONT);
            self.paused = false;
        }
    }

    /// Starts the server again on the same port, as a crash and restart
    /// would: a persistent server comes back with its keys, others empty.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again with its data files deleted: a node that lost its disk.
    pub fn restart_empty(&mut self) {
        self.kill();
        // Redis 7 keeps its append-only files in a folder; before, in one file.
        for name in ["appendonlydir", "appendonly.aof", "dump.rdb"] {
            let path = self.dir.join(name);
            let _ = std::fs::remove_dir_all(&path);
            let _ = std::fs::remove_file(&path);
        }
        self.restart();
    }

    /// The server's version, as (major, minor): a test checks what the
    /// engine does on a server that lacks a newer command's form.
    pub async fn version(&self) -> (u32, u32) {
        let version = self
            .info("server")
            .await
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .expect("INFO server names the version")
            .to_owned();
        let mut parts = version.trim().split('.').map(|n| n.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// One section of the server's `INFO`.
    pub async fn info(&self, section: &str) -> String {
        let client = self.client().await;
        let info: String = client
            .custom(
                CustomCommand::new_static("INFO", None, false),
                vec![section],
            )
            .await
            .unwrap();
        let _ = client.quit().await;
        info
    }

    /// A plain client connected to this server, to look at or change keys behind the engine's back.
    pub async fn client(&self) -> Client {
        let client = Client::new(Config::from_url(&self.url()).unwrap(), None, None, None);
        client.init().await.expect("connect the inspection client");
        client
    }

    fn spawn(&mut self) -> bool {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let mut command = Command::new(binary);
        if let Some(config) = &self.sentinel {
            // A Sentinel rewrites its file: it comes first, and is its own.
            let path = self.dir.join(format!("sentinel-{}.conf", self.port));
            std::fs::write(&path, config).expect("write the Sentinel's configuration");
            command.arg(path).arg("--sentinel");
        }
        let child = command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .args(&self.extra)
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server (install it, or set REDIS_SERVER)");
        self.remember_pid(child.id());
        self.child = Some(child);
        if self.wait_ready() {
            true
        } else {
            self.kill();
            false
        }
    }

    /// True once the server answers PING; false if the process died (port taken) or never answered.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if ping(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn remember_pid(&self, pid: u32) {
        if let Some(dir) = pid_dir() {
            let _ = std::fs::write(dir.join(pid.to_string()), b"redis-server\n");
        }
    }

    fn forget_pid(&self, pid: u32) {
        if let Some(dir) = pid_dir() {
            let _ = std::fs::remove_file(dir.join(pid.to_string()));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// N independent servers.
pub struct Nodes {
    pub servers: Vec<RedisServer>,
}

impl Nodes {
    /// Starts `n` servers.
    pub fn start(n: usize) -> Nodes {
        Nodes {
            servers: (0..n).map(|_| RedisServer::start()).collect(),
        }
    }

    /// Starts `n` servers that keep their keys across a kill and restart
    /// (see [`RedisServer::start_persistent`]).
    pub fn start_persistent(n: usize) -> Nodes {
        Nodes {
            servers: (0..n).map(|_| RedisServer::start_persistent()).collect(),
        }
    }

    /// Their URLs.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::url).collect()
    }

    /// An engine over all servers with test-friendly defaults (short retry delay) and `options`.
    pub async fn engine(&self, app: &str, options: LockOptions) -> Redlock {
        engine_at(app, self.urls(), options).await
    }

    /// Locks and releases a probe resource until server `node` holds the
    /// probe's key while it is locked: the node takes part in locking again
    /// (after a restart or a healed fault). Panics after 30 s.
    pub async fn wait_until_node_takes_part(&self, engine: &Redlock, node: usize) {
        let key = engine.key("probe", None).unwrap();
        eventually(Duration::from_secs(30), || async {
            let lock = engine
                .acquire(&["probe"], LockOptions::default())
                .await
                .unwrap();
            let held = self.values(&key).await;
            // Not what this waits for: with a short node timeout on a
            // loaded machine, a release can miss its quorum, and the
            // probe's key then expires at its TTL.
            if let Err(missed) = lock.release().await {
                eprintln!("a probe's release: {missed}");
            }
            match held[node] {
                Some(_) => Ok(()),
                None => Err(format!("node {node} never took part again: {held:?}")),
            }
        })
        .await
    }

    /// The value stored under `key` on each server (`None` for a down or paused one).
    pub async fn values(&self, key: &str) -> Vec<Option<String>> {
        let mut values = Vec::new();
        for server in &self.servers {
            if server.child.is_none() || server.paused {
                values.push(None);
                continue;
            }
            let client = server.client().await;
            values.push(client.get(key).await.unwrap());
            let _ = client.quit().await;
        }
        values
    }

    /// The values under `key` (as [`Nodes::values`]) once `want` holds of
    /// them. The engine returns once a quorum answered (an acquire) or
    /// soon after (a release), so a node's part can land a moment after
    /// the call returned; on a loaded machine, more than the moment a test
    /// takes to read every node. Panics after 10 s with the last values.
    pub async fn values_when(
        &self,
        key: &str,
        want: impl Fn(&[Option<String>]) -> bool,
    ) -> Vec<Option<String>> {
        eventually(Duration::from_secs(10), || async {
            let values = self.values(key).await;
            match want(&values) {
                true => Ok(values),
                false => Err(format!("{key} stayed at {values:?}")),
            }
        })
        .await
    }

    /// How many `EVALSHA` calls each server has run so far (0 for a down or
    /// paused one).
    pub async fn script_calls(&self) -> Vec<usize> {
        let mut calls = Vec::new();
        for server in &self.servers {
            if server.child.is_none() || server.paused {
                calls.push(0);
                continue;
            }
            let count = server
                .info("commandstats")
                .await
                .lines()
                .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
                .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap());
            calls.push(count);
        }
        calls
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe {
        libc::kill(pid, signal);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free loopback port")
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    // A server that wants a password is up too.
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
}

/// A free loopback port (for a second listener, e.g. TLS).
pub fn spare_port() -> u16 {
    free_port()
}

fn pid_dir() -> Option<PathBuf> {
    std::env::var_os("REDLOCK_TEST_PIDS").map(PathBuf::from)
}

/// An engine of `app` over the nodes at `urls` (servers, or proxies in
/// front of them), with `options` as its defaults.
pub async fn engine_at(app: &str, urls: Vec<String>, options: LockOptions) -> Redlock {
    Redlock::builder()
        .app(app)
        .nodes(urls)
        .defaults(options)
        .build()
        .await
        .expect("build an engine over the test servers")
}

/// Options of a waiter that would retry only after 60 s: within `wait`, it
/// can have the lock only through a release's message.
pub fn woken_by_messages_only(wait: Duration) -> LockOptions {
    LockOptions::default()
        .retry_delay(Duration::from_secs(60))
        .retry_jitter(Duration::from_millis(1))
        .wait(wait)
}

/// `engine`'s attempt at `resources`, which another holder keeps from it
/// for the 200 ms it waits: its error.
pub async fn held_off(engine: &Redlock, resources: &[&str]) -> Error {
    let err = engine
        .acquire(
            resources,
            LockOptions::default().wait(Duration::from_millis(200)),
        )
        .await
        .expect_err("another holds it");
    assert!(matches!(err, Error::NotAcquired { .. }), "{err}");
    err
}

/// `engine`'s lock of `resource`, taken as soon as its node answers again
/// (after a failover); panics after 30 s.
pub async fn acquire_when_back(engine: &Redlock, resource: &str) -> redlock::Lock {
    let probe = LockOptions::default()
        .node_timeout(Duration::from_millis(500))
        .wait(Duration::ZERO);
    eventually(Duration::from_secs(30), || async {
        engine
            .acquire(&[resource], probe.clone())
            .await
            .map_err(|e| e.to_string())
    })
    .await
}

/// Takes and gives back every kind of lock, with every script operation
/// and command the engine sends: fenced, unfenced, several resources at
/// once, extended (what a least-privilege ACL user must be allowed).
pub async fn every_kind_of_lock(engine: &Redlock) {
    for fencing in [true, false] {
        let options = LockOptions::default().fencing(fencing);
        engine
            .lock_with("one", options, |_| async {})
            .await
            .unwrap();
    }
    let lock = engine
        .acquire(&["a", "b"], LockOptions::default())
        .await
        .unwrap();
    lock.extend(Duration::from_secs(5)).await.unwrap();
    lock.release().await.unwrap();
}

/// 64 lock calls at once, fenced and then unfenced, each on a resource of
/// its own: they reach each node in batches (script calls of many
/// operations). Panics if any fails.
pub async fn many_at_once(engine: &Redlock) {
    for fencing in [true, false] {
        let options = LockOptions::default().fencing(fencing);
        let locks: Vec<_> = (0..64)
            .map(|i| {
                let (engine, options) = (engine.clone(), options.clone());
                tokio::spawn(async move {
                    engine
                        .lock_with(&format!("many-{i}"), options, |_| async {})
                        .await
                })
            })
            .collect();
        for lock in locks {
            lock.await.unwrap().unwrap();
        }
    }
}

/// Releases `lock` to a waiter of `engine` that only a release's message
/// can wake (see [`woken_by_messages_only`]), once the waiter listens:
/// `listeners` counts the connections subscribed to the lock's key.
/// Returns the waiter's lock.
pub async fn hand_over_by_message<F, Listeners>(
    lock: redlock::Lock,
    engine: &Redlock,
    listeners: F,
) -> redlock::Lock
where
    F: Fn() -> Listeners,
    Listeners: std::future::Future<Output = i64>,
{
    let resource = lock.resources()[0].clone();
    let waiter = spawn_acquire(
        engine,
        &resource,
        woken_by_messages_only(Duration::from_secs(20)),
    );
    eventually(Duration::from_secs(20), || async {
        match listeners().await {
            1 => Ok(()),
            n => Err(format!("{n} subscribers: the waiter never listened")),
        }
    })
    .await;
    lock.release().await.unwrap();
    waiter.await.unwrap().unwrap()
}

/// How many connections to `client`'s server subscribe to `channel`.
pub async fn subscribers(client: &Client, channel: &str) -> i64 {
    let reply: Vec<Value> = client.pubsub_numsub(channel).await.unwrap();
    reply.get(1).and_then(Value::as_i64).unwrap_or(0)
}

/// Options for fast tests: short retry delays, a bounded wait.
pub fn quick() -> LockOptions {
    LockOptions::default()
        .retry_delay(Duration::from_millis(10))
        .retry_jitter(Duration::from_millis(5))
        .wait(Duration::from_secs(20))
}

/// Whether no node holds the key (for [`Nodes::values_when`]).
pub fn gone(values: &[Option<String>]) -> bool {
    values.iter().all(Option::is_none)
}

/// Whether every node holds the key, with one value (for [`Nodes::values_when`]).
pub fn everywhere(values: &[Option<String>]) -> bool {
    values.first().is_some_and(Option::is_some) && values.iter().all(|v| *v == values[0])
}

/// Waits until `engine` votes node `node` "not connected": it has seen the
/// node go. Each probe is an attempt on `resource`, which must be held
/// (or the node the quorum) so that the attempt fails and shows its votes.
/// Panics after 30 s.
pub async fn wait_until_seen_down(engine: &Redlock, resource: &str, node: usize) {
    // A call sent before the client saw the connection close may still
    // wait for the node: the probes' own releases (of their failed
    // attempts) wait briefly.
    let probe = LockOptions::default()
        .node_timeout(Duration::from_millis(200))
        .wait(Duration::ZERO);
    eventually(Duration::from_secs(30), || async {
        let err = engine
            .acquire(&[resource], probe.clone())
            .await
            .unwrap_err();
        let (Error::NotAcquired { votes, .. } | Error::QuorumUnreachable { votes, .. }) = &err
        else {
            panic!("{resource} is held on the other nodes, or the node is needed: {err}");
        };
        match &votes.0[node].vote {
            Vote::Failed(reason) if reason.contains("not connected") => Ok(()),
            _ => Err(format!("the engine never saw node {node} go: {err}")),
        }
    })
    .await
}

/// `engine.acquire` of `resource` with `options`, in a task of its own: a
/// waiter that a test leaves waiting, or lets give up.
pub fn spawn_acquire(
    engine: &Redlock,
    resource: &str,
    options: LockOptions,
) -> tokio::task::JoinHandle<redlock::Result<redlock::Lock>> {
    let (engine, resource) = (engine.clone(), resource.to_owned());
    tokio::spawn(async move { engine.acquire(&[resource.as_str()], options).await })
}

/// Runs `probe` every 10 ms until it returns `Ok`, and gives what it
/// holds. Panics after `within` with the last `Err`, which says what never
/// came. For what a test cannot await as an event: a node's state, a
/// restart, a count that settles.
pub async fn eventually<T, F, Probe>(within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Probe,
    Probe: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(done) => return done,
            Err(awaited) => assert!(Instant::now() < deadline, "after {within:?}: {awaited}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
