//! Notification preferences' SQL: a user's channels (on/off) and email quiet hours, one row per
//! user, read by `deliver_notification` at delivery time. No row means the defaults.

use chrono::NaiveTime;
use sqlx::PgPool;
use uuid::Uuid;

/// A user's preferences.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Preferences {
    /// In-app notifications on.
    pub in_app: bool,
    /// Email notifications on.
    pub email: bool,
    /// Email quiet hours: start (local time), or none.
    pub quiet_start: Option<NaiveTime>,
    /// Email quiet hours: end (local time, may be before the start: the window crosses
    /// midnight).
    pub quiet_end: Option<NaiveTime>,
    /// The time zone quiet hours are in (IANA name).
    pub time_zone: String,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            in_app: true,
            email: true,
            quiet_start: None,
            quiet_end: None,
            time_zone: "UTC".into(),
        }
    }
}

/// The user's preferences (the defaults if they never set any).
pub async fn get(
    pool: &PgPool,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<Preferences, sqlx::Error> {
    let row: Option<Preferences> = sqlx::query_as(
        "SELECT in_app, email, quiet_start, quiet_end, time_zone FROM notification_preferences \
         WHERE project_id = $1 AND user_id = $2",
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.unwrap_or_default())
}

/// Replaces the user's preferences.
pub async fn put(
    pool: &PgPool,
    project_id: Uuid,
    user_id: Uuid,
    p: &Preferences,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        INSERT INTO notification_preferences
            (project_id, user_id, in_app, email, quiet_start, quiet_end, time_zone)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (project_id, user_id) DO UPDATE SET
            in_app = EXCLUDED.in_app, email = EXCLUDED.email,
            quiet_start = EXCLUDED.quiet_start, quiet_end = EXCLUDED.quiet_end,
            time_zone = EXCLUDED.time_zone, updated_at = now()
        "#,
    )
    .bind(project_id)
    .bind(user_id)
    .bind(p.in_app)
    .bind(p.email)
    .bind(p.quiet_start)
    .bind(p.quiet_end)
    .bind(&p.time_zone)
    .execute(pool)
    .await?;
    Ok(())
}
