//! A Redis node: an independent server reached through its own fred client,
//! running the lock scripts.

use fred::clients::{Client, SubscriberClient};
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::scripts::Script;
use fred::types::{Builder, Key, Value};

use super::{ConnectSettings, NodeResult};
use crate::scripts;

/// A Redis server as a lock node.
pub(crate) struct RedisNode {
    client: Client,
    /// A second connection, for release notifications (see `wakeup`).
    pub subscriber: SubscriberClient,
    scripts: Scripts,
}

struct Scripts {
    acquire: Script,
    extend: Script,
    release: Script,
    fence: Script,
}

impl RedisNode {
    /// Parses `url` and builds a client for it, without connecting.
    pub fn new(url: &str, settings: &ConnectSettings) -> Result<RedisNode, String> {
        let tls = url.starts_with("rediss:");
        if tls && cfg!(not(feature = "tls")) {
            return Err(
                "rediss:// needs TLS support: enable the `tls` feature of redlock-core".to_owned(),
            );
        }
        #[allow(unused_mut)]
        let mut config = Config::from_url(url).map_err(|e| {
            format!(
                "{}; write it as redis://[user:password@]host:port[/db]",
                e.details()
            )
        })?;
        #[cfg(feature = "tls")]
        if let (true, Some(connector)) = (tls, &settings.tls) {
            config.tls = Some(connector.clone().into());
        }
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = settings.connect_timeout;
                c.internal_command_timeout = settings.connect_timeout;
                // A lock command is either answered quickly or voted as failed;
                // resending it after a reconnect only delays the verdict.
                c.max_command_attempts = 1;
            })
            // Keep reconnecting forever, at most once a second, so a restarted node rejoins.
            .set_policy(ReconnectPolicy::new_exponential(0, 20, 1_000, 2));
        let client = builder.build().map_err(|e| e.details().to_owned())?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| e.details().to_owned())?;
        Ok(RedisNode {
            client,
            subscriber,
            scripts: Scripts {
                acquire: Script::from_lua(scripts::ACQUIRE),
                extend: Script::from_lua(scripts::EXTEND),
                release: Script::from_lua(scripts::RELEASE),
                fence: Script::from_lua(scripts::FENCE),
            },
        })
    }

    /// Connects, and loads the scripts so the first lock does not pay for it.
    pub async fn connect(&self) -> NodeResult<()> {
        self.client.init().await.map_err(describe)?;
        self.subscriber.init().await.map_err(describe)?;
        // Re-subscribes after a reconnect.
        drop(self.subscriber.manage_subscriptions());
        for script in [
            &self.scripts.acquire,
            &self.scripts.extend,
            &self.scripts.release,
            &self.scripts.fence,
        ] {
            script.load(&self.client).await.map_err(describe)?;
        }
        Ok(())
    }

    /// Closes the connections (best effort).
    pub async fn quit(&self) {
        let _ = self.client.quit().await;
        let _ = self.subscriber.quit().await;
    }

    /// See [`Node::acquire`](super::Node::acquire).
    pub async fn acquire(
        &self,
        keys: &[Key],
        locks: usize,
        value: &Value,
        ttl_ms: u64,
    ) -> NodeResult<Option<u64>> {
        let args = vec![value.clone(), int_arg(ttl_ms), int_arg(locks as u64)];
        self.run(&self.scripts.acquire, keys, args)
            .await
            .map(|token| u64::try_from(token).ok())
    }

    /// See [`Node::fence`](super::Node::fence).
    pub async fn fence(&self, counters: &[Key], token: u64) -> NodeResult<()> {
        let args = vec![int_arg(token)];
        self.run(&self.scripts.fence, counters, args)
            .await
            .map(drop)
    }

    /// Resets the TTL of all `keys` if they all hold `value`: false when any is gone.
    pub async fn extend(&self, keys: &[Key], value: &Value, ttl_ms: u64) -> NodeResult<bool> {
        let args = vec![value.clone(), int_arg(ttl_ms)];
        self.run(&self.scripts.extend, keys, args)
            .await
            .map(|n| n == 1)
    }

    /// Deletes the `keys` that hold `value`; returns how many did.
    pub async fn release(&self, keys: &[Key], value: &Value) -> NodeResult<u64> {
        self.run(&self.scripts.release, keys, vec![value.clone()])
            .await
            .map(|n| n.max(0) as u64)
    }

    async fn run(&self, script: &Script, keys: &[Key], args: Vec<Value>) -> NodeResult<i64> {
        // A node that is reconnecting cannot answer in time; say so instead of queueing.
        if !self.client.is_connected() {
            return Err("not connected (reconnecting)".to_owned());
        }
        let keys = keys.to_vec();
        match self
            .client
            .evalsha::<i64, _, _, _>(script.sha1().clone(), keys.clone(), args.clone())
            .await
        {
            // A restarted node has an empty script cache.
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                script.load(&self.client).await.map_err(describe)?;
                self.client
                    .evalsha(script.sha1().clone(), keys, args)
                    .await
                    .map_err(describe)
            }
            result => result.map_err(describe),
        }
    }
}

fn int_arg(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A node error as the user should read it, with a hint for the known traps.
fn describe(e: FredError) -> String {
    let details = e.details();
    if details.contains("WRONGTYPE") {
        format!(
            "{details} (a lock key collides with application data of another type: \
             choose another `app` name or resource)"
        )
    } else if details.contains("CROSSSLOT") {
        format!(
            "{details} (a multi-resource lock on Redis Cluster needs all keys in one hash slot)"
        )
    } else {
        format!("{:?}: {details}", e.kind())
    }
}
