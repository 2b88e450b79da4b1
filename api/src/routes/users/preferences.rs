//! `GET/PUT /users/me/notification-preferences`: the caller's notification channels (in-app,
//! email: on or off) and email quiet hours. `deliver_notification` reads them at delivery time,
//! so a change applies to every delivery after it, including notifications already queued.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use shared::{
    db::{self, preferences::Preferences},
    domain::{FieldErrors, QuietHours, parse_time_of_day, parse_time_zone},
};
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::Authenticated,
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{ValidJson, Validate},
};

/// Email quiet hours: a daily window in the user's time zone during which alert emails wait;
/// they are sent when it ends. `start` after `end` crosses midnight (`22:00`–`07:00`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuietHoursBody {
    /// Start, `HH:MM` (24-hour).
    #[schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$", example = "22:00")]
    pub start: String,
    /// End, `HH:MM`; must differ from `start`.
    #[schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$", example = "07:00")]
    pub end: String,
    /// An IANA time zone name.
    #[schema(min_length = 1, max_length = 64, example = "Europe/Paris")]
    pub time_zone: String,
}

/// Which channels deliver to the user, and when email waits.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationPreferences {
    /// In-app notifications (inbox and live stream).
    pub in_app: bool,
    /// Alert emails.
    pub email: bool,
    /// Email quiet hours; `null` for none.
    #[serde(default)]
    pub quiet_hours: Option<QuietHoursBody>,
}

impl From<Preferences> for NotificationPreferences {
    fn from(p: Preferences) -> Self {
        Self {
            in_app: p.in_app,
            email: p.email,
            quiet_hours: match (p.quiet_start, p.quiet_end) {
                (Some(start), Some(end)) => Some(QuietHoursBody {
                    start: start.format("%H:%M").to_string(),
                    end: end.format("%H:%M").to_string(),
                    time_zone: p.time_zone,
                }),
                _ => None,
            },
        }
    }
}

impl Validate for NotificationPreferences {
    type Valid = Preferences;

    fn validate(self) -> std::result::Result<Preferences, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut prefs = Preferences {
            in_app: self.in_app,
            email: self.email,
            ..Preferences::default()
        };
        if let Some(q) = &self.quiet_hours {
            let start = errors.check("quietHours.start", parse_time_of_day(&q.start));
            let end = errors.check("quietHours.end", parse_time_of_day(&q.end));
            let zone = errors.check("quietHours.timeZone", parse_time_zone(&q.time_zone));
            if let (Some(start), Some(end), Some(zone)) = (start, end, zone)
                && errors
                    .check("quietHours.end", QuietHours::new(start, end, zone))
                    .is_some()
            {
                prefs.quiet_start = Some(start);
                prefs.quiet_end = Some(end);
                prefs.time_zone = zone.name().to_owned();
            }
        }
        if errors.is_empty() {
            Ok(prefs)
        } else {
            Err(errors)
        }
    }
}

/// The caller's notification preferences (the defaults, every channel on and no quiet hours,
/// until they set some).
///
/// Any user token (no permission needed); 403 `user_token_required` for service and platform
/// tokens, which are not users.
#[utoipa::path(get, path = "/api/v1/users/me/notification-preferences", tag = "users",
    security(("bearer" = [])),
    responses((status = 200, body = inline(Data<NotificationPreferences>)),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn get_preferences(
    auth: Authenticated,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<NotificationPreferences>>> {
    let user_id = crate::caller::own_user(&auth.claims)?;
    let prefs = db::preferences::get(&s.pool, auth.claims.project_id, user_id).await?;
    Ok(ApiJson(Data::new(prefs.into())))
}

/// Replaces the caller's notification preferences. Applies to every delivery from now on,
/// including notifications already queued. `quietHours.timeZone` must be an IANA zone name
/// and `quietHours.end` must differ from its `start` (else 422, naming the field).
///
/// Any user token (no permission needed); 403 `user_token_required` for service and platform
/// tokens, which are not users.
#[utoipa::path(put, path = "/api/v1/users/me/notification-preferences", tag = "users",
    request_body = NotificationPreferences,
    security(("bearer" = [])),
    responses((status = 200, body = inline(Data<NotificationPreferences>)),
              (status = 404, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn put_preferences(
    auth: Authenticated,
    State(s): State<AppState>,
    ValidJson(prefs): ValidJson<NotificationPreferences>,
) -> Result<ApiJson<Data<NotificationPreferences>>> {
    let user_id = crate::caller::own_user(&auth.claims)?;
    let project = auth.claims.project_id;
    let mut conn = s.pool.acquire().await?;
    // the user exists in the token's project (a deleted user's token is refused elsewhere)
    db::users::find(&mut conn, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    drop(conn);
    db::preferences::put(&s.pool, project, user_id, &prefs).await?;
    Ok(ApiJson(Data::new(prefs.into())))
}
