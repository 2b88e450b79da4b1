//! Transfer buckets' SQL: creating, listing and reading buckets, their thresholds, balance
//! movements (one locked row, idempotent per key), the low-balance state they carry, and the
//! set-based sweep `bucket_monitor` runs.
//!
//! # The low-balance state
//! A bucket is *below* when `balance < low_threshold`; it is *re-armed* when
//! `balance > low_threshold + rearm_margin`. `alerting` goes from false to true when the
//! bucket is below (and `alert_seq` counts the crossing), from true to false when it is
//! re-armed, and stays as it is in between (hysteresis: hovering at the threshold raises
//! nothing more). Every write that can change the state (create, threshold, movement) applies
//! the same transition in the statement that writes the bucket, under the row's lock, and the
//! crossing's `bucket.low_balance` event goes in the same transaction ([`emit`]). The sweep
//! ([`settle_stale`]) applies exactly the same transition to the rows where it is stale
//! (changed by SQL, a crash): the `transfer_buckets_stale` partial index holds those rows and
//! nothing else, so a sweep over a million buckets in order reads nothing.
//!
//! Amounts go in as `numeric` text and come out as text rounded to the currency's minor units
//! (`round(balance, scale)::text`: `"10.50"`, `"100"`): no floating point anywhere.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    db::events::{Accepted, NewEvent},
    domain::{Amount, Currency},
    jobs::{EnqueueError, EnqueueOptions},
};

/// The event type a crossing raises.
pub const LOW_BALANCE_EVENT: &str = "bucket.low_balance";
/// The `source` of those events.
pub const EVENT_SOURCE: &str = "transfer-buckets";

/// The rows whose `alerting` is stale: exactly the predicate of the `transfer_buckets_stale`
/// partial index (migration `20261204300001`), so that the planner uses it.
const STALE: &str = "((NOT alerting AND balance < low_threshold) \
                     OR (alerting AND balance > low_threshold + rearm_margin))";

/// The `SET` clauses of the state transition for a bucket whose new balance, threshold and
/// margin are the SQL expressions given (in an `UPDATE`, columns are the old values).
fn transition(balance: &str, threshold: &str, margin: &str) -> String {
    let below = format!("({balance}) < ({threshold})");
    let rearmed = format!("({balance}) > ({threshold}) + ({margin})");
    format!(
        "alerting = CASE WHEN {below} THEN true WHEN {rearmed} THEN false ELSE alerting END, \
         alert_seq = alert_seq + CASE WHEN NOT alerting AND {below} THEN 1 ELSE 0 END, \
         alerting_since = CASE WHEN NOT alerting AND {below} THEN now() \
                               WHEN alerting AND {rearmed} THEN NULL \
                               ELSE alerting_since END"
    )
}

/// A bucket as lists and reads show it (amounts as text at the currency's scale).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BucketRow {
    /// The tenant.
    pub project_id: Uuid,
    /// Id (UUIDv7).
    pub bucket_id: Uuid,
    /// Unique in the project.
    pub name: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Balance.
    pub balance: String,
    /// Below this, the bucket alerts.
    pub low_threshold: String,
    /// Re-armed above `low_threshold + rearm_margin`.
    pub rearm_margin: String,
    /// Whether debits may take the balance below zero.
    pub allow_negative: bool,
    /// Whether the bucket is below its threshold and has alerted (until re-armed).
    pub alerting: bool,
    /// When the current alert began.
    pub alerting_since: Option<DateTime<Utc>>,
    /// Crossings so far.
    pub alert_seq: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "project_id, bucket_id, name, currency, \
    round(balance, scale)::text AS balance, round(low_threshold, scale)::text AS low_threshold, \
    round(rearm_margin, scale)::text AS rearm_margin, allow_negative, alerting, alerting_since, \
    alert_seq, created_at, updated_at";

impl BucketRow {
    /// The crossing this row shows, if the row has just started alerting.
    fn crossing(&self) -> LowBalance {
        LowBalance {
            project_id: self.project_id,
            bucket_id: self.bucket_id,
            name: self.name.clone(),
            currency: self.currency.clone(),
            balance: self.balance.clone(),
            threshold: self.low_threshold.clone(),
            seq: self.alert_seq,
        }
    }
}

/// One crossing below a bucket's threshold: what its `bucket.low_balance` event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowBalance {
    /// The tenant.
    pub project_id: Uuid,
    /// The bucket.
    pub bucket_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its currency.
    pub currency: String,
    /// The balance after the movement.
    pub balance: String,
    /// The threshold it went below.
    pub threshold: String,
    /// Which crossing of the bucket this is (1, 2, …).
    pub seq: i64,
}

