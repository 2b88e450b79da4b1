//! The queue's Lua scripts as they are loaded: each script's source is a generated prelude (the
//! wake-up command, the queue's keys as `K` from `KEYS`, the job record's fields by position),
//! the helpers it uses and its body; [`Scripts`] holds them loaded once per process, and
//! `with_script` re-sends a pipeline whose script a restarted Redis lost.

use redis::Script;

use super::{QUEUE_KEYS, record};
use crate::redis_client::RedisConn;

/// The Lua scripts, loaded once per process (EVALSHA, re-sent on NOSCRIPT).
pub(crate) struct Scripts {
    pub enqueue: Script,
    pub fetch: Script,
    pub ack: Script,
    pub heartbeat: Script,
    pub release: Script,
    pub maintain: Script,
    pub retry_dead: Script,
    pub cancel: Script,
    pub claim_dead: Script,
    pub archived: Script,
    pub delete: Script,
    pub run_now: Script,
    pub progress: Script,
    pub migrate: Script,
}

impl Scripts {
    /// The scripts for one Redis server, or for a cluster (`cluster`: wake-ups are published
    /// with `SPUBLISH`, so they stay on the queue's shard); `checked`: in the form that fails on
    /// a key not given in `KEYS` ([`script_source_checked`], tests).
    pub(super) fn load(cluster: bool, checked: bool) -> Self {
        let script = |name| {
            Script::new(&if checked {
                source(name, cluster, CHECKED_RCALL)
            } else {
                script_source_for(name, cluster)
            })
        };
        Self {
            enqueue: script("enqueue"),
            fetch: script("fetch"),
            ack: script("ack"),
            heartbeat: script("heartbeat"),
            release: script("release"),
            maintain: script("maintain"),
            retry_dead: script("retry_dead"),
            cancel: script("cancel"),
            claim_dead: script("claim_dead"),
            archived: script("archived"),
            delete: script("delete"),
            run_now: script("run_now"),
            progress: script("progress"),
            migrate: script("migrate"),
        }
    }
}

/// The names of every queue script.
pub const SCRIPT_NAMES: [&str; 14] = [
    "enqueue",
    "fetch",
    "ack",
    "heartbeat",
    "release",
    "maintain",
    "retry_dead",
    "cancel",
    "claim_dead",
    "archived",
    "delete",
    "run_now",
    "progress",
    "migrate",
];

/// The source of queue script `name` as it is loaded on one Redis server (see
/// [`script_source_for`]). Public for tests that drive a script by hand, as a stalled or dying
/// worker would.
pub fn script_source(name: &str) -> String {
    script_source_for(name, false)
}

/// The source of queue script `name` as it is loaded: a prelude (the wake-up command, the
/// queue's keys as `K` from `KEYS`, the job record's fields), then the helpers it uses, then its
/// body. The scripts that record a failure use `history.lua`, those that open or close a job
/// `open.lua`, those that count per minute `series.lua`; every one reads records with `job.lua`
/// (a Redis script cannot include another). `WAKE` publishes the queue's wake-up: `PUBLISH` on
/// one server, `SPUBLISH` on a cluster (a sharded channel, delivered by the queue's own shard
/// instead of broadcast to every node). Every Redis command goes through `rcall`.
pub fn script_source_for(name: &str, cluster: bool) -> String {
    source(name, cluster, "local rcall = redis.call\n")
}

/// [`script_source`] with a `rcall` that refuses (a Lua error naming it) any key a command
/// touches that the script was not given in `KEYS`, as Redis reports the command's keys
/// (`COMMAND GETKEYS`): what the tests run, so that a script touching an undeclared key fails
/// them. Channels are not keys (`PUBLISH` has none).
pub fn script_source_checked(name: &str) -> String {
    source(name, false, CHECKED_RCALL)
}

