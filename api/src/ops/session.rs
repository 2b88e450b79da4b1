//! The ops console's session: the access token of a sign-in, in an `HttpOnly`,
//! `SameSite=Strict` cookie (`Secure` when the request came over TLS), and the CSRF token the
//! page sends with every request in `X-CSRF-Token`.
//!
//! The cookie holds an ordinary access token (a user's login, or a platform operator's token
//! pasted into the sign-in page), so everything that revokes tokens revokes the console too:
//! sign-out, a role change, a deactivation, a suspended project. The CSRF token is an HMAC of
//! the token's `jti` under a key derived from `JWT_SECRET` ([`shared::secrets::form_token`]):
//! nothing to store, and it dies with the session.
//!
//! [`from_cookie`] is how `crate::auth` accepts the cookie on `/api/v1` routes: only when the
//! request has no `Authorization` header, and only with the matching `X-CSRF-Token` on every
//! method (reads too: a cross-site page can send neither the `SameSite=Strict` cookie nor a
//! custom header without a CORS preflight, which Comet never grants). The token itself never
//! reaches the page's JavaScript.

use axum::http::{HeaderMap, HeaderValue, header, request::Parts};
use shared::{auth::Claims, secrets};

use crate::{AppState, error::ApiError};

/// The session cookie.
pub const COOKIE: &str = "comet_ops";

/// The header the page sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What the CSRF token is bound to besides the session's `jti` (so it is never the token of
/// another form).
const CSRF_PURPOSE: &str = "comet-ops-session";

/// Longest cookie value read (an access token is far shorter).
const MAX_COOKIE: usize = 8192;

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= MAX_COOKIE)
}

/// The CSRF token of a session.
pub fn csrf_token(state: &AppState, claims: &Claims) -> String {
    secrets::form_token(
        &state.settings.auth.jwt_secret,
        &claims.jti.to_string(),
        CSRF_PURPOSE,
    )
}

/// Whether `presented` is the CSRF token of the session (constant time).
pub fn csrf_matches(state: &AppState, claims: &Claims, presented: &str) -> bool {
    secrets::form_token_matches(
        &state.settings.auth.jwt_secret,
        &claims.jti.to_string(),
        CSRF_PURPOSE,
        presented,
    )
}

/// The verified claims of the request's session cookie (signature and expiry only; the
/// revocation check is `crate::auth::check_session`), if it has one.
pub fn cookie_claims(state: &AppState, headers: &HeaderMap) -> Option<Claims> {
    let token = cookie(headers, COOKIE)?;
    shared::auth::verify(&state.settings.auth.jwt_secret, token).ok()
}

/// The session cookie as a credential of an API request: `None` when the request sends an
/// `Authorization` header (that is used instead) or no cookie; 401 when the cookie is invalid
/// or expired, or the request lacks the session's `X-CSRF-Token`.
pub(crate) fn from_cookie(parts: &Parts, state: &AppState) -> Result<Option<Claims>, ApiError> {
    if parts.headers.contains_key(header::AUTHORIZATION) || cookie(&parts.headers, COOKIE).is_none()
    {
        return Ok(None);
    }
    let claims = cookie_claims(state, &parts.headers).ok_or(ApiError::Unauthorized(
        "the ops console session is invalid or expired; sign in again at /ops/login",
    ))?;
    let presented = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized(
            "a request with the ops console's session cookie needs its X-CSRF-Token header",
        ))?;
    if !csrf_matches(state, &claims, presented) {
        return Err(ApiError::Unauthorized(
            "X-CSRF-Token does not match the ops console session",
        ));
    }
    Ok(Some(claims))
}

/// Whether cookies set for this request must be `Secure`: it came over TLS as the proxy in
/// front says (`X-Forwarded-Proto: https`), or Comet is served at an `https://` address
/// (`APP_BASE_URL`). Marking a cookie `Secure` needlessly only keeps it off plain HTTP.
pub fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    forwarded || state.settings.users.app_base_url.starts_with("https://")
}

/// `Set-Cookie` for a cookie on `path` living `max_age` seconds (0 deletes it).
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.max(0)
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}
