//! Making a project's state (active, suspended, deleted) reach every API process: the Redis
//! marker every token check reads (`shared::sessions`), written by the project routes inside
//! their transaction, before it commits (Redis failing rolls the change back: a 503 changed
//! nothing), and refilled from Postgres when a process starts.
//!
//! A commit that fails after the marker was written leaves the marker ahead of Postgres until
//! the project's next change: the marker carries the row's version, and the retry of the
//! failed request (or any later change) writes that version or a newer one, which replaces it.

use std::time::Duration;

use shared::db::projects::{Block, Project};

use crate::{
    AppState,
    error::{ApiError, Result},
};

/// Records the project's state as the caller's transaction is about to commit it: from the
/// next request on, every API process refuses its tokens (suspended, deleted) or accepts them
/// again (active). This process remembers it too (the fallback when Redis cannot be asked).
///
/// 503 if Redis fails: the caller drops its transaction, so nothing changed.
pub async fn publish(s: &AppState, project: &Project) -> Result<()> {
    let block = Block::of(project);
    s.revocations.note_project(project.id, block);
    s.sessions
        .set_project_state(project.id, block, project.version)
        .await
        .map_err(ApiError::session_store)?;
    tracing::info!(project_id = %project.id, state = block.map_or("active", Block::as_str),
        "project state published");
    Ok(())
}

/// Writes every suspended or deleted project's marker from Postgres (a Redis that lost them,
/// flushed or replaced, refuses those projects' tokens again). Markers never move back to an
/// older row version, so a change made meanwhile is not undone. Retries every 5 s until it
/// succeeds; for `comet_api::serve` to spawn.
pub async fn refill(s: AppState) {
    loop {
        match shared::db::projects::blocked(&s.pool).await {
            Ok(blocked) => {
                let states: Vec<_> = blocked
                    .iter()
                    .map(|(id, block, version)| (*id, Some(*block), *version))
                    .collect();
                match s.sessions.set_project_states(&states).await {
                    Ok(()) => {
                        tracing::info!(
                            projects = states.len(),
                            "blocked projects' markers written"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not write the project markers; retrying")
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the blocked projects; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
