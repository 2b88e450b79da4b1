//! A private Redis Cluster for tests and `comet-chaos`: 3 masters and 3 replicas started from
//! the `redis-server` binary on free ports (`--cluster-enabled yes`, `redis-cli --cluster
//! create`), in a temporary directory, stopped when dropped. No persistence;
//! `cluster-node-timeout` 2 s, so a dead master's replica takes over in 3-5 s.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::eventually;

/// A private Redis Cluster of 3 masters and 3 replicas (see the module).
pub struct PrivateCluster {
    _dir: tempfile::TempDir,
    nodes: Vec<(u16, Option<Child>)>,
}

impl PrivateCluster {
    /// Starts the six nodes, creates the cluster and waits until every node says it is ok.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a directory for the cluster");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            nodes.push((port, Some(spawn_node(dir.path(), port))));
        }
        for (port, _) in &nodes {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
            eventually(Duration::from_secs(10), "a cluster node answers", || {
                let client = client.clone();
                async move {
                    let mut c = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("PING").query_async::<String>(&mut c).await.ok()
                }
            })
            .await;
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|(p, _)| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = Self { _dir: dir, nodes };
        for (port, _) in &cluster.nodes {
            let port = *port;
            eventually(
                Duration::from_secs(30),
                "the cluster is ok",
                || async move {
                    let info: String = cluster_cmd(port, redis::cmd("CLUSTER").arg("INFO"))?;
                    info.contains("cluster_state:ok").then_some(())
                },
            )
            .await;
            // a replica that has not finished its first sync cannot take over: wait for it
            cluster.in_sync(port).await;
        }
        cluster
    }

    /// Its `REDIS_URL`, through the three first nodes.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes[..3]
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The port of the master serving `key`'s slot now (asked of a live node); none while
    /// the slot's master is failing and no replica has taken over yet.
    pub fn master_of(&self, key: &str) -> Option<u16> {
        let live = self
            .nodes
            .iter()
            .find(|(_, c)| c.is_some())
            .expect("a live node")
            .0;
        let slot: u16 = cluster_cmd(live, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .expect("CLUSTER KEYSLOT");
        let nodes: String =
            cluster_cmd(live, redis::cmd("CLUSTER").arg("NODES")).expect("CLUSTER NODES");
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            });
            if serves {
                let port = fields[1]
                    .split(['@', ','])
                    .next()
                    .and_then(|a| a.rsplit_once(':'));
                return port.and_then(|(_, p)| p.parse().ok());
            }
        }
        None
    }

    /// Starts the node on `port` again (after [`Self::kill`]): empty, it rejoins as a replica
    /// of whichever node took its slots over and syncs from it.
    pub fn restart(&mut self, port: u16) {
        let child = spawn_node(self._dir.path(), port);
        let node = self
            .nodes
            .iter_mut()
            .find(|(p, _)| *p == port)
            .expect("a node");
        node.1 = Some(child);
    }

    /// Waits (at most 30 s) until the node on `port` is a master or a replica in sync with its
    /// master.
    pub async fn in_sync(&self, port: u16) {
        eventually(
            Duration::from_secs(30),
            "the replica is in sync",
            || async move {
                let info: String = cluster_cmd(port, redis::cmd("INFO").arg("replication"))?;
                (info.contains("role:master") || info.contains("master_link_status:up"))
                    .then_some(())
            },
        )
        .await;
    }

    /// `CLUSTER NODES` as each live node sees it (for a failure's message).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (port, child) in &self.nodes {
            if child.is_some() {
                let view: Option<String> = cluster_cmd(*port, redis::cmd("CLUSTER").arg("NODES"));
                let log =
                    std::fs::read_to_string(self._dir.path().join(format!("node-{port}.log")))
                        .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(12).collect();
                out.push_str(&format!(
                    "node {port}:\n{}\nlog:\n{}\n",
                    view.unwrap_or_default(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
        }
        out
    }

    /// SIGKILLs the node on `port` (its data is gone: nothing is on disk).
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|(p, _)| *p == port)
            .expect("a node");
        if let Some(mut c) = node.1.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A cluster node on `port` (its cluster state in `dir/nodes-<port>.conf`, its log beside it).
fn spawn_node(dir: &std::path::Path, port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
        // a replica (re)joining syncs at once, not after the default 5 s wait for others
        .args(["--repl-diskless-sync-delay", "0"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--logfile", &format!("node-{port}.log")])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

/// One command to one cluster node (no redirections followed).
fn cluster_cmd<T: redis::FromRedisValue>(port: u16, cmd: &mut redis::Cmd) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    cmd.query(&mut conn).ok()
}

/// A port no one listens on now, whose cluster bus port (10,000 above it) is free too, so at
/// most 55535.
fn free_port() -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    for _ in 0..1000 {
        let port = 20_000 + rand::random::<u16>() % 35_000;
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair for a cluster node")
}