/// The payload of a `bucket.low_balance` event (amounts as strings).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LowBalancePayload<'a> {
    bucket_id: Uuid,
    name: &'a str,
    balance: &'a str,
    threshold: &'a str,
    currency: &'a str,
}

impl LowBalance {
    /// The event, keyed `bucket.low_balance:<bucket>:<seq>` so that a crossing can never be
    /// raised twice, whoever raises it.
    pub fn to_event(&self) -> NewEvent {
        let payload = LowBalancePayload {
            bucket_id: self.bucket_id,
            name: &self.name,
            balance: &self.balance,
            threshold: &self.threshold,
            currency: &self.currency,
        };
        NewEvent {
            event_type: LOW_BALANCE_EVENT.to_owned(),
            source: Some(EVENT_SOURCE.to_owned()),
            payload: serde_json::to_value(payload).unwrap_or_default(),
            occurred_at: Utc::now(),
            idempotency_key: Some(format!(
                "{LOW_BALANCE_EVENT}:{}:{}",
                self.bucket_id, self.seq
            )),
        }
    }
}

/// Puts the crossings' events into the event pipeline (events rows and their `process_event`
/// jobs through the outbox), in the caller's transaction: the one that moved the balances.
pub async fn emit(
    conn: &mut PgConnection,
    crossings: &[LowBalance],
    opts: &EnqueueOptions,
) -> Result<Vec<Accepted>, EnqueueError> {
    if crossings.is_empty() {
        return Ok(Vec::new());
    }
    let projects: Vec<Uuid> = crossings.iter().map(|c| c.project_id).collect();
    let events: Vec<NewEvent> = crossings.iter().map(LowBalance::to_event).collect();
    crate::db::events::accept_across(conn, &projects, &events, opts).await
}

/// A bucket to create (validated by the caller).
#[derive(Debug, Clone)]
pub struct NewBucket {
    /// Trimmed, 1 to 100 characters.
    pub name: String,
    /// Its currency.
    pub currency: Currency,
    /// The opening balance.
    pub balance: Amount,
    /// The low-balance threshold (≥ 0).
    pub low_threshold: Amount,
    /// The re-arm margin (≥ 0).
    pub rearm_margin: Amount,
    /// Whether debits may take the balance below zero.
    pub allow_negative: bool,
    /// Who creates it.
    pub created_by: Option<Uuid>,
}

/// Creates a bucket in the caller's transaction; one that opens below its threshold starts
/// alerting, and its crossing is returned for [`emit`]. A name the project already has
/// violates `transfer_buckets_name`.
pub async fn insert(
    conn: &mut PgConnection,
    project_id: Uuid,
    new: &NewBucket,
) -> Result<(BucketRow, Option<LowBalance>), sqlx::Error> {
    let row: BucketRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        INSERT INTO transfer_buckets
            (project_id, bucket_id, name, currency, scale, balance, low_threshold, rearm_margin,
             allow_negative, created_by, alerting, alert_seq, alerting_since)
        SELECT $1, $2, $3, $4, $5, $6::numeric, $7::numeric, $8::numeric, $9, $10,
               below, below::int, CASE WHEN below THEN now() END
        FROM (SELECT $6::numeric < $7::numeric AS below) AS s
        RETURNING {COLUMNS}
        "#
    )))
    .bind(project_id)
    .bind(Uuid::now_v7())
    .bind(&new.name)
    .bind(new.currency.code())
    .bind(i16::from(new.currency.minor_units()))
    .bind(new.balance.to_sql())
    .bind(new.low_threshold.to_sql())
    .bind(new.rearm_margin.to_sql())
    .bind(new.allow_negative)
    .bind(new.created_by)
    .fetch_one(conn)
    .await?;
    let crossing = row.alerting.then(|| row.crossing());
    Ok((row, crossing))
}

/// Filters of the bucket list.
#[derive(Debug, Clone, Default)]
pub struct BucketFilter {
    /// Only this currency.
    pub currency: Option<String>,
    /// Only buckets below (true) or not below (false) their threshold now.
    pub below_threshold: Option<bool>,
    /// Only alerting (true) or armed (false) buckets.
    pub alerting: Option<bool>,
    /// Substring of the name (case-insensitive).
    pub search: Option<String>,
}

