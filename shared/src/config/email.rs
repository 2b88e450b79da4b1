//! Outgoing email: SMTP or the development file outbox.

use secrecy::SecretString;

use super::{ConfigError, Env};

/// How email is sent.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// `SMTP_URL`: e.g. `smtp://user:pass@mail:587?tls=required`; unset: emails are written as
    /// `.eml` files to `EMAIL_OUTBOX_DIR` (refused in production).
    pub smtp_url: Option<SecretString>,
    /// `FROM_EMAIL`: the sender (default `Comet <no-reply@comet.local>`).
    pub from: String,
    /// `EMAIL_OUTBOX_DIR`: where emails go without SMTP (default `outbox`).
    pub outbox_dir: String,
}

impl EmailSettings {
    pub(super) fn from_env(env: &Env<'_>, production: bool) -> Result<Self, ConfigError> {
        let smtp_url = env.get("SMTP_URL");
        if smtp_url.is_none() && production {
            return Err(env.invalid(
                "SMTP_URL",
                "is required in production (the file outbox is for development)",
            ));
        }
        Ok(Self {
            smtp_url: smtp_url.map(Into::into),
            from: env
                .get("FROM_EMAIL")
                .unwrap_or_else(|| "Comet <no-reply@comet.local>".into()),
            outbox_dir: env
                .get("EMAIL_OUTBOX_DIR")
                .unwrap_or_else(|| "outbox".into()),
        })
    }
}
