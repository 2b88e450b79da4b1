//! The user-management panel: invitations, the pages emails link to, and their limits.

use super::{ConfigError, Env, RateLimit};

/// Settings of the user-management panel.
#[derive(Debug, Clone)]
pub struct UserSettings {
    /// `APP_BASE_URL`: where people reach Comet (the API, or a proxy in front of it and the
    /// dashboard); links in emails start with it (default `http://localhost:8080`).
    pub app_base_url: String,
    /// `INVITATION_ACCEPT_URL`: the page invitation emails link to, with `?token=…` appended
    /// (unset: `<APP_BASE_URL>/invitations/accept`, the API's own accept page; see
    /// [`UserSettings::invitation_accept_page`]). A dashboard with its own page sets its
    /// address here.
    pub invitation_accept_url: Option<String>,
    /// `PASSWORD_RESET_URL`: a page that takes a reset token as `?token=…` (a dashboard's); when
    /// set, reset emails link to it, else they carry the token for
    /// `POST /api/v1/auth/password-reset/confirm` (default unset).
    pub password_reset_url: Option<String>,
    /// `ALLOWED_INVITE_DOMAINS`: comma list of email domains invitees and inviters must use
    /// (empty: no restriction).
    pub allowed_invite_domains: Vec<String>,
    /// `IMPORT_MAX_BYTES`: largest file `POST /api/v1/users/imports` takes (default 200 MiB).
    pub import_max_bytes: u64,
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
        let app_base_url = env
            .get("APP_BASE_URL")
            .unwrap_or_else(|| "http://localhost:8080".into())
            .trim_end_matches('/')
            .to_owned();
        let page = |name: &'static str| -> Result<Option<String>, ConfigError> {
            let Some(raw) = env.get(name) else {
                return Ok(None);
            };
            match url::Url::parse(&raw) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.fragment().is_none() => {
                    Ok(Some(raw))
                }
                _ => Err(env.invalid(name, "must be an http(s) URL without a #fragment")),
            }
        };
        Ok(Self {
            invitation_accept_url: page("INVITATION_ACCEPT_URL")?,
            password_reset_url: page("PASSWORD_RESET_URL")?,
            app_base_url,
            allowed_invite_domains: env
                .list("ALLOWED_INVITE_DOMAINS")
                .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
            invitation_expiry_days,
            import_max_bytes: env.at_least("IMPORT_MAX_BYTES", 200 * 1024 * 1024, 1024)?,
            invite_per_user: env
                .parse("RATE_LIMIT_INVITE_PER_USER", RateLimit::per_secs(20, 3600))?,
            invite_per_project: env.parse(
                "RATE_LIMIT_INVITE_PER_PROJECT",
                RateLimit::per_secs(200, 3600),
            )?,
        })
    }
}

impl UserSettings {
    /// The page invitation emails link to: `INVITATION_ACCEPT_URL`, or the API's own
    /// `<APP_BASE_URL>/invitations/accept`.
    pub fn invitation_accept_page(&self) -> String {
        self.invitation_accept_url
            .clone()
            .unwrap_or_else(|| format!("{}/invitations/accept", self.app_base_url))
    }
}

/// `page` with `token=<token>` added to its query (tokens are base64url: nothing to encode).
pub fn link_with_token(page: &str, token: &str) -> String {
    let sep = if page.contains('?') { '&' } else { '?' };
    format!("{page}{sep}token={token}")
}