/// A page of the project's buckets, oldest first, after the cursor `after`.
pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    filter: &BucketFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<BucketRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        SELECT {COLUMNS} FROM transfer_buckets
        WHERE project_id = $1
          AND ($2::text IS NULL OR currency = $2)
          AND ($3::boolean IS NULL OR (balance < low_threshold) = $3)
          AND ($4::boolean IS NULL OR alerting = $4)
          AND ($5::text IS NULL OR name ILIKE $5)
          AND ($6::timestamptz IS NULL OR (created_at, bucket_id) > ($6, $7))
        ORDER BY created_at, bucket_id
        LIMIT $8
        "#
    )))
    .bind(project_id)
    .bind(&filter.currency)
    .bind(filter.below_threshold)
    .bind(filter.alerting)
    .bind(super::users::like_pattern(&filter.search))
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One bucket of the project.
pub async fn find(
    conn: &mut PgConnection,
    project_id: Uuid,
    bucket_id: Uuid,
) -> Result<Option<BucketRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM transfer_buckets WHERE project_id = $1 AND bucket_id = $2"
    )))
    .bind(project_id)
    .bind(bucket_id)
    .fetch_optional(conn)
    .await
}

/// Locks one bucket of the project for the rest of the caller's transaction, and reads it.
pub async fn lock(
    conn: &mut PgConnection,
    project_id: Uuid,
    bucket_id: Uuid,
) -> Result<Option<BucketRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM transfer_buckets WHERE project_id = $1 AND bucket_id = $2 \
         FOR UPDATE"
    )))
    .bind(project_id)
    .bind(bucket_id)
    .fetch_optional(conn)
    .await
}

/// Sets a [`lock`]ed bucket's threshold and margin, and applies the state transition to its
/// balance at once: a bucket the new threshold puts below it crosses now (returned for
/// [`emit`]), one it puts above threshold + margin is re-armed.
pub async fn set_threshold(
    conn: &mut PgConnection,
    locked: &BucketRow,
    threshold: &Amount,
    margin: &Amount,
) -> Result<(BucketRow, Option<LowBalance>), sqlx::Error> {
    let row: BucketRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE transfer_buckets SET low_threshold = $3::numeric, rearm_margin = $4::numeric, {} \
         WHERE project_id = $1 AND bucket_id = $2 RETURNING {COLUMNS}",
        transition("balance", "$3::numeric", "$4::numeric")
    )))
    .bind(locked.project_id)
    .bind(locked.bucket_id)
    .bind(threshold.to_sql())
    .bind(margin.to_sql())
    .fetch_one(conn)
    .await?;
    let crossing = (row.alert_seq > locked.alert_seq).then(|| row.crossing());
    Ok((row, crossing))
}

/// Credit or debit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovementKind {
    /// Adds to the balance.
    Credit,
    /// Takes from it.
    Debit,
}

impl MovementKind {
    /// As stored and shown: `credit`, `debit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Credit => "credit",
            Self::Debit => "debit",
        }
    }
}

/// A balance movement to apply (validated by the caller, but for the amount's decimal places,
/// which depend on the bucket's currency: see [`Movement::check_scale`]).
#[derive(Debug, Clone)]
pub struct Movement {
    /// Credit or debit.
    pub kind: MovementKind,
    /// Greater than zero.
    pub amount: Amount,
    /// The caller's reference (1 to 200 characters), if any.
    pub reference: Option<String>,
    /// Unique per bucket: the same key answers the first movement.
    pub idempotency_key: String,
    /// Who moves it.
    pub actor_id: Option<Uuid>,
}

impl Movement {
    /// The change to the balance, as `numeric` text.
    fn delta(&self) -> String {
        match self.kind {
            MovementKind::Credit => self.amount.to_sql(),
            MovementKind::Debit => self.amount.negated().to_sql(),
        }
    }
}

/// A movement as recorded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransactionRow {
    /// Id (UUIDv7).
    pub transaction_id: Uuid,
    /// The bucket.
    pub bucket_id: Uuid,
    /// `credit` or `debit`.
    pub kind: String,
    /// The amount (> 0), at the currency's scale.
    pub amount: String,
    /// The bucket's currency.
    pub currency: String,
    /// The caller's reference.
    pub reference: Option<String>,
    /// The caller's idempotency key.
    pub idempotency_key: String,
    /// The balance right after it.
    pub balance_after: String,
    /// Who moved it (`None`: a service token).
    pub actor_id: Option<Uuid>,
    /// When.
    pub created_at: DateTime<Utc>,
}

