//! The Redis client every part of Comet uses: one Redis server, or a Redis Cluster.
//!
//! `REDIS_URL` says which (`config::stores`): `redis://host:port` is one server;
//! `redis+cluster://host1:port1,host2:port2` (user and password before the first host apply to
//! every node) is a cluster reached through those seed nodes.
//!
//! This module owns the differences, so the rest of the code does not see them:
//! - [`RedisConn`] is a `ConnectionLike`: a lazily connected, reconnecting `ConnectionManager`
//!   on one server; on a cluster, the cluster connection, which routes each command to the
//!   master of its key's slot, follows `MOVED`/`ASK` and refreshes the slot map after a
//!   failover. A pipeline whose commands span slots is split per slot on a cluster and its
//!   replies put back in order (each part runs on its own node; a `MULTI` pipeline must stay
//!   on one slot, and every one of Comet's does: queue keys share `{queue}`, a user's session
//!   keys share `{u:<user>}`).
//! - [`RedisClient::subscribe`]: a pub/sub subscription as a stream of messages. Queue wake-ups
//!   are [`Channel::Sharded`]: `SSUBSCRIBE` on a cluster (the message stays on the queue's
//!   shard; the scripts publish with `SPUBLISH`), a plain `SUBSCRIBE` on one server. The other
//!   channels (outbox wake, project changes, the inbox's pattern) are classic pub/sub, which a
//!   cluster broadcasts to every node.
//! - [`RedisConn::scan`]: `SCAN` over every master of a cluster, one cursor for the whole walk.

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use redis::{
    Cmd, ErrorKind, Msg, Pipeline, PushKind, RedisError, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr},
};
use tokio::sync::OnceCell;

/// The scheme of a cluster `REDIS_URL`.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// How long to wait for a connection and for a reply, on one server and on a cluster.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where Redis is: one server, or a cluster's seed nodes.
#[derive(Clone)]
pub enum RedisClient {
    /// One Redis server.
    Single(redis::Client),
    /// A Redis Cluster: its seed nodes' URLs (one `redis://` URL each).
    Cluster(Arc<Vec<String>>),
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the URL: it may hold a password
        match self {
            Self::Single(_) => f.write_str("RedisClient::Single"),
            Self::Cluster(seeds) => write!(f, "RedisClient::Cluster({} seeds)", seeds.len()),
        }
    }
}

/// A pub/sub channel to subscribe to.
#[derive(Debug, Clone)]
pub enum Channel {
    /// A classic channel (`SUBSCRIBE`; a cluster broadcasts its messages to every node).
    Plain(String),
    /// A pattern (`PSUBSCRIBE`).
    Pattern(String),
    /// A channel published with `SPUBLISH` on a cluster (`SSUBSCRIBE`, on the master of its
    /// slot); a plain channel on one server.
    Sharded(String),
}

impl RedisClient {
    /// Parses `url`: a `redis+cluster://` URL with comma-separated hosts is a cluster,
    /// anything else one server.
    pub fn open(url: &str) -> RedisResult<Self> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            return Ok(Self::Single(redis::Client::open(url)?));
        };
        let seeds = cluster_seeds("redis://", rest)?;
        // each seed must parse, and a client must build from them
        ClusterClient::new(seeds.clone())?;
        Ok(Self::Cluster(Arc::new(seeds)))
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A connection that connects on its first command and reconnects by itself, so a process
    /// starts (and stays up) while Redis is down.
    pub fn connection(&self) -> RedisResult<RedisConn> {
        match self {
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(2))
                    .set_number_of_retries(2);
                Ok(RedisConn::Single(ConnectionManager::new_lazy_with_config(
                    client.clone(),
                    config,
                )?))
            }
            Self::Cluster(seeds) => Ok(RedisConn::Cluster(Arc::new(LazyCluster {
                client: cluster_builder(seeds).build()?,
                conn: OnceCell::new(),
            }))),
        }
    }

    /// A subscription on a connection of its own, as a stream of messages. The stream ends when
    /// a connection it listens on is lost (on a cluster also when a node gives up a channel's
    /// slot, a failover): subscribe again, and catch up on what may have been missed meanwhile.
    pub async fn subscribe(
        &self,
        channels: &[Channel],
    ) -> RedisResult<impl Stream<Item = Msg> + Send + use<>> {
        match self {
            Self::Single(client) => {
                let mut pubsub = client.get_async_pubsub().await?;
                for channel in channels {
                    match channel {
                        Channel::Plain(c) | Channel::Sharded(c) => pubsub.subscribe(c).await?,
                        Channel::Pattern(p) => pubsub.psubscribe(p).await?,
                    }
                }
                Ok(pubsub.into_on_message().left_stream())
            }
            Self::Cluster(seeds) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let client = cluster_builder(seeds)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .build()?;
                let mut conn = client.get_async_connection().await?;
                for channel in channels {
                    match channel {
                        Channel::Plain(c) => conn.subscribe(c).await?,
                        Channel::Pattern(p) => conn.psubscribe(p).await?,
                        Channel::Sharded(c) => conn.ssubscribe(c).await?,
                    }
                }
                // The connection lives as long as the stream: dropping it ends the subscription.
                // The stream ends on a lost node connection or a server-side unsubscribe (a
                // node giving up the channel's slot; Comet never unsubscribes): the client
                // re-subscribes only on its old slot map, so the caller subscribes again with
                // a fresh client, which reads the cluster's current one, and catches up.
                let messages = futures::stream::unfold((rx, conn), |(mut rx, conn)| async move {
                    let push = rx.recv().await?;
                    match push.kind {
                        PushKind::Disconnection
                        | PushKind::Unsubscribe
                        | PushKind::SUnsubscribe
                        | PushKind::PUnsubscribe => None,
                        _ => Some((Msg::from_push_info(push), (rx, conn))),
                    }
                })
                .filter_map(|msg| async move { msg });
                Ok(messages.right_stream())
            }
        }
    }
}

