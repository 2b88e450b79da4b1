//! `process_event`'s read of its event, batched: the events of the jobs starting at the same
//! moment are read in one statement ([`db::events::to_process_many`]) by the same mechanism as
//! their writes ([`shared::group_commit`]: whatever is waiting, at most [`MAX_BATCH`], no
//! timer), instead of one query and one pooled connection each.

use std::collections::HashMap;

use anyhow::Context as _;
use shared::{
    db::{self, events::ToProcess},
    group_commit::{BatchWrite, GroupCommit},
};
use sqlx::PgPool;
use uuid::Uuid;

/// The most events one read asks for.
pub const MAX_BATCH: usize = 64;

/// Reads at the same time.
pub const IN_FLIGHT: usize = 2;

/// The process's reader of events to process, keyed by (project, event).
pub type EventReader = GroupCommit<Reader>;

/// Starts the process's [`EventReader`].
pub fn spawn(pool: PgPool) -> EventReader {
    GroupCommit::spawn(Reader { pool }, MAX_BATCH, IN_FLIGHT)
}

/// Reads batches of events.
pub struct Reader {
    pool: PgPool,
}

impl BatchWrite for Reader {
    type Item = (Uuid, Uuid);
    type Output = Option<ToProcess>;
    type Key = (Uuid, Uuid);

    fn key(key: &(Uuid, Uuid)) -> (Uuid, Uuid) {
        *key
    }

    async fn write(&self, keys: &[&(Uuid, Uuid)]) -> anyhow::Result<Vec<Option<ToProcess>>> {
        let keys: Vec<(Uuid, Uuid)> = keys.iter().map(|k| **k).collect();
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("Failed to get a Postgres connection")?;
        let mut found: HashMap<(Uuid, Uuid), ToProcess> =
            db::events::to_process_many(&mut conn, &keys)
                .await
                .context("Failed to read the events")?
                .into_iter()
                .map(|(project, event, e)| ((project, event), e))
                .collect();
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    fn name(&self) -> &'static str {
        "process_event_read"
    }
}
