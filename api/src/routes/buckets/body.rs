//! Buckets and movements as written (validated) and as read back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::buckets::{BucketRow, Movement, MovementKind, NewBucket, TransactionRow},
    domain::{
        Amount, Currency, DisplayName, FieldErrors, IdempotencyKey, Invalid, NonBlankName, Sign,
        SignedAmount, UnsignedAmount, required,
    },
};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{ObjectBuilder, Schema, Type},
    },
};
use uuid::Uuid;

use crate::extract::Validate;

/// Longest movement reference (characters).
pub const MAX_REFERENCE: usize = 200;

/// A transfer bucket.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    /// Id.
    pub id: Uuid,
    /// Unique in the project.
    pub name: String,
    /// ISO 4217 code.
    #[schema(value_type = Currency)]
    pub currency: String,
    /// The balance, at the currency's minor units (`"10.50"`).
    #[schema(value_type = SignedAmount)]
    pub balance: String,
    /// Below this the bucket alerts (`bucket.low_balance`).
    #[schema(value_type = UnsignedAmount)]
    pub low_balance_threshold: String,
    /// Once alerting, the bucket is re-armed above `lowBalanceThreshold + rearmMargin`.
    #[schema(value_type = UnsignedAmount)]
    pub rearm_margin: String,
    /// Whether debits may take the balance below zero.
    pub allow_negative: bool,
    /// Below its threshold and alerted; false again once re-armed.
    pub alerting: bool,
    /// When the current alert began (null while armed).
    pub alerting_since: Option<DateTime<Utc>>,
    /// Crossings below the threshold so far (one `bucket.low_balance` event each).
    pub alert_count: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<BucketRow> for Bucket {
    fn from(r: BucketRow) -> Self {
        Self {
            id: r.bucket_id,
            name: r.name,
            currency: r.currency,
            balance: r.balance,
            low_balance_threshold: r.low_threshold,
            rearm_margin: r.rearm_margin,
            allow_negative: r.allow_negative,
            alerting: r.alerting,
            alerting_since: r.alerting_since,
            alert_count: r.alert_seq,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A bucket to create.
///
/// What JSON Schema cannot say: amounts may have no more decimal places than the currency's
/// minor units (JPY 0, USD 2, KWD 3), and `initialBalance` may be negative only with
/// `allowNegative` (each a `422` naming the field).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketRequest {
    /// 1 to 100 characters as sent, no control characters, not blank (stored trimmed); unique
    /// in the project (`409`).
    #[schema(required = true, nullable = false, value_type = NonBlankName)]
    pub name: Option<String>,
    /// ISO 4217 code.
    #[schema(required = true, nullable = false, value_type = Currency)]
    pub currency: Option<String>,
    /// The opening balance (default `"0"`); negative only with `allowNegative`.
    #[schema(value_type = Option<SignedAmount>)]
    pub initial_balance: Option<String>,
    /// Below this the bucket alerts; zero or more.
    #[schema(required = true, nullable = false, value_type = UnsignedAmount)]
    pub low_balance_threshold: Option<String>,
    /// Re-armed only above threshold + margin (default `"0"`).
    #[schema(value_type = Option<UnsignedAmount>)]
    pub rearm_margin: Option<String>,
    /// Whether debits may take the balance below zero (default false).
    pub allow_negative: Option<bool>,
}

/// Parses an optional amount field and checks it against the currency (when that is valid).
fn amount(
    errors: &mut FieldErrors,
    field: &str,
    raw: Option<String>,
    sign: Sign,
    currency: Option<Currency>,
) -> Option<Amount> {
    let parsed = raw.map(|a| {
        Amount::parse(&a, sign).and_then(|a| match currency {
            Some(c) => a.fits(c).map(|()| a),
            None => Ok(a),
        })
    });
    errors.check(field, required(parsed).and_then(|r| r))
}

impl Validate for BucketRequest {
    type Valid = NewBucket;

    fn validate(self) -> Result<NewBucket, FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = errors.check(
            "name",
            required(self.name).and_then(|n| DisplayName::parse(&n)),
        );
        let currency = errors.check(
            "currency",
            required(self.currency).and_then(|c| Currency::parse(&c)),
        );
        let allow_negative = self.allow_negative.unwrap_or(false);
        let balance = amount(
            &mut errors,
            "initialBalance",
            Some(self.initial_balance.unwrap_or_else(|| "0".into())),
            Sign::Any,
            currency,
        );
        if balance.as_ref().is_some_and(Amount::is_negative) && !allow_negative {
            errors.add(
                "initialBalance",
                "must not be negative unless allowNegative is true",
            );
        }
        let low_threshold = amount(
            &mut errors,
            "lowBalanceThreshold",
            self.low_balance_threshold,
            Sign::NonNegative,
            currency,
        );
        let rearm_margin = amount(
            &mut errors,
            "rearmMargin",
            Some(self.rearm_margin.unwrap_or_else(|| "0".into())),
            Sign::NonNegative,
            currency,
        );
        match (name, currency, balance, low_threshold, rearm_margin) {
            (
                Some(name),
                Some(currency),
                Some(balance),
                Some(low_threshold),
                Some(rearm_margin),
            ) if errors.is_empty() => Ok(NewBucket {
                name: name.as_ref().to_owned(),
                currency,
                balance,
                low_threshold,
                rearm_margin,
                allow_negative,
                created_by: None,
            }),
            _ => Err(errors),
        }
    }
}

/// A new threshold (and margin) for a bucket.
///
/// What JSON Schema cannot say: no more decimal places than the bucket's currency has (`422`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThresholdRequest {
    /// Below this the bucket alerts; zero or more.
    #[schema(required = true, nullable = false, value_type = UnsignedAmount)]
    pub low_balance_threshold: Option<String>,
    /// Re-armed only above threshold + margin (absent: unchanged).
    #[schema(value_type = Option<UnsignedAmount>)]
    pub rearm_margin: Option<String>,
}

