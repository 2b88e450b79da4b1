//! The backend's unit tests against the real Redis.

use redis::AsyncCommands;

use super::{
    ack::{AckSummary, is_permanent},
    *,
};
use crate::queue::{JobRecord, JobState};

pub(super) const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 10,
    backoff_base: Duration::from_millis(100),
    backoff_cap: Duration::from_millis(1000),
    timeout: Duration::from_secs(1),
    concurrency: 4,
    prefetch: 0,
};

#[test]
fn backoff_is_spread_over_the_whole_range_from_zero_to_the_capped_ceiling() {
    for attempt in 1..=10 {
        let ceiling = (100u64 << (attempt - 1)).min(1000);
        let delays: Vec<u64> = (0..2000)
            .map(|_| backoff_delay(&POLICY, attempt).as_millis() as u64)
            .collect();
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        let mean = delays.iter().sum::<u64>() as f64 / delays.len() as f64;
        // full jitter: uniform in [0, ceiling]; neither a fixed delay nor none at all
        assert!(*max <= ceiling, "attempt {attempt}: {max} > {ceiling}");
        assert!(
            *max >= ceiling * 9 / 10,
            "attempt {attempt}: never near the ceiling"
        );
        assert!(*min <= ceiling / 10, "attempt {attempt}: never near zero");
        let half = ceiling as f64 / 2.0;
        assert!(
            (mean - half).abs() < ceiling as f64 * 0.05,
            "attempt {attempt}: mean {mean} is not about {half}"
        );
    }
}

/// A backend of queue `ping` under a prefix of its own, on the test Redis.
pub(super) struct Fixture {
    pub(super) shared: Arc<Shared>,
    pub(super) queues: Queues,
    client: Option<redis::Client>,
}

impl Fixture {
    pub(super) fn new() -> Self {
        Self::partitioned(1)
    }

    /// A backend of `ping` split into `partitions` (`queue::partitions`).
    pub(super) fn partitioned(partitions: usize) -> Self {
        let url =
            std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("test-unit-{}", &Uuid::new_v4().simple().to_string()[..12]);
        // a blocking client for the clean-up in `drop` (none on a test cluster, which goes away
        // with the tests)
        let client = redis::Client::open(url.as_str()).ok();
        let queues = Queues::new(
            crate::redis_client::RedisClient::open(&url).expect("redis url"),
            &prefix,
            crate::config::QueueSettings {
                check_script_keys: true,
                partitions: [("ping".to_owned(), partitions)].into(),
                ..Default::default()
            },
        )
        .expect("queues");
        let options = BackendOptions {
            concurrency: 4,
            policy: POLICY,
            dead_hook: false,
        };
        let backend =
            QueueBackend::<serde_json::Value>::new(queues.clone(), "ping", "worker-a", options);
        Self {
            shared: backend.shared.clone(),
            queues,
            client,
        }
    }