/// The checking `rcall` of [`script_source_checked`].
const CHECKED_RCALL: &str = r"local DECLARED = {}
for _, k in ipairs(KEYS) do DECLARED[k] = true end
local function rcall(...)
  local ok, keys = pcall(redis.call, 'COMMAND', 'GETKEYS', ...)
  if ok then
    for _, k in ipairs(keys) do
      if not DECLARED[k] then
        error('undeclared key ' .. k .. ' touched by ' .. tostring((...)))
      end
    end
  end
  return redis.call(...)
end
";

fn source(name: &str, cluster: bool, rcall: &str) -> String {
    const JOB: &str = include_str!("lua/job.lua");
    const HISTORY: &str = include_str!("lua/history.lua");
    const OPEN: &str = include_str!("lua/open.lua");
    const SERIES: &str = include_str!("lua/series.lua");
    let (helpers, body): (&[&str], &str) = match name {
        "enqueue" => (&[OPEN, SERIES], include_str!("lua/enqueue.lua")),
        "fetch" => (&[OPEN, SERIES], include_str!("lua/fetch.lua")),
        "ack" => (&[HISTORY, OPEN, SERIES], include_str!("lua/ack.lua")),
        "heartbeat" => (&[], include_str!("lua/heartbeat.lua")),
        "release" => (&[OPEN], include_str!("lua/release.lua")),
        "maintain" => (&[HISTORY, OPEN, SERIES], include_str!("lua/maintain.lua")),
        "retry_dead" => (&[OPEN], include_str!("lua/retry_dead.lua")),
        "cancel" => (&[OPEN], include_str!("lua/cancel.lua")),
        "claim_dead" => (&[], include_str!("lua/claim_dead.lua")),
        "archived" => (&[], include_str!("lua/archived.lua")),
        "delete" => (&[], include_str!("lua/delete.lua")),
        "run_now" => (&[OPEN], include_str!("lua/run_now.lua")),
        "progress" => (&[], include_str!("lua/progress.lua")),
        "migrate" => (&[OPEN], include_str!("lua/migrate.lua")),
        other => panic!("no queue script {other:?}"),
    };
    let wake = if cluster { "SPUBLISH" } else { "PUBLISH" };
    let names: Vec<String> = record::JOB_FIELDS
        .iter()
        .map(|f| format!("F_{}", f.to_uppercase()))
        .collect();
    let positions: Vec<String> = (1..=record::JOB_FIELDS.len())
        .map(|i| i.to_string())
        .collect();
    let mut source = format!(
        "local WAKE = '{wake}'\n{rcall}local NQK = {}\nlocal K = {{ {} }}\n\
         -- the queue's key prefix, for its channel and its idempotency keys' names\n\
         local BASE = string.sub(KEYS[1], 1, -{})\n\
         -- the job record's fields, by position\n\
         local NF = {}\nlocal {} = {}\n",
        QUEUE_KEYS.len(),
        QUEUE_KEYS
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} = KEYS[{}]", i + 1))
            .collect::<Vec<_>>()
            .join(", "),
        QUEUE_KEYS[0].len() + 1,
        record::JOB_FIELDS.len(),
        names.join(", "),
        positions.join(", "),
    );
    if name == "migrate" {
        let index: Vec<String> = record::JOB_FIELDS
            .iter()
            .enumerate()
            .map(|(i, f)| format!("{f} = {}", i + 1))
            .collect();
        source.push_str(&format!("local FIELD_INDEX = {{ {} }}\n", index.join(", ")));
    }
    source.push_str(JOB);
    source.push_str(&helpers.concat());
    source.push_str(body);
    source
}

/// Sends `pipe`, whose first command is an `EVALSHA` of `script`; when Redis does not have the
/// script (a restarted or new server), loads it and sends the pipeline again.
pub(super) async fn with_script(
    conn: &mut RedisConn,
    script: &Script,
    pipe: &redis::Pipeline,
) -> Result<Vec<redis::Value>, redis::RedisError> {
    match pipe.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(conn).await?;
            pipe.query_async(conn).await
        }
        other => other,
    }
}
