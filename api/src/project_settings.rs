//! Each API process's cache of project settings (read by every event ingest for the project's
//! `eventsPerSecond`): at most [`MAX_PROJECTS`] entries, each used for at most [`MAX_AGE`],
//! and dropped on every API process as soon as the project is updated.
//!
//! An update calls [`changed`] after its commit: the entry is dropped here at once and a Redis
//! publish on `<REDIS_PREFIX>:projects:changed` (the project's id) makes every other process
//! drop it ([`listen`], spawned by `serve`). A publish that is lost (Redis down, a process
//! that was reconnecting) is bounded by [`MAX_AGE`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use shared::{domain::ProjectSettings, redis_client::Channel};
use uuid::Uuid;

use crate::AppState;

/// How long an entry is used before it is read again.
pub const MAX_AGE: Duration = Duration::from_secs(5);
/// Entries kept; past it the cache starts over (a bound on memory).
pub const MAX_PROJECTS: usize = 10_000;

/// The cache (one per process, in the [`AppState`]).
#[derive(Debug, Default)]
pub struct SettingsCache {
    entries: Mutex<HashMap<Uuid, (Instant, Arc<ProjectSettings>)>>,
}

impl SettingsCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (Instant, Arc<ProjectSettings>)>> {
        // a panic while holding the lock leaves a usable map
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops a project's entry.
    pub fn forget(&self, project_id: Uuid) {
        self.lock().remove(&project_id);
    }

    fn forget_all(&self) {
        self.lock().clear();
    }
}

/// A project's settings: from the cache when fresh, else from Postgres (a project gone has the
/// defaults: its callers are refused by authentication anyway).
pub async fn get(s: &AppState, project_id: Uuid) -> Result<Arc<ProjectSettings>, sqlx::Error> {
    if let Some((at, settings)) = s.project_settings.lock().get(&project_id)
        && at.elapsed() < MAX_AGE
    {
        return Ok(settings.clone());
    }
    let settings = Arc::new(
        shared::db::projects::settings_of(&s.pool, project_id)
            .await?
            .unwrap_or_default(),
    );
    let mut entries = s.project_settings.lock();
    if entries.len() >= MAX_PROJECTS {
        entries.clear();
    }
    entries.insert(project_id, (Instant::now(), settings.clone()));
    Ok(settings)
}

fn channel(s: &AppState) -> String {
    format!("{}:projects:changed", s.queues.prefix())
}

/// A project's settings changed (call after the commit): dropped here now, and on every other
/// API process by a publish (best effort: [`MAX_AGE`] bounds a lost one).
pub async fn changed(s: &AppState, project_id: Uuid) {
    s.project_settings.forget(project_id);
    let publish = async {
        let mut conn = s.queues.connection();
        redis::cmd("PUBLISH")
            .arg(channel(s))
            .arg(project_id.to_string())
            .query_async::<i64>(&mut conn)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(1), publish).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(%project_id, error = %e,
            "could not publish a project's change; other processes see it within the cache's max age"),
        Err(_) => tracing::warn!(%project_id,
            "publishing a project's change timed out; other processes see it within the cache's max age"),
    }
}

/// Drops the entries of the projects other processes changed, until the process ends;
/// resubscribes with backoff (dropping every entry then: a change may have been missed).
pub async fn listen(s: AppState) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let subscribe = async {
            let channels = [Channel::Plain(channel(&s))];
            s.queues.client().subscribe(&channels).await
        };
        match tokio::time::timeout(Duration::from_secs(5), subscribe).await {
            Ok(Ok(messages)) => {
                backoff = Duration::from_millis(100);
                s.project_settings.forget_all();
                let mut messages = std::pin::pin!(messages);
                while let Some(msg) = messages.next().await {
                    match msg
                        .get_payload::<String>()
                        .ok()
                        .and_then(|p| p.parse().ok())
                    {
                        Some(id) => s.project_settings.forget(id),
                        None => s.project_settings.forget_all(),
                    }
                }
                tracing::warn!("project change subscription lost; subscribing again");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not subscribe to project changes"),
            Err(_) => tracing::warn!("subscribing to project changes timed out"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