/// The seed URLs of a cluster URL's remainder: `[user[:password]@]host:port,host:port[/...]`.
fn cluster_seeds(scheme: &str, rest: &str) -> RedisResult<Vec<String>> {
    let invalid = |what: &'static str| RedisError::from((ErrorKind::InvalidClientConfig, what));
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let (hosts, tail) = match hosts.find(['/', '?']) {
        Some(i) => hosts.split_at(i),
        None => (hosts, ""),
    };
    let seeds: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}{auth}{h}{tail}"))
        .collect();
    if seeds.is_empty() {
        return Err(invalid("a cluster URL names no node"));
    }
    Ok(seeds)
}

fn cluster_builder(seeds: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        // a failover takes a few seconds (cluster-node-timeout plus the election): the
        // client's retries with backoff span it
        .retries(8)
        .min_retry_wait(50)
        .max_retry_wait(1000)
}

/// A cluster connection made on first use (and then shared by every clone).
pub struct LazyCluster {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

/// A connection to Redis (one server or a cluster); cheap to clone, shared by every task.
#[derive(Clone)]
pub enum RedisConn {
    /// One server.
    Single(ConnectionManager),
    /// A cluster.
    Cluster(Arc<LazyCluster>),
}

impl RedisConn {
    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// One step of a `SCAN` for keys matching `pattern` (`COUNT` hint `count`) from `cursor` (0
    /// to start): the next cursor (0 when the walk is over) and the keys found. On a cluster
    /// the walk visits each master in turn; its cursor packs the master's index (in the
    /// masters sorted by address) in the low 8 bits. A failover during a walk can make it skip
    /// or repeat keys, as `SCAN` may during a resize: callers tolerate both.
    pub async fn scan(
        &mut self,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> RedisResult<(u64, Vec<String>)> {
        let mut scan = redis::cmd("SCAN");
        match self {
            Self::Single(conn) => {
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(count);
                scan.query_async(conn).await
            }
            Self::Cluster(lazy) => {
                let mut conn = lazy.get().await?;
                let masters = masters(&mut conn).await?;
                let (node, node_cursor) = ((cursor & 0xff) as usize, cursor >> 8);
                let Some((host, port)) = masters.get(node).cloned() else {
                    // the cluster has fewer masters than when the walk began: start again
                    return Ok((0, Vec::new()));
                };
                scan.arg(node_cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(count);
                let routing =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                let reply = conn.route_command(scan, routing).await?;
                let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply)?;
                let next = if next != 0 {
                    (next << 8) | node as u64
                } else if node + 1 < masters.len() {
                    (node + 1) as u64
                } else {
                    0
                };
                Ok((next, keys))
            }
        }
    }

    /// Whether Redis answers: one server's `PING`; on a cluster, a `PING` to any master (the
    /// client's own routing sends it to every node, so one master down, the moment of a
    /// failover, would make every process unready at once).
    pub async fn ping(&mut self) -> RedisResult<()> {
        match self {
            Self::Single(conn) => redis::cmd("PING").query_async(conn).await,
            Self::Cluster(lazy) => {
                let mut conn = lazy.get().await?;
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
                conn.route_command(redis::cmd("PING"), routing)
                    .await
                    .map(|_| ())
            }
        }
    }
}

/// The cluster's masters, from `CLUSTER NODES` (masters not flagged failed), sorted.
async fn masters(conn: &mut ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    let reply = conn
        .route_command(
            redis::cmd("CLUSTER").arg("NODES").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
        )
        .await?;
    let text: String = redis::from_redis_value(reply)?;
    let mut out: Vec<(String, u16)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let addr = fields.nth(1)?;
            let flags = fields.next()?;
            let is_master = flags.split(',').any(|f| f == "master");
            let failed = flags.split(',').any(|f| f == "fail" || f == "fail?");
            if !is_master || failed {
                return None;
            }
            // `host:port@cport[,hostname]`
            let hostport = addr.split(['@', ',']).next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The slot a command's key is in, if it has one Comet's pipelines route by: the first key of
/// a script call, else the first argument after the command's name. `None` for commands with
/// no key (`TIME`, `PUBLISH`).
fn slot_of(cmd: &Cmd) -> Option<Slot> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            redis::Arg::Simple(s) => s,
            _ => b"0".as_slice(),
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let numkeys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if numkeys == 0 {
                return None;
            }
            args.get(3)?
        }
        b"TIME" | b"PING" | b"PUBLISH" | b"INFO" | b"SCRIPT" | b"CLUSTER" | b"DBSIZE" | b"WAIT" => {
            return None;
        }
        _ => args.get(1)?,
    };
    Some(Slot::for_key(key))
}