const TX_COLUMNS: &str = "t.transaction_id, t.bucket_id, t.kind, \
    round(t.amount, b.scale)::text AS amount, b.currency, t.reference, t.idempotency_key, \
    round(t.balance_after, b.scale)::text AS balance_after, t.actor_id, t.created_at";

/// What applying a movement did.
#[derive(Debug)]
pub enum Applied {
    /// Applied now: the movement, the bucket after it, and the crossing it caused, if any.
    Done {
        /// The recorded movement.
        transaction: TransactionRow,
        /// The bucket after it.
        bucket: Box<BucketRow>,
        /// The crossing, for [`emit`] in the same transaction.
        crossing: Option<LowBalance>,
    },
    /// The key names an earlier movement with the same kind, amount and reference: that one.
    Replayed(TransactionRow),
    /// The key names an earlier movement that differs: refused.
    KeyReused(TransactionRow),
    /// A debit below zero on a bucket that does not allow it: refused (the balance now).
    Insufficient {
        /// The balance, which the debit exceeds.
        balance: String,
    },
    /// The balance would leave `numeric(19, 4)` (|balance| ≥ 10^15): refused.
    OutOfRange,
}

/// Applies a movement to a [`lock`]ed bucket in the caller's transaction: a repeated key
/// answers the first movement (or refuses a different one); otherwise the balance moves, the
/// state transition applies in the same statement, and the movement is recorded with the
/// balance after it. The row lock serialises movements of one bucket, so concurrent ones are
/// never lost, and a key's movement is applied once.
pub async fn apply(
    conn: &mut PgConnection,
    locked: &BucketRow,
    m: &Movement,
) -> Result<Applied, sqlx::Error> {
    let (project_id, bucket_id) = (locked.project_id, locked.bucket_id);
    let earlier: Option<Earlier> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        SELECT t.kind = $4 AND t.amount = $5::numeric
                   AND t.reference IS NOT DISTINCT FROM $6 AS same,
               {TX_COLUMNS}
        FROM bucket_transactions t JOIN transfer_buckets b USING (project_id, bucket_id)
        WHERE t.project_id = $1 AND t.bucket_id = $2 AND t.idempotency_key = $3
        "#
    )))
    .bind(project_id)
    .bind(bucket_id)
    .bind(&m.idempotency_key)
    .bind(m.kind.as_str())
    .bind(m.amount.to_sql())
    .bind(&m.reference)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(Earlier { same, row }) = earlier {
        return Ok(if same {
            Applied::Replayed(row)
        } else {
            Applied::KeyReused(row)
        });
    }

    let delta = m.delta();
    let (allowed, in_range): (bool, bool) = sqlx::query_as(
        "SELECT allow_negative OR balance + $3::numeric >= 0, \
                abs(balance + $3::numeric) < 1e15 \
         FROM transfer_buckets WHERE project_id = $1 AND bucket_id = $2",
    )
    .bind(project_id)
    .bind(bucket_id)
    .bind(&delta)
    .fetch_one(&mut *conn)
    .await?;
    if !in_range {
        return Ok(Applied::OutOfRange);
    }
    if !allowed {
        return Ok(Applied::Insufficient {
            balance: locked.balance.clone(),
        });
    }

    let bucket: BucketRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE transfer_buckets SET balance = balance + $3::numeric, {} \
         WHERE project_id = $1 AND bucket_id = $2 RETURNING {COLUMNS}",
        transition("balance + $3::numeric", "low_threshold", "rearm_margin")
    )))
    .bind(project_id)
    .bind(bucket_id)
    .bind(&delta)
    .fetch_one(&mut *conn)
    .await?;
    let transaction: TransactionRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
            WITH t AS (
                INSERT INTO bucket_transactions
                    (project_id, bucket_id, transaction_id, kind, amount, reference,
                     idempotency_key, balance_after, actor_id, created_at)
                -- the clock under the row lock, not the transaction's start: movements list
                -- in the order they were applied
                SELECT $1, $2, $3, $4, $5::numeric, $6, $7, balance, $8, clock_timestamp()
                FROM transfer_buckets WHERE project_id = $1 AND bucket_id = $2
                RETURNING *
            )
            SELECT {TX_COLUMNS} FROM t JOIN transfer_buckets b USING (project_id, bucket_id)
            "#
    )))
    .bind(project_id)
    .bind(bucket_id)
    .bind(Uuid::now_v7())
    .bind(m.kind.as_str())
    .bind(m.amount.to_sql())
    .bind(&m.reference)
    .bind(&m.idempotency_key)
    .bind(m.actor_id)
    .fetch_one(&mut *conn)
    .await?;
    let crossing = (bucket.alert_seq > locked.alert_seq).then(|| bucket.crossing());
    Ok(Applied::Done {
        transaction,
        bucket: Box::new(bucket),
        crossing,
    })
}

