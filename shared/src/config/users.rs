//! The user-management panel: invitations and their limits.

use super::{ConfigError, Env, RateLimit};

/// Settings of the user-management panel.
#[derive(Debug, Clone)]
pub struct UserSettings {
    /// `APP_BASE_URL`: the dashboard's URL; invitation links point at
    /// `<APP_BASE_URL>/invitations/accept?token=…` (default `http://localhost:8080`).
    pub app_base_url: String,
    /// `ALLOWED_INVITE_DOMAINS`: comma list of email domains invitees and inviters must use
    /// (empty: no restriction).
    pub allowed_invite_domains: Vec<String>,
    /// `INVITATION_EXPIRY_DAYS`: how long an invitation works (default 30).
    pub invitation_expiry_days: u32,
    /// `RATE_LIMIT_INVITE_PER_USER`: invites and resends per inviter (default `20/3600`).
    pub invite_per_user: RateLimit,
    /// `RATE_LIMIT_INVITE_PER_PROJECT`: invites and resends per project (default `200/3600`).
    pub invite_per_project: RateLimit,
}

impl UserSettings {
    pub(super) fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let invitation_expiry_days = env.parse("INVITATION_EXPIRY_DAYS", 30)?;
        if invitation_expiry_days == 0 {
            return Err(env.invalid("INVITATION_EXPIRY_DAYS", "must be at least 1"));
        }
        Ok(Self {
            app_base_url: env
                .get("APP_BASE_URL")
                .unwrap_or_else(|| "http://localhost:8080".into())
                .trim_end_matches('/')
                .to_owned(),
            allowed_invite_domains: env
                .list("ALLOWED_INVITE_DOMAINS")
                .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
            invitation_expiry_days,
            invite_per_user: env
                .parse("RATE_LIMIT_INVITE_PER_USER", RateLimit::per_secs(20, 3600))?,
            invite_per_project: env.parse(
                "RATE_LIMIT_INVITE_PER_PROJECT",
                RateLimit::per_secs(200, 3600),
            )?,
        })
    }
}
