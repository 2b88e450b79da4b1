//! Each worker's cache of compiled rules, per project.
//!
//! An entry is the project's active rules at one `rules_version` (every rule change bumps it in
//! its transaction). An event records the version it saw when it was accepted; an entry older
//! than that is reloaded before the event is evaluated, so a cache miss or a stale entry never
//! skips a rule that was active when the event was accepted, and no process needs to be told
//! of a change. Entries are also reloaded after [`MAX_AGE`], so a rule switched off stops firing
//! within that time even in a quiet project. A project with no rule for an event's type costs
//! one look-up here.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use shared::{
    db,
    rules::{Condition, Templates, TypePattern},
};
use sqlx::PgPool;
use uuid::Uuid;

/// How long an entry is used without a newer event forcing a reload.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// How often one process writes a failing rule's `lastError`.
pub const ERROR_EVERY: Duration = Duration::from_secs(60);
/// Projects kept; past it the cache starts over (a bound on memory, not an eviction policy).
const MAX_PROJECTS: usize = 10_000;

/// One rule, compiled.
#[derive(Debug)]
pub struct CompiledRule {
    /// Id.
    pub id: Uuid,
    /// The types it looks at.
    pub patterns: Vec<TypePattern>,
    /// Its condition (none: every event of its types).
    pub condition: Option<Condition>,
    /// Title and body.
    pub templates: Templates,
    /// Priority (higher first).
    pub priority: i32,
    /// Sound.
    pub sound: Option<String>,
    /// Channels.
    pub channels: Vec<String>,
    /// Target roles.
    pub target_role_ids: Vec<Uuid>,
    /// Its alert suppression, if any.
    pub suppression: Option<shared::suppression::Limit>,
}

impl CompiledRule {
    /// Whether it looks at events of this type.
    pub fn selects(&self, event_type: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(event_type))
    }
}

/// A project's active rules at one version, by priority.
#[derive(Debug)]
pub struct ProjectRules {
    /// The project's `rules_version` these are.
    pub version: i64,
    /// The rules, highest priority first.
    pub rules: Vec<CompiledRule>,
    /// Stored rules that no longer compile (id, reason): reported, never silently skipped.
    pub broken: Vec<(Uuid, String)>,
    loaded: Instant,
}

/// The cache (one per worker process).
#[derive(Debug, Default)]
pub struct RuleCache {
    entries: Mutex<HashMap<Uuid, Arc<ProjectRules>>>,
    /// When this process last wrote each rule's `lastError` (see [`RuleCache::error_due`]).
    errors_written: Mutex<HashMap<(Uuid, i64), Instant>>,
}

fn compile(row: db::rules::RuleRow) -> Result<CompiledRule, (Uuid, String)> {
    let id = row.rule_id;
    let patterns = row
        .event_types
        .iter()
        .map(|p| TypePattern::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (id, format!("eventTypes: {e}")))?;
    let condition = row
        .condition
        .as_deref()
        .map(Condition::compile)
        .transpose()
        .map_err(|e| (id, format!("condition: {e}")))?;
    let templates = Templates::compile(&row.title_template, &row.body_template)
        .map_err(|e| (id, format!("{}: {}", e.field, e.message)))?;
    Ok(CompiledRule {
        id,
        patterns,
        condition,
        templates,
        priority: row.priority,
        sound: row.sound,
        channels: row.channels,
        target_role_ids: row.target_role_ids,
        suppression: match (row.suppression_max_fires, row.suppression_window_secs) {
            (Some(max), Some(secs)) if max > 0 && secs > 0 => Some(shared::suppression::Limit {
                max_fires: max as u32,
                window: Duration::from_secs(secs as u64),
            }),
            _ => None,
        },
    })
}

impl RuleCache {
    /// The project's rules, at least as new as `min_version`; `None` if the project is gone.
    pub async fn get(
        &self,
        pool: &PgPool,
        project_id: Uuid,
        min_version: i64,
    ) -> anyhow::Result<Option<Arc<ProjectRules>>> {
        if let Some(entry) = self.lock().get(&project_id)
            && entry.version >= min_version
            && entry.loaded.elapsed() < MAX_AGE
        {
            metrics::counter!("comet_rule_cache_total", "outcome" => "hit").increment(1);
            return Ok(Some(entry.clone()));
        }
        metrics::counter!("comet_rule_cache_total", "outcome" => "load").increment(1);
        let Some((version, rows)) = db::rules::active(pool, project_id)
            .await
            .context("Failed to load the project's rules")?
        else {
            return Ok(None);
        };
        let (mut rules, mut broken) = (Vec::new(), Vec::new());
        for row in rows {
            match compile(row) {
                Ok(r) => rules.push(r),
                Err(b) => broken.push(b),
            }
        }
        let entry = Arc::new(ProjectRules {
            version,
            rules,
            broken,
            loaded: Instant::now(),
        });
        let mut entries = self.lock();
        if entries.len() >= MAX_PROJECTS {
            entries.clear();
        }
        // keep the newer of two concurrent loads
        match entries.get(&project_id) {
            Some(e) if e.version > entry.version => Ok(Some(e.clone())),
            _ => {
                entries.insert(project_id, entry.clone());
                Ok(Some(entry))
            }
        }
    }

    /// Whether a rule's error should be written now: at most once per [`ERROR_EVERY`] per rule,
    /// rules version (a change of the condition clears the error) and process (the row's own
    /// check keeps it to once a minute across processes), so a rule that fails on every event
    /// costs no write per event.
    pub fn error_due(&self, rule_id: Uuid, version: i64) -> bool {
        let key = (rule_id, version);
        let mut written = self
            .errors_written
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if written.get(&key).is_some_and(|t| now - *t < ERROR_EVERY) {
            return false;
        }
        if written.len() >= MAX_PROJECTS {
            written.retain(|_, t| now - *t < ERROR_EVERY);
        }
        written.insert(key, now);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<ProjectRules>>> {
        // a panic while holding the lock leaves a usable map
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
