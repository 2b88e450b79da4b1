//! Sessions, revocation and rate limits, in Redis (shared by every API process).
//!
//! Keys under `<prefix>:auth:`:
//! - `session:{u:<user>}:<jti>` hash (user, project, issued, expires, user agent, ip), expiring
//!   with the token; `user-sessions:{u:<user>}` set of the user's jtis.
//! - `revoked-jti:{u:<user>}:<jti>` (`revoked-jti:{t:<jti>}:<jti>` for a token without a user): a
//!   logged-out or revoked token, kept for its remaining life.
//!
//!   A user's session records, session set and revocation markers share the hash tag
//!   `{u:<user>}`, so the writes that touch several of them at once (`MULTI`: a login, a
//!   revocation) stay on one Redis Cluster slot. Before 2026-12-05 they had no tag
//!   (`session:<jti>`, `user-sessions:<user>`, `revoked-jti:<jti>`): those keys are still read
//!   (a revocation marker, a session) and cleaned up, outside any `MULTI`, until they expire
//!   with their tokens; [`LEGACY_KEYS_UNTIL`] says until when that reading is needed at most.
//! - `revoked-before:<user>`: "tokens issued before T (ms) are revoked", written synchronously
//!   by deactivation and role changes, kept for one token lifetime.
//! - `project-states` hash: project id → `<state>@<version>` (`active`, `suspended` or
//!   `deleted`, and the project row's `version`) for every project whose status changed; a
//!   suspended or deleted project's tokens are refused. Written by the project routes before
//!   they answer, and the blocked projects are written again from Postgres when an API process
//!   starts (a Redis that lost the hash is refilled). A write never replaces a newer version,
//!   so that refill cannot undo a change made meanwhile. Read by every token check in the same
//!   round trip as the revocations.
//! - `seen:<user>`: the 5-minute gate of activity tracking.
//! - `rate:<name>:<key>`: fixed-window rate-limit counters.
//! - `known-clients:<email hash>`: client IPs that logged in as that email (30 days).
//! - `collapse:<name>:{<key>}:gate|count`: one record per window of a noisy event, and how many
//!   were collapsed since the last record.
//! - `sweep-cursor`: where the `sweep_sessions` job's SCAN of the session sets resumes.
//!
//! Every key above expires by itself except the members of `user-sessions:<user>`: the set's
//! expiry is pushed back by each new login, so a user who logs in every day keeps a set that
//! only grows with the ids of sessions long expired. [`Sessions::sweep_session_sets`] removes
//! those ids (the `sweep_sessions` job); nothing else needs sweeping.
//!
//! Each Lua script is a `static` built on first use: `redis::Script::new` hashes its source
//! (SHA-1), which the per-request rate limits did on every call.

use std::time::Duration;

use redis::AsyncCommands;

use crate::redis_client::RedisConn;
use uuid::Uuid;

use crate::{auth::Claims, db::projects::Block, queue::Queues};

/// The longest a revocation is kept: tokens minted to live longer (`comet-api token --ttl`)
/// are revoked for this long, which Redis can store (a raw far-future `exp` overflows its
/// expiry and would fail the logout, leaving the token valid).
pub const MAX_REVOCATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// How long a revocation of a token expiring at `expires` (seconds since the epoch) must last:
/// its remaining life, at least a second, at most [`MAX_REVOCATION`].
pub fn revocation_ttl(expires: i64) -> Duration {
    let remaining = expires
        .saturating_sub(chrono::Utc::now().timestamp())
        .max(1) as u64;
    Duration::from_secs(remaining).min(MAX_REVOCATION)
}

/// The untagged session keys of releases before 2026-12-05 live at most as long as the tokens
/// they were written for: `JWT_TTL_SECS` for a login's token, longer only for tokens minted by
/// hand with `comet-api token --ttl`. Reading them can be dropped once every such token has
/// expired.
pub const LEGACY_KEYS_UNTIL: &str =
    "every token issued before the upgrade to 2026-12-05 has expired";

/// The session store.
#[derive(Clone)]
pub struct Sessions {
    conn: RedisConn,
    prefix: String,
}

/// A session record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The token id.
    pub jti: Uuid,
    /// The user.
    pub user_id: Uuid,
    /// Expiry (seconds since the epoch).
    pub expires: i64,
    /// When its token was issued (ms since the epoch).
    pub issued_ms: i64,
}

