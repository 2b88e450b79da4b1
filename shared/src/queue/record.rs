//! Job records: the MessagePack array the scripts keep per job in `p:{q}:jobs` (`lua/job.lua`),
//! and reading one back into a [`JobRecord`], strictly: a field the scripts could not have
//! written is an error, never a plausible default.
//!
//! A record holds the fields of [`JOB_FIELDS`] by position (`false` or nothing for an absent
//! one): no field name is stored per job, and the job id is the record's field in the hash, the
//! kind its queue. The scripts get the same list (`FIELDS`) in their prelude, so the two cannot
//! drift apart.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use super::{AttemptError, JobRecord, JobState, QueueError};

/// The fields of a job record, in the order the record stores them: the ones every job has
/// first, the rarely set ones last (trailing absent fields take no bytes).
pub const JOB_FIELDS: [&str; 19] = [
    "payload",
    "state",
    "att",
    "max",
    "pri",
    "rs",
    "tok",
    "created",
    "run_at",
    "project",
    "rid",
    "idem",
    "started",
    "worker",
    "finished",
    "errors",
    "last_error",
    "result",
    "progress",
];

/// The fields of the record `raw` (as the scripts write it), by name, as text (numbers in
/// decimal); absent fields left out.
pub fn decode_fields(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let value =
        rmpv::decode::read_value(&mut &raw[..]).map_err(|e| format!("not MessagePack: {e}"))?;
    let rmpv::Value::Array(items) = value else {
        return Err("not a MessagePack array".into());
    };
    if items.len() > JOB_FIELDS.len() {
        return Err(format!(
            "{} fields, more than the {} known",
            items.len(),
            JOB_FIELDS.len()
        ));
    }
    let mut map = HashMap::with_capacity(items.len() + 2);
    for (name, v) in JOB_FIELDS.iter().zip(items) {
        let text = match v {
            rmpv::Value::Nil | rmpv::Value::Boolean(false) => continue,
            rmpv::Value::Integer(i) => i.to_string(),
            rmpv::Value::F64(f) => f.to_string(),
            rmpv::Value::F32(f) => f.to_string(),
            rmpv::Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            rmpv::Value::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            other => return Err(format!("`{name}` is {other}, not a number or text")),
        };
        map.insert((*name).to_owned(), text);
    }
    Ok(map)
}

/// A record holding `fields` (by name, as text), as the scripts would write it: numbers as
/// numbers. For tests and tools that write a job by hand (a corrupt one, say); fields not in
/// [`JOB_FIELDS`] are ignored.
pub fn encode_fields(fields: &HashMap<String, String>) -> Vec<u8> {
    let mut items: Vec<rmpv::Value> = JOB_FIELDS
        .iter()
        .map(|name| match fields.get(*name) {
            None => rmpv::Value::Boolean(false),
            Some(v) => v
                .parse::<i64>()
                .map_or_else(|_| rmpv::Value::from(v.as_str()), rmpv::Value::from),
        })
        .collect();
    while items.last() == Some(&rmpv::Value::Boolean(false)) {
        items.pop();
    }
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &rmpv::Value::Array(items))
        .expect("writing to a Vec cannot fail");
    out
}

/// Reads the record `raw` of job `id` in `queue` (`None`: no such job), as [`read`] does.
pub(super) fn decode(
    queue: &str,
    id: &str,
    raw: Option<Vec<u8>>,
) -> Result<Option<JobRecord>, QueueError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    // a partition's jobs are its queue's (`partitions.rs`)
    let queue = super::queue_of(queue);
    let mut map = decode_fields(&raw).map_err(|detail| {
        metrics::counter!("comet_corrupt_jobs_total", "queue" => queue.to_owned()).increment(1);
        tracing::error!(queue, job = id, error = %detail, "corrupt job record");
        QueueError::Corrupt {
            job: format!("{queue}/{id}"),
            field: "record",
            detail,
        }
    })?;
    map.insert("id".to_owned(), id.to_owned());
    map.insert("kind".to_owned(), queue.to_owned());
    read(queue, map)
}

/// Reads a job hash: `None` for an empty one (no such job). A hash the scripts could not
/// have written (an unknown state, a number, time or JSON field that does not parse) is a
/// [`QueueError::Corrupt`], logged and counted (`comet_corrupt_jobs_total`), never shown as
/// a plausible value.
pub(super) fn read(
    queue: &str,
    map: HashMap<String, String>,
) -> Result<Option<JobRecord>, QueueError> {
    if map.is_empty() {
        return Ok(None);
    }
    let hash = JobHash { queue, map: &map };
    hash.record().map(Some).inspect_err(|e| {
        metrics::counter!("comet_corrupt_jobs_total", "queue" => queue.to_owned()).increment(1);
        tracing::error!(queue, error = %e, "corrupt job hash");
    })
}

fn ms_to_time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// A job hash being read into a [`JobRecord`]: every field present must parse.
struct JobHash<'a> {
    queue: &'a str,
    map: &'a HashMap<String, String>,
}