/// Where a pipeline part goes: its slot's master, or any master for keyless commands.
fn route_to(slot: Option<Slot>) -> SingleNodeRoutingInfo {
    match slot {
        Some(slot) => SingleNodeRoutingInfo::SpecificNode(Route::with_slot(slot, SlotAddr::Master)),
        None => SingleNodeRoutingInfo::RandomPrimary,
    }
}

/// Runs a pipeline on a cluster: as it is when it is a transaction or its keyed commands share
/// one slot, else split by slot (the parts concurrently) with the replies put back in order.
async fn cluster_pipeline(
    lazy: &LazyCluster,
    pipe: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    let mut conn = lazy.get().await?;
    let slots: Vec<Option<Slot>> = pipe.cmd_iter().map(slot_of).collect();
    let first = slots.iter().flatten().next().copied();
    let one_slot = slots.iter().flatten().all(|s| Some(*s) == first);
    if pipe.is_transaction() {
        return conn.req_packed_commands(pipe, offset, count).await;
    }
    // routed explicitly: the client's own routing would take a `PUBLISH`'s channel for a key
    if one_slot {
        return conn
            .route_pipeline(pipe.clone(), offset, count, route_to(first))
            .await;
    }
    // keyless commands go with the first slot's part
    let mut parts: Vec<(Option<Slot>, Pipeline, Vec<usize>)> = Vec::new();
    for (i, (cmd, slot)) in pipe.cmd_iter().zip(&slots).enumerate() {
        let slot = slot.or(first);
        let part = match parts.iter_mut().position(|(s, _, _)| *s == slot) {
            Some(p) => &mut parts[p],
            None => {
                parts.push((slot, redis::pipe(), Vec::new()));
                parts.last_mut().expect("just pushed")
            }
        };
        part.1.add_command(cmd.clone());
        part.2.push(i);
    }
    let replies = futures::future::try_join_all(parts.iter().map(|(slot, part, _)| {
        let mut conn = conn.clone();
        async move {
            conn.route_pipeline(part.clone(), 0, part.len(), route_to(*slot))
                .await
        }
    }))
    .await?;
    let mut out = vec![Value::Nil; slots.len()];
    for ((_, _, indices), values) in parts.iter().zip(replies) {
        for (i, v) in indices.iter().zip(values) {
            out[*i] = v;
        }
    }
    Ok(out.into_iter().skip(offset).take(count).collect())
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipe, offset, count),
            Self::Cluster(lazy) => Box::pin(cluster_pipeline(lazy, pipe, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_gives_one_seed_per_host_with_the_credentials() {
        let seeds = cluster_seeds("redis://", "u:p@a:7000, b:7001/?protocol=3").unwrap();
        assert_eq!(
            seeds,
            [
                "redis://u:p@a:7000/?protocol=3",
                "redis://u:p@b:7001/?protocol=3"
            ]
        );
        assert!(cluster_seeds("redis://", " , ").is_err());
        assert!(
            RedisClient::open("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
                .unwrap()
                .is_cluster()
        );
        assert!(
            !RedisClient::open("redis://127.0.0.1:6379")
                .unwrap()
                .is_cluster()
        );
        assert!(RedisClient::open("redis+cluster://").is_err());
    }

    #[test]
    fn pipelines_are_split_by_the_slot_of_each_commands_key() {
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("abc").arg(1).arg("p:{q}:").arg("x");
        assert_eq!(slot_of(&eval), Some(Slot::for_key("q")));
        let mut get = redis::cmd("HGET");
        get.arg("p:{q}:job:1").arg("state");
        assert_eq!(slot_of(&get), Some(Slot::for_key("q")));
        assert_eq!(slot_of(&redis::cmd("TIME")), None);
        let mut none = redis::cmd("EVALSHA");
        none.arg("abc").arg(0);
        assert_eq!(slot_of(&none), None);
    }
}