/// A movement found by its key, and whether the request repeats it.
#[derive(sqlx::FromRow)]
struct Earlier {
    same: bool,
    #[sqlx(flatten)]
    row: TransactionRow,
}

/// A page of a bucket's movements, oldest first, after the cursor `after`.
pub async fn list_transactions(
    pool: &PgPool,
    project_id: Uuid,
    bucket_id: Uuid,
    kind: Option<MovementKind>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<TransactionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        SELECT {TX_COLUMNS}
        FROM bucket_transactions t JOIN transfer_buckets b USING (project_id, bucket_id)
        WHERE t.project_id = $1 AND t.bucket_id = $2
          AND ($3::text IS NULL OR t.kind = $3)
          AND ($4::timestamptz IS NULL OR (t.created_at, t.transaction_id) > ($4, $5))
        ORDER BY t.created_at, t.transaction_id
        LIMIT $6
        "#
    )))
    .bind(project_id)
    .bind(bucket_id)
    .bind(kind.map(MovementKind::as_str))
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// What one sweep batch changed.
#[derive(Debug, Default)]
pub struct Settled {
    /// Buckets whose state changed (alerted or re-armed).
    pub changed: usize,
    /// The crossings among them, for [`emit`] in the same transaction.
    pub crossings: Vec<LowBalance>,
}

/// Applies the state transition to at most `limit` buckets whose state is stale (of one
/// project, or of every live project), in one statement: the stale rows come from the
/// `transfer_buckets_stale` partial index, locked `SKIP LOCKED` (a row a movement holds is that
/// movement's to settle; a concurrent sweep takes other rows), and the update re-checks the
/// predicate on the locked row, so a crossing is raised once whoever gets there first. Writes
/// only the rows whose state changes. Fewer than `limit` changes: nothing stale is left that
/// was not locked by someone else.
pub async fn settle_stale(
    conn: &mut PgConnection,
    project_id: Option<Uuid>,
    limit: i64,
) -> Result<Settled, sqlx::Error> {
    let rows: Vec<BucketRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        WITH due AS (
            SELECT project_id AS due_project, bucket_id AS due_bucket FROM transfer_buckets
            WHERE {STALE}
              AND ($1::uuid IS NULL OR project_id = $1)
              AND EXISTS (SELECT 1 FROM projects p
                          WHERE p.project_id = transfer_buckets.project_id
                            AND p.deleted_at IS NULL)
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        )
        UPDATE transfer_buckets b SET {}
        FROM due
        WHERE b.project_id = due.due_project AND b.bucket_id = due.due_bucket
          AND {STALE}
        RETURNING {COLUMNS}
        "#,
        transition("balance", "low_threshold", "rearm_margin")
    )))
    .bind(project_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(Settled {
        changed: rows.len(),
        crossings: rows
            .iter()
            .filter(|r| r.alerting)
            .map(BucketRow::crossing)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweeps_predicate_is_the_partial_indexs() {
        let migration = include_str!("../../../migrations/20261204300001_transfer_buckets.sql");
        let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let index = squash(
            migration
                .split("CREATE INDEX transfer_buckets_stale")
                .nth(1)
                .and_then(|s| s.split("WHERE").nth(1))
                .and_then(|s| s.split(';').next())
                .expect("the index"),
        );
        let ours = squash(STALE);
        assert_eq!(format!("({index})"), ours);
    }

    #[test]
    fn a_low_balance_event_carries_amounts_as_strings_and_a_key_per_crossing() {
        let c = LowBalance {
            project_id: Uuid::nil(),
            bucket_id: Uuid::nil(),
            name: "ops".into(),
            currency: "USD".into(),
            balance: "9.99".into(),
            threshold: "10.00".into(),
            seq: 2,
        };
        let e = c.to_event();
        assert_eq!(e.event_type, "bucket.low_balance");
        assert_eq!(
            e.payload,
            serde_json::json!({"bucketId": Uuid::nil(), "name": "ops", "balance": "9.99",
                               "threshold": "10.00", "currency": "USD"})
        );
        assert_eq!(
            e.idempotency_key.as_deref(),
            Some("bucket.low_balance:00000000-0000-0000-0000-000000000000:2")
        );
    }
}
