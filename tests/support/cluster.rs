//! A Redis Cluster of real `redis-server` processes, for a lock node that
//! is a cluster.

use std::process::{Command, Stdio};
use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use super::{eventually, spare_port, RedisServer};

/// Primaries, each with as many replicas, the hash slots split between
/// the primaries.
pub struct Cluster {
    pub servers: Vec<RedisServer>,
}

impl Cluster {
    /// Starts `primaries` (at least 3) cluster-enabled servers with
    /// `replicas` each, joins them with `redis-cli --cluster create`, and
    /// waits until every one of them reports the cluster ready. A primary
    /// that stops answering for 1 s counts as failed.
    pub async fn start(primaries: usize, replicas: usize) -> Cluster {
        let servers: Vec<RedisServer> = (0..primaries * (1 + replicas))
            .map(|_| {
                // The bus port is given: the default, port + 10,000, may
                // be taken or past 65,535.
                let bus = spare_port().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                ])
            })
            .collect();
        let cli = std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned());
        let status = Command::new(cli)
            .args(["--cluster", "create"])
            .args(servers.iter().map(|s| format!("127.0.0.1:{}", s.port())))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("run redis-cli (it comes with redis-server; or set REDIS_CLI)");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster_info = CustomCommand::new_static("CLUSTER", ClusterHash::Random, false);
        let info = CustomCommand::new_static("INFO", ClusterHash::Random, false);
        for server in &servers {
            let client = server.client().await;
            eventually(Duration::from_secs(30), || async {
                let state: String = client
                    .custom(cluster_info.clone(), vec!["INFO"])
                    .await
                    .map_err(|e| e.to_string())?;
                // A replica can take over only once it has its primary's data.
                let replication: String = client
                    .custom(info.clone(), vec!["replication"])
                    .await
                    .map_err(|e| e.to_string())?;
                let synced = replication.contains("role:master")
                    || replication.contains("master_link_status:up");
                match state.contains("cluster_state:ok") && synced {
                    true => Ok(()),
                    false => Err(format!("port {}: {state}\n{replication}", server.port())),
                }
            })
            .await;
            let _ = client.quit().await;
        }
        Cluster { servers }
    }

    /// `redis-cluster://` with every server.
    pub fn url(&self) -> String {
        let ports: Vec<u16> = self.servers.iter().map(RedisServer::port).collect();
        let others: Vec<String> = ports[1..]
            .iter()
            .map(|p| format!("node=127.0.0.1:{p}"))
            .collect();
        format!(
            "redis-cluster://127.0.0.1:{}?{}",
            ports[0],
            others.join("&")
        )
    }

    /// Whether each server is a primary now.
    pub async fn primaries(&self) -> Vec<bool> {
        let role = CustomCommand::new_static("ROLE", ClusterHash::Random, false);
        let mut primaries = Vec::new();
        for server in &self.servers {
            let client = server.client().await;
            let reply: Vec<Value> = client
                .custom(role.clone(), Vec::<String>::new())
                .await
                .unwrap();
            primaries.push(reply.first().and_then(Value::as_str).as_deref() == Some("master"));
            let _ = client.quit().await;
        }
        primaries
    }

    /// How many keys each server holds.
    pub async fn key_counts(&self) -> Vec<i64> {
        let dbsize = CustomCommand::new_static("DBSIZE", ClusterHash::Random, false);
        let mut counts = Vec::new();
        for server in &self.servers {
            let client = server.client().await;
            counts.push(
                client
                    .custom(dbsize.clone(), Vec::<String>::new())
                    .await
                    .unwrap(),
            );
            let _ = client.quit().await;
        }
        counts
    }

    /// How many subscribers each running server has on `channel`.
    pub async fn subscribers(&self, channel: &str) -> Vec<i64> {
        let mut counts = Vec::new();
        for server in &self.servers {
            // A killed server has none.
            if server.pid().is_none() {
                counts.push(0);
                continue;
            }
            let client = server.client().await;
            counts.push(super::subscribers(&client, channel).await);
            let _ = client.quit().await;
        }
        counts
    }
}
