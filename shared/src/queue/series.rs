//! A queue's throughput minute by minute: jobs enqueued, completed, retried and gone dead in
//! each of the last minutes, from the per-minute counters the scripts keep (`lua/series.lua`:
//! `p:{q}:minutes`, kept two hours). What the ops console charts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{QueueError, Queues};

/// Most minutes one read covers (the counters live two hours).
pub const MAX_MINUTES: u32 = 120;

/// One minute of a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MinuteCounts {
    /// The minute's start (UTC, by Redis's clock).
    pub minute: DateTime<Utc>,
    /// Jobs created (idempotent duplicates not counted).
    pub enqueued: u64,
    /// Attempts that completed.
    pub completed: u64,
    /// Attempts that failed with attempts left.
    pub retried: u64,
    /// Jobs that went dead.
    pub dead: u64,
}

impl Queues {
    /// The last `minutes` minutes of `queue` (1 to [`MAX_MINUTES`]), oldest first, the current
    /// minute (still counting) last.
    pub async fn series(&self, queue: &str, minutes: u32) -> Result<Vec<MinuteCounts>, QueueError> {
        let minutes = minutes.clamp(1, MAX_MINUTES) as i64;
        let mut conn = self.conn.clone();
        let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let now = secs / 60;
        const COUNTERS: [&str; 4] = ["enqueued", "completed", "retried", "dead"];
        let fields: Vec<String> = (now - minutes + 1..=now)
            .flat_map(|m| COUNTERS.iter().map(move |c| format!("{m}:{c}")))
            .collect();
        // every partition's counters, summed
        let mut values: Vec<Option<u64>> = vec![None; fields.len()];
        for part in self.parts(queue).await? {
            let part: Vec<Option<u64>> = redis::cmd("HMGET")
                .arg(format!("{}minutes", self.base(&part)))
                .arg(&fields)
                .query_async(&mut conn)
                .await?;
            for (sum, n) in values.iter_mut().zip(part) {
                if let Some(n) = n {
                    *sum = Some(sum.unwrap_or(0) + n);
                }
            }
        }
        Ok((now - minutes + 1..=now)
            .zip(values.chunks(COUNTERS.len()))
            .map(|(m, r)| {
                let at = |k: usize| r.get(k).copied().flatten().unwrap_or(0);
                MinuteCounts {
                    minute: DateTime::from_timestamp(m * 60, 0).unwrap_or_default(),
                    enqueued: at(0),
                    completed: at(1),
                    retried: at(2),
                    dead: at(3),
                }
            })
            .collect())
    }
}