/// A threshold request's amounts, not yet checked against the bucket's currency.
#[derive(Debug)]
pub struct NewThreshold {
    /// The threshold.
    pub threshold: Amount,
    /// The margin, if given.
    pub margin: Option<Amount>,
}

impl NewThreshold {
    /// Checks both amounts against the bucket's currency, naming each field at fault.
    pub fn check_scale(&self, currency: Currency) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::new();
        errors.check("lowBalanceThreshold", self.threshold.fits(currency));
        if let Some(m) = &self.margin {
            errors.check("rearmMargin", m.fits(currency));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl Validate for ThresholdRequest {
    type Valid = NewThreshold;

    fn validate(self) -> Result<NewThreshold, FieldErrors> {
        let mut errors = FieldErrors::new();
        let threshold = amount(
            &mut errors,
            "lowBalanceThreshold",
            self.low_balance_threshold,
            Sign::NonNegative,
            None,
        );
        let margin = self
            .rearm_margin
            .map(|m| amount(&mut errors, "rearmMargin", Some(m), Sign::NonNegative, None));
        match (threshold, margin) {
            (Some(threshold), None) if errors.is_empty() => Ok(NewThreshold {
                threshold,
                margin: None,
            }),
            (Some(threshold), Some(Some(m))) if errors.is_empty() => Ok(NewThreshold {
                threshold,
                margin: Some(m),
            }),
            _ => Err(errors),
        }
    }
}

/// The OpenAPI schema of a movement's `type`.
pub struct MovementType;

impl PartialSchema for MovementType {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["credit", "debit"]))
            .into()
    }
}

impl ToSchema for MovementType {}

fn movement_kind(raw: &str) -> Result<MovementKind, Invalid> {
    match raw {
        "credit" => Ok(MovementKind::Credit),
        "debit" => Ok(MovementKind::Debit),
        _ => Err(Invalid::new("must be `credit` or `debit`")),
    }
}

/// A credit or a debit.
///
/// What JSON Schema cannot say: `amount` may have no more decimal places than the bucket's
/// currency (`422`); a debit that would take the balance below zero is refused (`409
/// insufficient_funds`) unless the bucket allows a negative balance; the same
/// `idempotencyKey` on the bucket answers the first movement when the body is the same and
/// `409` when it differs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MovementRequest {
    /// `credit` adds to the balance, `debit` takes from it.
    #[serde(rename = "type")]
    #[schema(required = true, nullable = false, value_type = MovementType)]
    pub kind: Option<String>,
    /// Greater than zero.
    #[schema(required = true, nullable = false, value_type = UnsignedAmount)]
    pub amount: Option<String>,
    /// The caller's reference (1 to 200 characters, no control characters).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub reference: Option<String>,
    /// Unique per bucket: a repeat with the same body answers the first movement (applied
    /// once), with a different body `409`.
    #[schema(required = true, nullable = false, value_type = IdempotencyKey)]
    pub idempotency_key: Option<String>,
}

impl Validate for MovementRequest {
    type Valid = Movement;

    fn validate(self) -> Result<Movement, FieldErrors> {
        let mut errors = FieldErrors::new();
        let kind = errors.check("type", required(self.kind).and_then(|k| movement_kind(&k)));
        let amount = amount(&mut errors, "amount", self.amount, Sign::Positive, None);
        let reference = errors.check(
            "reference",
            self.reference
                .map(|r| {
                    if r.is_empty() || r.chars().count() > MAX_REFERENCE {
                        Err(Invalid::new(format!(
                            "must be 1 to {MAX_REFERENCE} characters"
                        )))
                    } else if r.chars().any(char::is_control) {
                        Err(Invalid::new("must not contain control characters"))
                    } else {
                        Ok(r)
                    }
                })
                .transpose(),
        );
        let key = errors.check(
            "idempotencyKey",
            required(self.idempotency_key).and_then(IdempotencyKey::parse),
        );
        match (kind, amount, reference, key) {
            (Some(kind), Some(amount), Some(reference), Some(key)) if errors.is_empty() => {
                Ok(Movement {
                    kind,
                    amount,
                    reference,
                    idempotency_key: key.as_ref().to_owned(),
                    actor_id: None,
                })
            }
            _ => Err(errors),
        }
    }
}

/// A movement of a bucket's balance.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    /// Id.
    pub id: Uuid,
    /// The bucket.
    pub bucket_id: Uuid,
    /// `credit` or `debit`.
    #[serde(rename = "type")]
    #[schema(value_type = MovementType)]
    pub kind: String,
    /// The amount (greater than zero).
    #[schema(value_type = UnsignedAmount)]
    pub amount: String,
    /// The bucket's currency.
    #[schema(value_type = Currency)]
    pub currency: String,
    /// The caller's reference.
    #[schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub reference: Option<String>,
    /// The caller's idempotency key.
    pub idempotency_key: String,
    /// The balance right after this movement.
    #[schema(value_type = SignedAmount)]
    pub balance_after: String,
    /// The user who moved it (null: a service token).
    pub actor_id: Option<Uuid>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<TransactionRow> for Transaction {
    fn from(r: TransactionRow) -> Self {
        Self {
            id: r.transaction_id,
            bucket_id: r.bucket_id,
            kind: r.kind,
            amount: r.amount,
            currency: r.currency,
            reference: r.reference,
            idempotency_key: r.idempotency_key,
            balance_after: r.balance_after,
            actor_id: r.actor_id,
            created_at: r.created_at,
        }
    }
}
