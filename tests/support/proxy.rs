//! A TCP proxy in front of a node, to slow, silence or cut its traffic.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// What the proxy does with the bytes it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Forward each chunk after this delay (added latency, in both directions).
    Delay(Duration),
    /// Read and drop everything: the node seems to hang.
    Blackhole,
    /// Forward nothing, and keep what was sent until the mode changes, as
    /// a network that drops everything does (TCP sends it again once the
    /// network heals): the connection goes silent, but stays whole.
    Hold,
}

struct State {
    mode: watch::Sender<Mode>,
    /// Refuse new connections (close them at once).
    refuse: Mutex<bool>,
    pumps: Mutex<Vec<AbortHandle>>,
    /// Connections accepted so far; each is numbered in that order.
    accepted: AtomicUsize,
    /// The connections gone dead (see [`Proxy::kill_silently`]).
    dead: Mutex<HashSet<usize>>,
    /// The connections slowed, and by how much (see [`Proxy::slow`]).
    slowed: Mutex<HashMap<usize, Duration>>,
}

impl State {
    fn is_dead(&self, connection: usize) -> bool {
        self.dead.lock().unwrap().contains(&connection)
    }

    fn slowed_by(&self, connection: usize) -> Option<Duration> {
        self.slowed.lock().unwrap().get(&connection).copied()
    }
}

/// A proxy on a free loopback port, forwarding to `127.0.0.1:{target}`.
pub struct Proxy {
    port: u16,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to `target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            mode: watch::Sender::new(Mode::Pass),
            refuse: Mutex::new(false),
            pumps: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            dead: Mutex::new(HashSet::new()),
            slowed: Mutex::new(HashMap::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, target, state.clone()));
        Proxy {
            port,
            state,
            accept,
        }
    }

    /// `redis://127.0.0.1:{proxy port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Changes what happens to traffic from now on.
    pub fn set(&self, mode: Mode) {
        self.state.mode.send_replace(mode);
    }

    /// How many connections the proxy has accepted.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connection number `connection` (0 for the first accepted) dies
    /// without a word, as one does whose peer's host vanished behind a
    /// network that drops everything: from now on nothing passes either
    /// way, and the proxy never closes it. Other connections go on.
    pub fn kill_silently(&self, connection: usize) {
        self.state.dead.lock().unwrap().insert(connection);
    }

    /// Connection number `connection` forwards each chunk after `delay`
    /// from now on, both ways, on top of the mode. Other connections go on.
    pub fn slow(&self, connection: usize, delay: Duration) {
        self.state.slowed.lock().unwrap().insert(connection, delay);
    }

    /// Closes every open connection, and refuses new ones until [`heal`](Proxy::heal).
    pub fn cut(&self) {
        *self.state.refuse.lock().unwrap() = true;
        for pump in self.state.pumps.lock().unwrap().drain(..) {
            pump.abort();
        }
    }

    /// Accepts connections and forwards at once again.
    pub fn heal(&self) {
        *self.state.refuse.lock().unwrap() = false;
        self.set(Mode::Pass);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, target: u16, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *state.refuse.lock().unwrap() {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
            continue;
        };
        let connection = state.accepted.fetch_add(1, Ordering::SeqCst);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let up = tokio::spawn(pump(client_read, server_write, connection, state.clone()));
        let down = tokio::spawn(pump(server_read, client_write, connection, state.clone()));
        let mut pumps = state.pumps.lock().unwrap();
        pumps.retain(|p| !p.is_finished());
        pumps.push(up.abort_handle());
        pumps.push(down.abort_handle());
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    connection: usize,
    state: Arc<State>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut mode = state.mode.subscribe();
    loop {
        let n = match from.read(&mut buf).await {
            // A dead connection is not closed: its other side never hears.
            Ok(0) | Err(_) if state.is_dead(connection) => {
                return std::future::pending::<()>().await;
            }
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if state.is_dead(connection) {
            continue;
        }
        // Held, the bytes read wait here, and the rest in the socket.
        let now = match mode.wait_for(|mode| *mode != Mode::Hold).await {
            Ok(now) => *now,
            Err(_) => return,
        };
        match now {
            Mode::Pass | Mode::Hold => {}
            Mode::Delay(delay) => tokio::time::sleep(delay).await,
            Mode::Blackhole => continue,
        }
        if let Some(delay) = state.slowed_by(connection) {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