    /// Writes a waiting job as the enqueue script would (the fields the scripts read).
    async fn waiting(&self) -> Uuid {
        let id = Uuid::new_v4();
        let mut conn = self.queues.connection();
        let seq: i64 = conn
            .incr(format!("{}seq", self.shared.base), 1)
            .await
            .expect("seq");
        let fields: HashMap<String, String> = [
            ("payload", "{}".to_owned()),
            ("state", "waiting".into()),
            ("att", "0".into()),
            ("max", "5".into()),
            ("pri", "0".into()),
            ("rs", seq.to_string()),
            ("tok", "0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let _: () = redis::pipe()
            .hset(
                self.jobs(),
                id.to_string(),
                crate::queue::encode_job_fields(&fields),
            )
            .rpush(format!("{}wait", self.shared.base), id.to_string())
            .query_async(&mut conn)
            .await
            .expect("job written");
        id
    }

    fn jobs(&self) -> String {
        format!("{}jobs", self.shared.base)
    }

    /// Job `id`'s record fields, as text.
    async fn fields(&self, id: Uuid) -> HashMap<String, String> {
        let mut conn = self.queues.connection();
        let raw: Vec<u8> = conn
            .hget(self.jobs(), id.to_string())
            .await
            .expect("record");
        crate::queue::decode_job_fields(&raw).expect("decodes")
    }

    /// Sets one field of job `id`'s record to `value` (as a hand edit or a bug would).
    async fn corrupt(&self, id: Uuid, field: &str, value: &str) {
        let mut fields = self.fields(id).await;
        fields.insert(field.to_owned(), value.to_owned());
        let mut conn = self.queues.connection();
        let _: i64 = conn
            .hset(
                self.jobs(),
                id.to_string(),
                crate::queue::encode_job_fields(&fields),
            )
            .await
            .expect("corrupted");
    }

    /// Leases up to `n` jobs with the backend's own fetch; their tokens, by id.
    pub(super) async fn lease(&self, n: usize) -> HashMap<Uuid, u64> {
        let (_, _, jobs) = self.shared.clone().fetch(n).await.expect("fetch");
        jobs.into_iter().map(|j| (j.id, j.token)).collect()
    }

    fn held(&self) -> HashMap<Uuid, u64> {
        let held = self.shared.held.lock().expect("held");
        held.iter().map(|(id, lease)| (*id, lease.token)).collect()
    }

    pub(super) async fn job(&self, id: Uuid) -> JobRecord {
        self.queues
            .job("ping", id)
            .await
            .expect("job")
            .expect("exists")
    }

    async fn lease_deadline(&self, id: Uuid) -> Option<i64> {
        let mut conn = self.queues.connection();
        conn.zscore(format!("{}active", self.shared.base), id.to_string())
            .await
            .expect("zscore")
    }
}

/// Deletes the fixture's keys, also when its test panicked (a blocking connection: no
/// runtime is needed in `drop`).
impl Drop for Fixture {
    fn drop(&mut self) {
        let Some(Ok(mut conn)) = self.client.as_ref().map(redis::Client::get_connection) else {
            return;
        };
        let pattern = format!("{}:*", self.queues.prefix());
        let keys: Vec<String> = redis::Commands::scan_match(&mut conn, &pattern)
            .map_or_else(|_| Vec::new(), |iter| iter.filter_map(Result::ok).collect());
        if !keys.is_empty() {
            let _: Result<(), _> = redis::Commands::del(&mut conn, keys);
        }
    }
}

/// A `ping` job of `project` carrying `payload`, waiting at once, priority 0, three attempts.
pub(super) fn ping_job(project: Uuid, payload: serde_json::Value) -> crate::queue::NewJob {
    crate::queue::NewJob {
        id: Uuid::now_v7(),
        queue: "ping".into(),
        payload,
        run_at: None,
        priority: 0,
        max_attempts: 3,
        idempotency_key: None,
        partition_key: None,
        project_id: project,
        request_id: None,
    }
}

fn outcome(id: Uuid, token: u64, kind: OutcomeKind) -> Outcome {
    Outcome {
        id,
        token,
        part: 0,
        project: None,
        kind,
    }
}

/// The chaos run's false "leases lost": the heartbeat copied the held jobs, then the acker
/// wrote one's outcome, then the heartbeat script ran on the copy.
#[tokio::test]
async fn a_heartbeat_does_not_report_a_job_whose_outcome_landed_after_the_copy_as_lost() {
    let f = Fixture::new();
    let id = f.waiting().await;
    let token = f.lease(1).await[&id];
    let copy = f.shared.held_copy();

    let written = [outcome(id, token, OutcomeKind::Ok(Ok("1".into())))];
    let summary = f.shared.write_outcomes(&written).await.expect("ack");
    assert_eq!(summary.applied, 1);
    // the acker has written the outcome but not yet forgotten the job when the heartbeat runs
    assert_eq!(f.shared.heartbeat(&copy).await.expect("heartbeat"), 0);
    f.shared.forget(&written);
    assert!(f.held().is_empty());
    assert_eq!(f.job(id).await.state, JobState::Completed);
}

/// The chaos run's lost heartbeat: the attempt failed, its retry was due at once and this
/// worker fetched the job again (new token) between the heartbeat's copy and its script.
#[tokio::test]
async fn a_job_that_failed_and_was_fetched_again_meanwhile_stays_heartbeated() {
    let f = Fixture::new();
    let id = f.waiting().await;
    let first = f.lease(1).await[&id];
    let copy = f.shared.held_copy();

    let retry = OutcomeKind::Retry {
        delay: Duration::ZERO,
        error: "boom".into(),
    };
    let written = [outcome(id, first, retry)];
    assert_eq!(
        f.shared
            .write_outcomes(&written)
            .await
            .expect("ack")
            .applied,
        1
    );
    f.shared.forget(&written);
    let second = f.lease(1).await[&id];
    assert_ne!(first, second);
    assert_eq!(f.held(), HashMap::from([(id, second)]));

    // the heartbeat's copy still has the first attempt: that attempt's lease is gone, but
    // the job is held under the second, which must stay held and heartbeated
    assert_eq!(f.shared.heartbeat(&copy).await.expect("heartbeat"), 0);
    assert_eq!(f.held(), HashMap::from([(id, second)]));
    let mut conn = f.queues.connection();
    let _: i64 = conn
        .zadd(format!("{}active", f.shared.base), id.to_string(), 0)
        .await
        .expect("deadline moved back");
    assert_eq!(
        f.shared
            .heartbeat(&f.shared.held_copy())
            .await
            .expect("heartbeat"),
        0
    );
    let deadline = f.lease_deadline(id).await.expect("still leased");
    assert!(
        deadline > chrono::Utc::now().timestamp_millis(),
        "lease extended"
    );
}

#[tokio::test]
async fn a_job_whose_error_history_is_corrupt_goes_dead_alone_and_the_rest_of_its_batch_lands() {
    let f = Fixture::new();
    let (a, b, c) = (f.waiting().await, f.waiting().await, f.waiting().await);
    let tokens = f.lease(3).await;
    f.corrupt(b, "errors", "[{\"attempt\": 1, oops").await;
    let retry = |error: &str| OutcomeKind::Retry {
        delay: Duration::from_secs(60),
        error: error.into(),
    };
    let batch = [
        outcome(a, tokens[&a], retry("a failed")),
        outcome(b, tokens[&b], retry("b failed")),
        outcome(c, tokens[&c], OutcomeKind::Ok(Ok("\"done\"".into()))),
    ];
    let summary = f.shared.write_outcomes(&batch).await.expect("ack");
    assert_eq!(
        summary,
        AckSummary {
            applied: 2,
            stale: 0,
            poisoned: 1
        }
    );

    use JobState;
    let (ja, jb, jc) = (f.job(a).await, f.job(b).await, f.job(c).await);
    assert_eq!((ja.state, ja.errors.len()), (JobState::Retrying, 1));
    assert_eq!(jc.state, JobState::Completed);
    assert_eq!(jc.result, Some(serde_json::json!("done")));
    assert_eq!(jb.state, JobState::Dead);
    let reason = jb.last_error.expect("a reason");
    assert!(
        reason.starts_with("corrupt job: its error history is not JSON")
            && reason.ends_with("(the attempt ended with: b failed)"),
        "{reason}"
    );
    assert_eq!(jb.errors.len(), 1, "the unreadable history is replaced");
    assert_eq!(jb.errors[0].error, reason);
    let counts = f.queues.counts("ping").await.expect("counts");
    assert_eq!(
        (
            counts.active,
            counts.retrying,
            counts.completed,
            counts.dead
        ),
        (0, 1, 1, 1)
    );
}

#[tokio::test]
async fn a_waiting_job_with_a_corrupt_attempt_count_goes_dead_and_its_batch_is_leased() {
    let f = Fixture::new();
    let (bad, good) = (f.waiting().await, f.waiting().await);
    f.corrupt(bad, "att", "two").await;
    let leased = f.lease(2).await;
    assert_eq!(leased.keys().collect::<Vec<_>>(), [&good]);
    // (the record itself does not read: its `att` is still corrupt, and says so)
    let fields = f.fields(bad).await;
    assert_eq!(fields["state"], "dead");
    let why = &fields["last_error"];
    assert!(why.starts_with("corrupt job: its att or tok"), "{why}");
    assert!(matches!(
        f.queues.job("ping", bad).await,
        Err(QueueError::Corrupt { field: "att", .. })
    ));
    let counts = f.queues.counts("ping").await.expect("counts");
    assert_eq!((counts.waiting, counts.active, counts.dead), (0, 1, 1));
}

#[tokio::test]
async fn an_outcome_whose_record_is_unreadable_is_stale_and_its_batch_is_written() {
    // (with one key per job, an unreadable job failed the whole script and the acker wrote the
    // batch one outcome at a time; a record that does not decode now reads as a job without
    // fields, whose token no outcome matches)
    let f = Fixture::new();
    let (a, b) = (f.waiting().await, f.waiting().await);
    let tokens = f.lease(2).await;
    let mut conn = f.queues.connection();
    let _: i64 = conn
        .hset(f.jobs(), b.to_string(), "not a record")
        .await
        .expect("b broken");
    let rx = f.shared.acks_rx.lock().expect("rx").take().expect("rx");
    tokio::spawn(f.shared.clone().acker(rx));
    for id in [b, a] {
        let kind = OutcomeKind::Ok(Ok("1".into()));
        let _ = f
            .shared
            .acks
            .send(AckMsg::Outcome(outcome(id, tokens[&id], kind)));
    }
    let (tx, flushed) = oneshot::channel();
    let _ = f.shared.acks.send(AckMsg::Flush(tx));
    tokio::time::timeout(Duration::from_secs(10), flushed)
        .await
        .expect("the batch is not retried forever")
        .expect("flushed");

    assert_eq!(f.job(a).await.state, JobState::Completed);
    assert!(
        f.held().is_empty(),
        "b is no longer heartbeated: its lease expires"
    );
}

#[tokio::test]
async fn a_result_that_cannot_be_serialised_is_an_error_on_the_completed_job_not_null() {
    let f = Fixture::new();
    let id = f.waiting().await;
    let token = f.lease(1).await[&id];
    let handle = JobHandle {
        id,
        queue: "ping",
        attempt: 1,
        max_attempts: 5,
        project_id: None,
        request_id: None,
        worker: f.shared.worker.clone(),
        token,
        part: f.shared.part(0),
        queues: f.queues.clone(),
    };
    // a map with non-string keys has no JSON form
    let result: Result<HashMap<(u8, u8), u8>, BoxDynError> = Ok(HashMap::from([((1, 2), 3)]));
    f.shared
        .finish_attempt(&handle, &result, Duration::from_millis(5));
    let mut rx = f.shared.acks_rx.lock().expect("rx").take().expect("rx");
    let Some(AckMsg::Outcome(o)) = rx.recv().await else {
        panic!("no outcome")
    };
    assert_eq!(f.shared.write_outcomes(&[o]).await.expect("ack").applied, 1);

    let job = f.job(id).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.result, None);
    let why = job.last_error.expect("why there is no result");
    assert!(
        why.starts_with("the job succeeded but its result could not be stored"),
        "{why}"
    );
}

#[test]
fn abort_errors_are_permanent_wherever_they_sit_in_the_chain() {
    let e: BoxDynError = Box::new(AbortError::new("bad payload"));
    assert!(is_permanent(&e));
    let e: BoxDynError = "transient".into();
    assert!(!is_permanent(&e));
}

#[tokio::test]
async fn every_queue_script_loads_and_the_checked_form_refuses_a_key_it_was_not_given() {
    let f = Fixture::new();
    let mut conn = f.queues.connection();
    for name in crate::queue::SCRIPT_NAMES {
        for (form, source) in [
            ("one server", crate::queue::script_source_for(name, false)),
            ("cluster", crate::queue::script_source_for(name, true)),
            ("checked", crate::queue::script_source_checked(name)),
        ] {
            redis::Script::new(&source)
                .load_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{name} ({form}) does not load: {e}"));
        }
    }
    // the checking `rcall` of the scripts the tests run, before a body that reads a per-job key
    // (the layout before `p:{q}:jobs`) it was not given: the script fails, naming the key
    let body = "rcall('HLEN', K.jobs)\nreturn rcall('HGET', BASE .. 'job:1', 'state')";
    let source = crate::queue::script_source_checked("archived")
        .split_once("local removed")
        .expect("archived's body")
        .0
        .to_owned()
        + body;
    let keys = crate::queue::queue_keys(&f.shared.base);
    let err = redis::Script::new(&source)
        .key(&keys)
        .invoke_async::<Option<String>>(&mut conn)
        .await
        .expect_err("an undeclared key is refused");
    let undeclared = format!("undeclared key {}job:1 touched by HGET", f.shared.base);
    assert!(err.to_string().contains(&undeclared), "{err}");
    // the same body given that key runs
    let ok: Option<String> = redis::Script::new(&source)
        .key(&keys)
        .key(format!("{}job:1", f.shared.base))
        .invoke_async(&mut conn)
        .await
        .expect("a declared key is allowed");
    assert_eq!(ok, None);
}

#[tokio::test]
async fn the_waiting_line_is_higher_priorities_then_priority_0_in_order_then_lower_ones() {
    let f = Fixture::new();
    let project = Uuid::now_v7();
    let job = |priority: i16| crate::queue::NewJob {
        id: Uuid::now_v7(),
        queue: "ping".into(),
        payload: serde_json::json!({}),
        run_at: None,
        priority,
        max_attempts: 1,
        idempotency_key: None,
        partition_key: None,
        project_id: project,
        request_id: None,
    };
    // enqueued out of line order; priority 0 waits in its list, the others in the sorted set
    let jobs = [job(0), job(-5), job(0), job(5), job(0), job(7), job(-1)];
    f.queues.push_many("ping", &jobs).await.expect("push");
    let line: Vec<Uuid> = [5, 3, 0, 2, 4, 6, 1].iter().map(|&i| jobs[i].id).collect();

    let (all, total) = f
        .queues
        .list("ping", JobState::Waiting, 0, 50)
        .await
        .expect("list");
    assert_eq!(total, 7);
    assert_eq!(all.iter().map(|j| j.id).collect::<Vec<_>>(), line);
    // every page, of every size, is its slice of the line, across the three parts
    for size in 1..=7 {
        for offset in 0..=7 {
            let (page, _) = f
                .queues
                .list("ping", JobState::Waiting, offset, size)
                .await
                .expect("page");
            let want = &line[offset.min(7)..(offset + size).min(7)];
            assert_eq!(
                page.iter().map(|j| j.id).collect::<Vec<_>>(),
                want,
                "offset {offset}, size {size}"
            );
        }
    }
    assert_eq!(f.queues.counts("ping").await.expect("counts").waiting, 7);

    // cancelling a job of the list takes it out of line
    let cancelled = jobs[2].id;
    f.queues.cancel("ping", cancelled).await.expect("cancel");
    let line: Vec<Uuid> = line.into_iter().filter(|id| *id != cancelled).collect();
    // a fetch takes them in the same order
    let (_, _, fetched) = f.shared.clone().fetch(4).await.expect("fetch");
    let (_, _, rest) = f.shared.clone().fetch(4).await.expect("fetch");
    let taken: Vec<Uuid> = fetched.iter().chain(&rest).map(|j| j.id).collect();
    assert_eq!(taken, line);
}

#[tokio::test]
async fn the_list_holds_ids_as_16_bytes_and_still_reads_and_removes_entries_of_text() {
    let f = Fixture::new();
    let job = || ping_job(Uuid::now_v7(), serde_json::json!({}));
    let first = [job(), job(), job()];
    f.queues.push_many("ping", &first).await.expect("push");
    // an entry of text, as the list held before
    let (text, text_too) = (f.waiting().await, f.waiting().await);
    let last = job();
    f.queues.push(&last).await.expect("push one");
    let mut conn = f.queues.connection();
    let wait = format!("{}wait", f.shared.base);
    let entries: Vec<Vec<u8>> = conn.lrange(&wait, 0, -1).await.expect("lrange");
    let lens: Vec<usize> = entries.iter().map(Vec::len).collect();
    assert_eq!(lens, [16, 16, 16, 36, 36, 16]);
    assert_eq!(entries[0], first[0].id.as_bytes());

    let line = [
        first[0].id,
        first[1].id,
        first[2].id,
        text,
        text_too,
        last.id,
    ];
    let (listed, total) = f
        .queues
        .list("ping", JobState::Waiting, 0, 10)
        .await
        .expect("list");
    assert_eq!(total, 6);
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), line);
    // cancelling takes either kind of entry out of line
    for id in [text, first[1].id] {
        assert_eq!(
            f.queues.cancel("ping", id).await.expect("cancel"),
            Some(JobState::Waiting)
        );
    }
    let left: u64 = conn.llen(&wait).await.expect("llen");
    assert_eq!(left, 4);
    // a fetch takes the rest in order, ids as text
    let (_, _, taken) = f.shared.clone().fetch(10).await.expect("fetch");
    assert_eq!(
        taken.iter().map(|j| j.id).collect::<Vec<_>>(),
        [first[0].id, first[2].id, text_too, last.id]
    );
    let (_, _, none) = f.shared.clone().fetch(4).await.expect("fetch");
    assert!(none.is_empty());
}
