//! Operators' controls on one job (retry a dead one, cancel one not started, delete a finished
//! one, run a delayed or retrying one now): each one script, answering the state it found, run
//! on the partition that holds the job (`partitions.rs`).

use redis::Script;
use uuid::Uuid;

use super::{JobState, QueueError, Queues};

impl Queues {
    /// Puts a dead job back to waiting with fresh attempts; false if it is not dead.
    pub async fn retry_dead(&self, queue: &str, id: Uuid) -> Result<bool, QueueError> {
        let Some(part) = self.part_holding(queue, &id.to_string()).await? else {
            return Ok(false);
        };
        let mut conn = self.conn.clone();
        let n: i64 = self
            .scripts
            .retry_dead
            .key(self.keys(&part))
            .arg(id.to_string())
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Cancels a job that has not started; returns its state before the call (`None`: no such
    /// job). Only waiting, delayed and retrying jobs become cancelled.
    pub async fn cancel(&self, queue: &str, id: Uuid) -> Result<Option<JobState>, QueueError> {
        self.change(&self.scripts.cancel, queue, id).await
    }

    /// Deletes a finished (completed, dead or cancelled) job from Redis; returns its state
    /// before the call (`None`: no such job). An open job is left as it is.
    pub async fn delete_finished(
        &self,
        queue: &str,
        id: Uuid,
    ) -> Result<Option<JobState>, QueueError> {
        self.change(&self.scripts.delete, queue, id).await
    }

    /// Makes a delayed or retrying job ready now; returns its state before the call (`None`:
    /// no such job). A job in another state is left as it is.
    pub async fn run_now(&self, queue: &str, id: Uuid) -> Result<Option<JobState>, QueueError> {
        self.change(&self.scripts.run_now, queue, id).await
    }

    /// Runs a one-job script that answers the job's state before it ('' = no such job).
    async fn change(
        &self,
        script: &Script,
        queue: &str,
        id: Uuid,
    ) -> Result<Option<JobState>, QueueError> {
        let Some(part) = self.part_holding(queue, &id.to_string()).await? else {
            return Ok(None);
        };
        let mut conn = self.conn.clone();
        let before: String = script
            .key(self.keys(&part))
            .arg(id.to_string())
            .invoke_async(&mut conn)
            .await?;
        if before.is_empty() {
            return Ok(None);
        }
        JobState::parse(&before)
            .map(Some)
            .ok_or_else(|| QueueError::Corrupt {
                job: format!("{queue}/{id}"),
                field: "state",
                detail: format!("is {before:?}, not a state"),
            })
    }
}
