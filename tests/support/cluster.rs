//! A Redis Cluster of real `redis-server` processes, for a lock node that
//! is a cluster.

use std::process::{Command, Stdio};
use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use super::{eventually, spare_port, RedisServer};

/// Primaries without replicas, the hash slots split between them.
pub struct Cluster {
    pub servers: Vec<RedisServer>,
}

impl Cluster {
    /// Starts `n` (at least 3) cluster-enabled servers, joins them with
    /// `redis-cli --cluster create`, and waits until every one of them
    /// reports the cluster ready.
    pub async fn start(n: usize) -> Cluster {
        let servers: Vec<RedisServer> = (0..n)
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
                ])
            })
            .collect();
        let cli = std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned());
        let status = Command::new(cli)
            .args(["--cluster", "create"])
            .args(servers.iter().map(|s| format!("127.0.0.1:{}", s.port())))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("run redis-cli (it comes with redis-server; or set REDIS_CLI)");
        assert!(status.success(), "redis-cli --cluster create failed");
        let info = CustomCommand::new_static("CLUSTER", ClusterHash::Random, false);
        for server in &servers {
            let client = server.client().await;
            eventually(Duration::from_secs(30), || async {
                let info: String = client
                    .custom(info.clone(), vec!["INFO"])
                    .await
                    .map_err(|e| e.to_string())?;
                match info.contains("cluster_state:ok") {
                    true => Ok(()),
                    false => Err(format!("port {}: {info}", server.port())),
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

    /// How many subscribers each server has on `channel`.
    pub async fn subscribers(&self, channel: &str) -> Vec<i64> {
        let mut counts = Vec::new();
        for server in &self.servers {
            let client = server.client().await;
            counts.push(super::subscribers(&client, channel).await);
            let _ = client.quit().await;
        }
        counts
    }
}
