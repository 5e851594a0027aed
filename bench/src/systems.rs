//! The three systems measured: the raw-command floor, redlock, and rslock.

use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{Key, Value};
use futures::future::join_all;
use redlock::{LockOptions, Redlock};

/// Compare-and-delete, as every Redlock release does.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// The floor: `SET NX PX` to all nodes in parallel, then a compare-and-delete
/// script to all nodes in parallel, with fred directly (two round trips).
pub struct Floor {
    clients: Vec<Client>,
    /// Acquire with a one-line script doing the same `SET NX PX`, to show
    /// what a script call costs against a plain command.
    script_acquire: bool,
    acquire: Script,
    release: Script,
    quorum: usize,
}

impl Floor {
    pub async fn connect(urls: &[String], script_acquire: bool) -> Floor {
        let mut clients = Vec::new();
        for url in urls {
            let client = Client::new(Config::from_url(url).unwrap(), None, None, None);
            client.init().await.unwrap();
            clients.push(client);
        }
        let release = Script::from_lua(RELEASE);
        let acquire = Script::from_lua("if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 else return 0 end");
        for client in &clients {
            release.load(client).await.unwrap();
            acquire.load(client).await.unwrap();
        }
        Floor {
            script_acquire,
            acquire,
            quorum: clients.len() / 2 + 1,
            clients,
            release,
        }
    }
}

/// A held lock of any system.
pub enum Held {
    Floor(Key, Value),
    Ours(redlock::Lock),
    Peer(rslock::LockGuard),
}

pub enum System {
    Floor(Floor),
    Ours(Redlock, LockOptions, Flavour),
    Peer(rslock::LockManager),
}

/// How redlock is called.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `acquire`, then `release` of the guard.
    Guard,
    /// The same, with fencing off.
    Unfenced,
    /// `Guard`, on an engine with a rejoin delay (nodes that have waited it out).
    Gated,
    /// `lock`: the function runs under the lock, extended in the background.
    Scoped,
}

impl System {
    pub fn name(&self) -> &'static str {
        match self {
            System::Floor(floor) if floor.script_acquire => "floor, script acquire",
            System::Floor(_) => "floor (fred SET NX + script)",
            System::Ours(_, _, Flavour::Guard) => "redlock",
            System::Ours(_, _, Flavour::Unfenced) => "redlock, fencing off",
            System::Ours(_, _, Flavour::Gated) => "redlock, rejoin gate",
            System::Ours(_, _, Flavour::Scoped) => "redlock, lock()",
            System::Peer(_) => "rslock",
        }
    }

    /// Takes `resource` and gives it back, as the system's users would.
    pub async fn cycle(&self, resource: &str, ttl: Duration) -> Result<(), String> {
        if let System::Ours(engine, options, Flavour::Scoped) = self {
            return engine
                .lock_with(resource, options.clone(), |_ctx| async {})
                .await
                .map_err(|e| e.to_string());
        }
        let held = self.acquire(resource, ttl).await?;
        self.release(held).await;
        Ok(())
    }

    /// Acquires `resource`, waiting for it if need be.
    pub async fn acquire(&self, resource: &str, ttl: Duration) -> Result<Held, String> {
        match self {
            System::Floor(floor) => {
                let key = Key::from(resource);
                let value = Value::from(format!("{:032x}", rand_u128()));
                let ttl_ms = ttl.as_millis() as i64;
                let ttl = Expiration::PX(ttl_ms);
                let granted = if floor.script_acquire {
                    let ms = Value::Integer(ttl_ms);
                    let replies = join_all(floor.clients.iter().map(|c| {
                        c.evalsha::<i64, _, _, _>(
                            floor.acquire.sha1().clone(),
                            key.clone(),
                            vec![value.clone(), ms.clone()],
                        )
                    }))
                    .await;
                    replies.iter().filter(|r| matches!(r, Ok(1))).count()
                } else {
                    let replies = join_all(floor.clients.iter().map(|c| {
                        c.set::<Option<String>, _, _>(
                            key.clone(),
                            value.clone(),
                            Some(ttl.clone()),
                            Some(SetOptions::NX),
                            false,
                        )
                    }))
                    .await;
                    replies.iter().filter(|r| matches!(r, Ok(Some(_)))).count()
                };
                if granted >= floor.quorum {
                    Ok(Held::Floor(key, value))
                } else {
                    Err("floor: no quorum".to_owned())
                }
            }
            System::Ours(engine, options, _) => engine
                .acquire(&[resource], options.clone())
                .await
                .map(Held::Ours)
                .map_err(|e| e.to_string()),
            System::Peer(manager) => manager
                .acquire(resource.as_bytes(), ttl)
                .await
                .map(Held::Peer)
                .map_err(|e| e.to_string()),
        }
    }

    pub async fn release(&self, held: Held) {
        match (self, held) {
            (System::Floor(floor), Held::Floor(key, value)) => {
                join_all(floor.clients.iter().map(|c| {
                    c.evalsha::<i64, _, _, _>(
                        floor.release.sha1().clone(),
                        key.clone(),
                        value.clone(),
                    )
                }))
                .await;
            }
            (System::Ours(..), Held::Ours(lock)) => {
                let _ = lock.release().await;
            }
            (System::Peer(_), Held::Peer(guard)) => guard.release().await,
            _ => unreachable!("a lock is released by the system that took it"),
        }
    }
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (u128::from(h.finish()) << 64)
        | u128::from(
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
        )
}
