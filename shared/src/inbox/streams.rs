//! The live stream's Redis state, shared by every API process: one-use stream tickets and the
//! per-user count of open streams.
//!
//! Keys under `<prefix>:inbox:`:
//! - `ticket:<sha256 of the ticket>` → `<project>:<user>`, expiring after the ticket's life
//!   (30 s by default); redeemed with `GETDEL`, so a ticket opens one stream at most. The
//!   ticket itself is never stored or logged.
//! - `streams:<project>:<user>`: sorted set of the user's open streams (member: a stream id,
//!   score: when its lease ends). A stream renews its lease on every keep-alive; a process that
//!   dies leaves leases that expire on their own, so a crash never locks a user out.

use std::time::Duration;

use redis::Script;

use crate::redis_client::RedisConn;
use uuid::Uuid;

use crate::queue::Queues;

/// Tickets and open-stream slots.
#[derive(Clone)]
pub struct StreamStore {
    conn: RedisConn,
    prefix: String,
    open: std::sync::Arc<Script>,
    refresh: std::sync::Arc<Script>,
}

impl std::fmt::Debug for StreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl StreamStore {
    /// The store on the queues' Redis connection and prefix.
    pub fn new(queues: &Queues) -> Self {
        Self {
            conn: queues.connection(),
            prefix: format!("{}:inbox:", queues.prefix()),
            open: std::sync::Arc::new(Script::new(include_str!("open_stream.lua"))),
            refresh: std::sync::Arc::new(Script::new(include_str!("refresh_stream.lua"))),
        }
    }

    fn ticket_key(&self, ticket: &str) -> String {
        format!(
            "{}ticket:{}",
            self.prefix,
            crate::secrets::token_hash(ticket)
        )
    }

    fn slots_key(&self, project_id: Uuid, user_id: Uuid) -> String {
        format!("{}streams:{project_id}:{user_id}", self.prefix)
    }

    /// A new one-use ticket for the user's stream, valid for `ttl`.
    pub async fn issue_ticket(
        &self,
        project_id: Uuid,
        user_id: Uuid,
        ttl: Duration,
    ) -> redis::RedisResult<String> {
        let ticket = crate::secrets::new_token();
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.ticket_key(&ticket))
            .arg(format!("{project_id}:{user_id}"))
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .arg("NX")
            .query_async::<()>(&mut conn)
            .await?;
        Ok(ticket)
    }

    /// The (project, user) a ticket was issued for, consuming it; None when unknown, used or
    /// expired.
    pub async fn redeem_ticket(&self, ticket: &str) -> redis::RedisResult<Option<(Uuid, Uuid)>> {
        let mut conn = self.conn.clone();
        let value: Option<String> = redis::cmd("GETDEL")
            .arg(self.ticket_key(ticket))
            .query_async(&mut conn)
            .await?;
        Ok(value.and_then(|v| {
            let (p, u) = v.split_once(':')?;
            Some((Uuid::parse_str(p).ok()?, Uuid::parse_str(u).ok()?))
        }))
    }

    /// Takes one of the user's `cap` stream slots for `stream_id` for `lease`; false at the cap.
    pub async fn open_slot(
        &self,
        project_id: Uuid,
        user_id: Uuid,
        stream_id: Uuid,
        cap: u32,
        lease: Duration,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let taken: i64 = self
            .open
            .key(self.slots_key(project_id, user_id))
            .arg(cap)
            .arg(stream_id.to_string())
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(taken == 1)
    }

    /// Renews the lease of an open stream's slot.
    pub async fn refresh_slot(
        &self,
        project_id: Uuid,
        user_id: Uuid,
        stream_id: Uuid,
        lease: Duration,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        self.refresh
            .key(self.slots_key(project_id, user_id))
            .arg(stream_id.to_string())
            .arg(lease.as_millis() as u64)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
    }

    /// Gives a stream's slot back.
    pub async fn close_slot(
        &self,
        project_id: Uuid,
        user_id: Uuid,
        stream_id: Uuid,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("ZREM")
            .arg(self.slots_key(project_id, user_id))
            .arg(stream_id.to_string())
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
    }

    /// How many streams the user has open (leases not expired).
    pub async fn open_count(&self, project_id: Uuid, user_id: Uuid) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let now = secs * 1000 + micros / 1000;
        redis::cmd("ZCOUNT")
            .arg(self.slots_key(project_id, user_id))
            .arg(now)
            .arg("+inf")
            .query_async(&mut conn)
            .await
    }
}
