//! Alert suppression: a rule's `suppression {maxFires, windowSeconds}` decided in Redis, atomically,
//! so several workers matching the same rule at once agree.
//!
//! Per (project, rule), a sorted set holds the matches delivered in the last window (a sliding
//! window). A match is delivered while fewer than `maxFires` were delivered in the window before
//! it and no suppression period is open. Otherwise it is suppressed: the first suppressed match
//! opens a period of one window (its start is the period's id), and every match until the period
//! closes joins it. When the period closes, the `rule_digest` job (enqueued by the match that
//! opened it, to run at its end) folds the period's suppressed matches into one digest. After it,
//! matches are delivered again as the sliding window allows.
//!
//! Decisions are idempotent per event: a retried `process_event` gets the decision its first run
//! got (kept for the longer of two windows and 15 minutes), so a retry neither counts a match
//! twice nor loses the job that the opening match must enqueue. Time is Redis `TIME`, the one
//! clock every worker shares.

use std::time::Duration;

use crate::redis_client::RedisConn;
use uuid::Uuid;

use crate::queue::Queues;

/// What suppression decided for one match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Deliver it as usual.
    Deliver,
    /// Fold it into the digest of the period `[start_ms, end_ms)`; `opened` when this match
    /// opened the period (its processing enqueues the period's digest job).
    Suppress {
        /// The period's start (Unix ms): its id.
        start_ms: i64,
        /// The period's end (Unix ms): when its digest is made.
        end_ms: i64,
        /// This match opened the period.
        opened: bool,
    },
}

/// A rule's suppression settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Matches delivered per window.
    pub max_fires: u32,
    /// The window.
    pub window: Duration,
}

const SCRIPT: &str = r"
local fires, period, seen = KEYS[1], KEYS[2], KEYS[3]
local window, max, event = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local known = redis.call('HGET', seen, event)
if known then return known end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', fires, '-inf', now - window)
local pstart = redis.call('HGET', period, 'start')
local pend = redis.call('HGET', period, 'end')
if pstart and tonumber(pend) <= now then
  redis.call('DEL', period)
  pstart = nil
end
local res
if (not pstart) and redis.call('ZCARD', fires) < max then
  redis.call('ZADD', fires, now, event)
  redis.call('PEXPIRE', fires, window + 1000)
  res = 'd'
elseif pstart then
  res = 's:' .. pstart .. ':' .. pend
else
  pstart = now
  pend = now + window
  redis.call('HSET', period, 'start', pstart, 'end', pend)
  redis.call('PEXPIRE', period, window * 2)
  res = 'o:' .. pstart .. ':' .. pend
end
redis.call('HSET', seen, event, res)
redis.call('PEXPIRE', seen, math.max(window * 2, 900000))
return res
";

/// Decides matches of suppressed rules (see the module docs).
#[derive(Clone)]
pub struct Suppressor {
    conn: RedisConn,
    prefix: String,
    script: std::sync::Arc<redis::Script>,
}

impl std::fmt::Debug for Suppressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suppressor")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Suppressor {
    /// On the queues' Redis connection, under their key prefix.
    pub fn new(queues: &Queues) -> Self {
        Self {
            conn: queues.connection(),
            prefix: format!("{}:suppress:", queues.prefix()),
            script: std::sync::Arc::new(redis::Script::new(SCRIPT)),
        }
    }

    /// The decision for `event_id` matching `rule_id` (the same one on every call for that
    /// event, within the decision's lifetime).
    pub async fn decide(
        &self,
        project_id: Uuid,
        rule_id: Uuid,
        event_id: Uuid,
        limit: Limit,
    ) -> redis::RedisResult<Decision> {
        // one hash tag per (project, rule): the three keys live on one cluster slot
        let base = format!("{}{{{project_id}:{rule_id}}}:", self.prefix);
        let window_ms = limit.window.as_millis().clamp(1, i64::MAX as u128) as i64;
        let mut conn = self.conn.clone();
        let raw: String = self
            .script
            .key(format!("{base}fires"))
            .key(format!("{base}period"))
            .key(format!("{base}seen"))
            .arg(window_ms)
            .arg(limit.max_fires)
            .arg(event_id.to_string())
            .invoke_async(&mut conn)
            .await?;
        parse(&raw).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected suppression decision",
                raw,
            ))
        })
    }
}

fn parse(raw: &str) -> Option<Decision> {
    if raw == "d" {
        return Some(Decision::Deliver);
    }
    let mut parts = raw.split(':');
    let opened = match parts.next()? {
        "o" => true,
        "s" => false,
        _ => return None,
    };
    let start_ms = parts.next()?.parse().ok()?;
    let end_ms = parts.next()?.parse().ok()?;
    Some(Decision::Suppress {
        start_ms,
        end_ms,
        opened,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_read_back() {
        assert_eq!(parse("d"), Some(Decision::Deliver));
        assert_eq!(
            parse("o:10:20"),
            Some(Decision::Suppress {
                start_ms: 10,
                end_ms: 20,
                opened: true
            })
        );
        assert_eq!(
            parse("s:10:20"),
            Some(Decision::Suppress {
                start_ms: 10,
                end_ms: 20,
                opened: false
            })
        );
        assert_eq!(parse("x:1:2"), None);
        assert_eq!(parse("s:1"), None);
    }
}
