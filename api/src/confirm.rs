//! Confirmation tokens of destructive bulk actions: a preview (`dryRun`) hands one out, bound to
//! the caller and exactly what the action would do, valid for a few minutes; running the action
//! over a large set needs it back. Nothing is stored: the token is `<expiry>.<HMAC>` under a key
//! derived from `JWT_SECRET` ([`secrets::form_token`]).

use chrono::Utc;
use shared::secrets;

use crate::AppState;

/// A token for `bound_to` (caller, action and targets, as one string), valid until `expires`
/// (Unix seconds).
pub fn token(s: &AppState, bound_to: &str, expires: i64) -> String {
    let mac = secrets::form_token(
        &s.settings.auth.jwt_secret,
        &format!("bulk-confirm:{expires}"),
        bound_to,
    );
    format!("{expires}.{mac}")
}

/// Whether `presented` is an unexpired [`token`] for `bound_to` (constant-time comparison).
pub fn matches(s: &AppState, presented: Option<&str>, bound_to: &str) -> bool {
    let Some((expires, mac)) = presented.and_then(|t| t.split_once('.')) else {
        return false;
    };
    let Ok(expires) = expires.parse::<i64>() else {
        return false;
    };
    expires > Utc::now().timestamp()
        && secrets::form_token_matches(
            &s.settings.auth.jwt_secret,
            &format!("bulk-confirm:{expires}"),
            bound_to,
            mac,
        )
}