/// What a token check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not revoked.
    Valid,
    /// Logged out or revoked.
    Revoked,
    /// Its project is suspended or deleted.
    Blocked(Block),
}

/// Where a caller stands against a limit after [`Sessions::take`] (the `RateLimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Whether the actions were taken (all of them; none when refused).
    pub allowed: bool,
    /// Actions the window allows.
    pub limit: u64,
    /// Actions left in the window.
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset_secs: u64,
}

/// A refused rate-limited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Seconds until the window resets.
    pub retry_after: u64,
}

impl Sessions {
    /// The store on the queues' Redis connection.
    pub fn new(queues: &Queues) -> Self {
        Self {
            conn: queues.connection(),
            prefix: format!("{}:auth:", queues.prefix()),
        }
    }

    fn key(&self, kind: &str, id: impl std::fmt::Display) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    /// A user's session record.
    fn session_key(&self, user: Uuid, jti: Uuid) -> String {
        format!("{}session:{{u:{user}}}:{jti}", self.prefix)
    }

    /// A user's set of session ids.
    fn sessions_key(&self, user: Uuid) -> String {
        format!("{}user-sessions:{{u:{user}}}", self.prefix)
    }

    /// A token's revocation marker: tagged with its user's tag, or its own id without a user.
    fn revoked_key(&self, user: Option<Uuid>, jti: Uuid) -> String {
        match user {
            Some(u) => format!("{}revoked-jti:{{u:{u}}}:{jti}", self.prefix),
            None => format!("{}revoked-jti:{{t:{jti}}}:{jti}", self.prefix),
        }
    }

    /// A key of the untagged layout before 2026-12-05 (read until it expires).
    fn legacy_key(&self, kind: &str, id: impl std::fmt::Display) -> String {
        self.key(kind, id)
    }

    /// The time on the shared clock, Redis `TIME`, in milliseconds since the epoch. Token issue
    /// times and revocation markers are both read from it, so API hosts whose clocks disagree
    /// still agree on which tokens a revocation covers.
    pub async fn now_ms(&self) -> redis::RedisResult<i64> {
        let mut conn = self.conn.clone();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// One step of the session-set sweep: a `SCAN` from `cursor` over the `user-sessions:*`
    /// sets (`COUNT` hint `count`), removing from each the ids whose session record is gone
    /// (expired with its token, or revoked). Returns the next cursor (0: the scan went round),
    /// the sets examined and the ids removed. Bounded by `count`, never `KEYS`; an id found
    /// dead cannot come back (ids are never reused, and a login writes its record and its set
    /// member in one transaction), so removing it races with nothing.
    pub async fn sweep_session_sets(
        &self,
        cursor: u64,
        count: usize,
    ) -> redis::RedisResult<(u64, u64, u64)> {
        let mut conn = self.conn.clone();
        // on a cluster, the walk goes over each master in turn (`RedisConn::scan`)
        let pattern = format!("{}user-sessions:*", self.prefix);
        let (next, keys) = conn.scan(cursor, &pattern, count).await?;
        let mut removed = 0;
        let set_prefix = format!("{}user-sessions:", self.prefix);
        for key in &keys {
            let jtis: Vec<String> = conn.smembers(key).await?;
            if jtis.is_empty() {
                continue;
            }
            // `{u:<user>}`: the tagged layout; anything else: a legacy set, of legacy records
            let user = key
                .strip_prefix(&set_prefix)
                .and_then(|rest| rest.strip_prefix("{u:"))
                .and_then(|rest| rest.strip_suffix('}'))
                .and_then(|u| Uuid::parse_str(u).ok());
            let mut pipe = redis::pipe();
            for jti in &jtis {
                pipe.exists(match (user, Uuid::parse_str(jti)) {
                    (Some(u), Ok(j)) => self.session_key(u, j),
                    _ => self.legacy_key("session", jti),
                });
            }
            let alive: Vec<bool> = pipe.query_async(&mut conn).await?;
            let dead: Vec<&String> = jtis
                .iter()
                .zip(alive)
                .filter(|(_, alive)| !alive)
                .map(|(j, _)| j)
                .collect();
            if !dead.is_empty() {
                let n: u64 = conn.srem(key, dead).await?;
                removed += n;
            }
        }
        Ok((next, keys.len() as u64, removed))
    }

    /// Where the session-set sweep resumes (0: from the start).
    pub async fn sweep_cursor(&self) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let c: Option<u64> = conn.get(format!("{}sweep-cursor", self.prefix)).await?;
        Ok(c.unwrap_or(0))
    }

