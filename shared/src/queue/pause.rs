//! A queue's pause flag in Redis (`<base>paused`): the fetch script leases nothing from a queue
//! that has it. Postgres (`db::queue_pauses`) holds the lasting state; workers copy it here
//! (see the worker's `pauses` service), the pause route writes both.

use super::{QueueError, Queues};

impl Queues {
    /// Sets or clears the queue's pause flag (on every partition); clearing it wakes the
    /// queue's fetchers.
    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        for part in self.parts(queue).await? {
            let base = self.base(&part);
            if paused {
                let _: () = redis::cmd("SET")
                    .arg(format!("{base}paused"))
                    .arg(1)
                    .query_async(&mut conn)
                    .await?;
                continue;
            }
            let removed: i64 = redis::cmd("DEL")
                .arg(format!("{base}paused"))
                .query_async(&mut conn)
                .await?;
            if removed > 0 {
                // sharded on a cluster, where the workers `SSUBSCRIBE` (`redis_client`)
                let publish = if conn.is_cluster() {
                    "SPUBLISH"
                } else {
                    "PUBLISH"
                };
                let _: i64 = redis::cmd(publish)
                    .arg(format!("{base}wake"))
                    .arg("resume")
                    .query_async(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether the queue's pause flag is set (in Redis, on any of its partitions).
    pub async fn is_paused(&self, queue: &str) -> Result<bool, QueueError> {
        let mut pipe = redis::pipe();
        for part in self.parts(queue).await? {
            pipe.exists(format!("{}paused", self.base(&part)));
        }
        let mut conn = self.conn.clone();
        let set: Vec<bool> = pipe.query_async(&mut conn).await?;
        Ok(set.into_iter().any(|p| p))
    }
}