impl JobHash<'_> {
    fn corrupt(&self, field: &'static str, detail: impl std::fmt::Display) -> QueueError {
        let id = self.map.get("id").map_or("?", String::as_str);
        QueueError::Corrupt {
            job: format!("{}/{id}", self.queue),
            field,
            detail: detail.to_string(),
        }
    }

    /// A field every job has.
    fn required(&self, field: &'static str) -> Result<&str, QueueError> {
        self.map
            .get(field)
            .map(String::as_str)
            .ok_or_else(|| self.corrupt(field, "is missing"))
    }

    /// An optional text field (empty is absent).
    fn text(&self, field: &str) -> Option<String> {
        self.map.get(field).filter(|v| !v.is_empty()).cloned()
    }

    fn parse<T: std::str::FromStr>(&self, field: &'static str, v: &str) -> Result<T, QueueError>
    where
        T::Err: std::fmt::Display,
    {
        v.parse()
            .map_err(|e| self.corrupt(field, format_args!("is {v:?}: {e}")))
    }

    fn num<T: std::str::FromStr>(&self, field: &'static str) -> Result<Option<T>, QueueError>
    where
        T::Err: std::fmt::Display,
    {
        self.map
            .get(field)
            .map(|v| self.parse(field, v))
            .transpose()
    }

    fn time(&self, field: &'static str) -> Result<Option<DateTime<Utc>>, QueueError> {
        self.num::<i64>(field)?
            .map(|ms| self.at(field, ms))
            .transpose()
    }

    fn at(&self, field: &'static str, ms: i64) -> Result<DateTime<Utc>, QueueError> {
        ms_to_time(ms)
            .filter(|t| t.timestamp() > 0)
            .ok_or_else(|| self.corrupt(field, format_args!("holds {ms}, not a time")))
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        field: &'static str,
    ) -> Result<Option<T>, QueueError> {
        self.map
            .get(field)
            .map(|v| {
                serde_json::from_str(v)
                    .map_err(|e| self.corrupt(field, format_args!("is not valid: {e}")))
            })
            .transpose()
    }

    fn record(&self) -> Result<JobRecord, QueueError> {
        #[derive(Deserialize)]
        struct RawError {
            attempt: u32,
            error: String,
            at: i64,
            worker: String,
        }
        let state = self.required("state")?;
        let state = JobState::parse(state)
            .ok_or_else(|| self.corrupt("state", format_args!("is {state:?}, not a state")))?;
        let errors = self
            .json::<Vec<RawError>>("errors")?
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                Ok(AttemptError {
                    attempt: e.attempt,
                    error: e.error,
                    at: self.at("errors", e.at)?,
                    worker: e.worker,
                })
            })
            .collect::<Result<_, QueueError>>()?;
        Ok(JobRecord {
            id: self.parse("id", self.required("id")?)?,
            kind: self.required("kind")?.to_owned(),
            queue: self.queue.to_owned(),
            state,
            attempts: self.parse("att", self.required("att")?)?,
            max_attempts: self.parse("max", self.required("max")?)?,
            priority: self.num("pri")?.unwrap_or(0),
            // a job due at once stores no due time: its creation time
            run_at: self.time("run_at")?.or(self.time("created")?),
            errors,
            last_error: self.text("last_error"),
            payload: self.json("payload")?,
            progress: self.json("progress")?,
            result: self.json("result")?,
            project_id: self
                .text("project")
                .map(|p| self.parse("project", &p))
                .transpose()?,
            request_id: self.text("rid"),
            worker: self.text("worker"),
            created_at: self.time("created")?,
            started_at: self.time("started")?,
            finished_at: self.time("finished")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn hash(extra: &[(&str, &str)]) -> HashMap<String, String> {
        let id = Uuid::new_v4().to_string();
        let mut map: HashMap<String, String> = [
            ("id", id.as_str()),
            ("kind", "ping"),
            ("payload", "{}"),
            ("state", "dead"),
            ("att", "2"),
            ("max", "2"),
            ("pri", "0"),
            ("created", "1764650000000"),
            (
                "errors",
                r#"[{"attempt":1,"error":"boom","at":1764650000100,"worker":"w"}]"#,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        map
    }

    fn corrupt_field(extra: &[(&str, &str)]) -> &'static str {
        match read("ping", hash(extra)) {
            Err(QueueError::Corrupt { field, .. }) => field,
            other => panic!("{extra:?} read as {other:?}"),
        }
    }

    #[test]
    fn a_job_hash_reads_as_its_record_and_an_empty_one_as_no_job() {
        let job = read("ping", hash(&[("result", "{\"ok\":true}")]))
            .expect("readable")
            .expect("a job");
        assert_eq!(
            (job.state, job.attempts, job.max_attempts),
            (JobState::Dead, 2, 2)
        );
        assert_eq!(job.errors[0].at.timestamp_millis(), 1_764_650_000_100);
        assert_eq!(job.result, Some(serde_json::json!({"ok": true})));
        assert!(read("ping", HashMap::new()).expect("readable").is_none());
    }

    #[test]
    fn a_corrupt_job_hash_is_an_error_naming_the_field_never_a_plausible_value() {
        assert_eq!(corrupt_field(&[("state", "paused")]), "state");
        assert_eq!(corrupt_field(&[("errors", "[{\"attempt\": 1")]), "errors");
        assert_eq!(corrupt_field(&[("errors", "{}")]), "errors");
        let at_zero = r#"[{"attempt":1,"error":"boom","at":0,"worker":"w"}]"#;
        assert_eq!(corrupt_field(&[("errors", at_zero)]), "errors");
        assert_eq!(corrupt_field(&[("result", "not json")]), "result");
        assert_eq!(corrupt_field(&[("progress", "{")]), "progress");
        assert_eq!(corrupt_field(&[("att", "two")]), "att");
        assert_eq!(corrupt_field(&[("pri", "99999")]), "pri");
        assert_eq!(corrupt_field(&[("finished", "yesterday")]), "finished");
        assert_eq!(corrupt_field(&[("project", "acme")]), "project");
        let mut no_state = hash(&[]);
        no_state.remove("state");
        assert!(matches!(
            read("ping", no_state),
            Err(QueueError::Corrupt { field: "state", .. })
        ));
    }
}