    /// Stores where the session-set sweep resumes (kept a day: a lost cursor restarts the
    /// scan, which is harmless).
    pub async fn set_sweep_cursor(&self, cursor: u64) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        conn.set_ex(format!("{}sweep-cursor", self.prefix), cursor, 86_400)
            .await
    }

    /// Records a new session for a freshly minted token.
    pub async fn create(
        &self,
        claims: &Claims,
        user_id: Uuid,
        user_agent: &str,
        ip: &str,
    ) -> redis::RedisResult<()> {
        let ttl = (claims.exp - claims.iat).max(1);
        let mut conn = self.conn.clone();
        let record = self.session_key(user_id, claims.jti);
        let set = self.sessions_key(user_id);
        redis::pipe()
            .atomic()
            .hset_multiple(
                &record,
                &[
                    ("user", user_id.to_string()),
                    ("project", claims.project_id.to_string()),
                    ("issued", claims.iat.to_string()),
                    ("issued_ms", claims.iat_ms.to_string()),
                    ("expires", claims.exp.to_string()),
                    ("ua", user_agent.chars().take(256).collect()),
                    ("ip", ip.to_owned()),
                ],
            )
            .expire(&record, ttl)
            .sadd(&set, claims.jti.to_string())
            .expire(&set, ttl)
            .query_async::<()>(&mut conn)
            .await
    }

    /// The live sessions of a user.
    pub async fn of_user(&self, user_id: Uuid) -> redis::RedisResult<Vec<Session>> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        // the tagged set, then the legacy one (sessions from before 2026-12-05)
        for legacy in [false, true] {
            let set = if legacy {
                self.legacy_key("user-sessions", user_id)
            } else {
                self.sessions_key(user_id)
            };
            let jtis: Vec<String> = conn.smembers(&set).await?;
            for jti in jtis {
                let Ok(jti) = Uuid::parse_str(&jti) else {
                    continue;
                };
                let record = if legacy {
                    self.legacy_key("session", jti)
                } else {
                    self.session_key(user_id, jti)
                };
                let (expires, issued, issued_ms): (Option<i64>, Option<i64>, Option<i64>) =
                    redis::cmd("HMGET")
                        .arg(&record)
                        .arg(&["expires", "issued", "issued_ms"])
                        .query_async(&mut conn)
                        .await?;
                match expires {
                    Some(expires) => out.push(Session {
                        jti,
                        user_id,
                        expires,
                        issued_ms: issued_ms.or(issued.map(|s| s * 1000)).unwrap_or(0),
                    }),
                    None => {
                        let _: i64 = conn.srem(&set, jti.to_string()).await?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Revokes one token for its remaining life (at most [`MAX_REVOCATION`]) and deletes its
    /// session record.
    pub async fn revoke_jti(
        &self,
        user_id: Option<Uuid>,
        jti: Uuid,
        expires: i64,
    ) -> redis::RedisResult<()> {
        let remaining = revocation_ttl(expires).as_secs();
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        // one slot: the marker, the record and the set share the user's tag
        pipe.atomic()
            .set_ex(self.revoked_key(user_id, jti), 1, remaining);
        if let Some(u) = user_id {
            pipe.del(self.session_key(u, jti))
                .srem(self.sessions_key(u), jti.to_string());
        }
        pipe.query_async::<()>(&mut conn).await?;
        // a session from before 2026-12-05, untagged: cleaned up outside the MULTI; and the
        // untagged marker too, which API processes of the previous release read (a rolling
        // upgrade runs both): drop it in the release after this one
        let mut legacy = redis::pipe();
        legacy
            .set_ex(self.legacy_key("revoked-jti", jti), 1, remaining)
            .del(self.legacy_key("session", jti));
        if let Some(u) = user_id {
            legacy.srem(self.legacy_key("user-sessions", u), jti.to_string());
        }
        legacy.query_async::<()>(&mut conn).await
    }

    /// Marks every token of the user issued before `before_ms` as revoked, for `token_ttl`.
    pub async fn revoke_user_before(
        &self,
        user_id: Uuid,
        before_ms: i64,
        token_ttl: Duration,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        // never move the marker backwards (two revocations racing)
        static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                r"local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
              if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
              return 1",
            )
        });
        let _: i64 = SCRIPT
            .key(self.key("revoked-before", user_id))
            .arg(before_ms)
            .arg(token_ttl.as_secs().max(1) + 60)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Whether a token was revoked, or its project blocked (one round trip).
    pub async fn check(&self, claims: &Claims) -> redis::RedisResult<Verdict> {
        let mut conn = self.conn.clone();
        let user = Uuid::parse_str(&claims.sub).ok();
        let mut pipe = redis::pipe();
        pipe.exists(self.revoked_key(user, claims.jti));
        // a revocation written before 2026-12-05 (untagged), until it expires
        pipe.exists(self.legacy_key("revoked-jti", claims.jti));
        pipe.hget(self.states_key(), claims.project_id.to_string());
        if let Some(u) = user {
            pipe.get(self.key("revoked-before", u));
        }
        let (revoked, legacy, blocked, before): (bool, bool, Option<String>, Option<i64>) =
            if user.is_some() {
                pipe.query_async(&mut conn).await?
            } else {
                let (r, l, b): (bool, bool, Option<String>) = pipe.query_async(&mut conn).await?;
                (r, l, b, None)
            };
        if revoked || legacy || before.is_some_and(|t| claims.iat_ms < t) {
            Ok(Verdict::Revoked)
        } else if let Some(block) = blocked
            .as_deref()
            .and_then(|s| s.split_once('@'))
            .and_then(|(state, _)| Block::parse(state))
        {
            Ok(Verdict::Blocked(block))
        } else {
            Ok(Verdict::Valid)
        }
    }

    fn states_key(&self) -> String {
        format!("{}project-states", self.prefix)
    }

    /// Records a project's state as of row version `version`: `Some` refuses its tokens, `None`
    /// lets them work again, on every API process from the next request. A state already
    /// recorded with a newer version stays.
    pub async fn set_project_state(
        &self,
        project_id: Uuid,
        block: Option<Block>,
        version: i64,
    ) -> redis::RedisResult<()> {
        self.set_project_states(&[(project_id, block, version)])
            .await
    }

    /// [`Sessions::set_project_state`] for many projects (one script call per 500).
    pub async fn set_project_states(
        &self,
        states: &[(Uuid, Option<Block>, i64)],
    ) -> redis::RedisResult<()> {
        // ARGV: (project, state, version) triples
        static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                r"for i = 1, #ARGV, 3 do
                local cur = redis.call('HGET', KEYS[1], ARGV[i])
                local v = cur and tonumber(string.match(cur, '@(%-?%d+)$'))
                if not v or v <= tonumber(ARGV[i + 2]) then
                  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. '@' .. ARGV[i + 2])
                end
              end
              return 1",
            )
        });
        let mut conn = self.conn.clone();
        for chunk in states.chunks(500) {
            let mut call = SCRIPT.key(self.states_key());
            for (id, block, version) in chunk {
                call.arg(id.to_string())
                    .arg(block.map_or("active", Block::as_str))
                    .arg(*version);
            }
            let _: i64 = call.invoke_async(&mut conn).await?;
        }
        Ok(())
    }

    /// True at most once per `every` per user across all processes (`SET NX EX`).
    pub async fn activity_gate(&self, user_id: Uuid, every: Duration) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key("seen", user_id))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(every.as_secs().max(1))
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    /// Whether a fixed-window limit is already used up, without counting anything (for limits
    /// that count failures: peek first, count with [`Sessions::rate_limit`] once it failed).
    pub async fn limit_reached(
        &self,
        name: &str,
        key: &str,
        limit: &crate::config::RateLimit,
    ) -> redis::RedisResult<Result<(), Limited>> {
        let mut conn = self.conn.clone();
        let k = self.key("rate", format!("{name}:{key}"));
        let (count, pttl): (Option<u64>, i64) = redis::pipe()
            .get(&k)
            .pttl(&k)
            .query_async(&mut conn)
            .await?;
        if count.unwrap_or(0) >= limit.count {
            Ok(Err(Limited {
                retry_after: (pttl.max(0) as u64).div_ceil(1000).max(1),
            }))
        } else {
            Ok(Ok(()))
        }
    }

    /// Remembers that `client` logged in successfully as `subject` (a hashed email), for
    /// `ttl`: such a client is not held back by other clients' failures.
    pub async fn remember_client(
        &self,
        subject: &str,
        client: &str,
        ttl: Duration,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let k = self.key("known-clients", subject);
        redis::pipe()
            .sadd(&k, client)
            .expire(&k, ttl.as_secs().max(1) as i64)
            .query_async::<()>(&mut conn)
            .await
    }

    /// Whether `client` logged in successfully as `subject` within the remembered time.
    pub async fn is_known_client(&self, subject: &str, client: &str) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        conn.sismember(self.key("known-clients", subject), client)
            .await
    }

    /// Collapses a noisy event to one record per `window` and `key`: `Some(n)` for the first
    /// occurrence of a window (to be recorded, with `n` occurrences collapsed since the last
    /// record), `None` for the others (counted, to be reported with the next record).
    pub async fn collapse(
        &self,
        name: &str,
        key: &str,
        window: Duration,
    ) -> redis::RedisResult<Option<u64>> {
        static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                r"if redis.call('SET', KEYS[1], 1, 'NX', 'PX', ARGV[1]) then
                local n = tonumber(redis.call('GET', KEYS[2]) or '0')
                redis.call('DEL', KEYS[2])
                return n
              end
              redis.call('INCR', KEYS[2])
              redis.call('PEXPIRE', KEYS[2], ARGV[2])
              return -1",
            )
        });
        let mut conn = self.conn.clone();
        let n: i64 = SCRIPT
            .key(self.key("collapse", format!("{name}:{{{key}}}:gate")))
            .key(self.key("collapse", format!("{name}:{{{key}}}:count")))
            .arg(window.as_millis() as u64)
            // the count outlives a quiet window, so the next record reports it
            .arg(window.as_millis() as u64 * 60)
            .invoke_async(&mut conn)
            .await?;
        Ok(u64::try_from(n).ok())
    }

    /// Takes `cost` actions from a fixed-window limit if all fit, else none (a batch is
    /// accepted or refused whole); answers where the caller stands.
    pub async fn take(
        &self,
        name: &str,
        key: &str,
        limit: &crate::config::RateLimit,
        cost: u64,
    ) -> redis::RedisResult<Allowance> {
        static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                r"local n = tonumber(redis.call('GET', KEYS[1]) or '0')
              local cost, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
              if n + cost > limit then
                return { 0, n, redis.call('PTTL', KEYS[1]) }
              end
              n = redis.call('INCRBY', KEYS[1], cost)
              if n == cost then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
              return { 1, n, redis.call('PTTL', KEYS[1]) }",
            )
        });
        let mut conn = self.conn.clone();
        let (allowed, used, pttl): (i64, u64, i64) = SCRIPT
            .key(self.key("rate", format!("{name}:{key}")))
            .arg(limit.window.as_millis() as u64)
            .arg(cost)
            .arg(limit.count)
            .invoke_async(&mut conn)
            .await?;
        let reset_ms = if pttl > 0 {
            pttl as u64
        } else {
            limit.window.as_millis() as u64
        };
        Ok(Allowance {
            allowed: allowed == 1,
            limit: limit.count,
            remaining: limit.count.saturating_sub(used),
            reset_secs: reset_ms.div_ceil(1000).max(1),
        })
    }

    /// Counts one action against a fixed-window limit; `Err(Limited)` when over it (every
    /// attempt, refused or not, counts).
    pub async fn rate_limit(
        &self,
        name: &str,
        key: &str,
        limit: &crate::config::RateLimit,
    ) -> redis::RedisResult<Result<(), Limited>> {
        self.rate_limit_by(name, key, limit, 1).await
    }

    /// Counts `n` actions at once (at least 1: a batch) against a fixed-window limit;
    /// `Err(Limited)` when the window's count is then over it (the `n` stay counted, as a
    /// refused single action does). A batch larger than the limit's count never passes.
    pub async fn rate_limit_by(
        &self,
        name: &str,
        key: &str,
        limit: &crate::config::RateLimit,
        n: u64,
    ) -> redis::RedisResult<Result<(), Limited>> {
        static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                r"local n = redis.call('INCRBY', KEYS[1], ARGV[2])
              if n == tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
              return { n, redis.call('PTTL', KEYS[1]) }",
            )
        });
        let mut conn = self.conn.clone();
        let (count, pttl): (u64, i64) = SCRIPT
            .key(self.key("rate", format!("{name}:{key}")))
            .arg(limit.window.as_millis() as u64)
            .arg(n.max(1))
            .invoke_async(&mut conn)
            .await?;
        if count > limit.count {
            Ok(Err(Limited {
                retry_after: (pttl.max(0) as u64).div_ceil(1000).max(1),
            }))
        } else {
            Ok(Ok(()))
        }
    }
}
