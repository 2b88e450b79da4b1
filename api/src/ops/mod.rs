//! The ops console at `/ops`: a small single-page app (plain JavaScript, no build step, every
//! asset embedded in the binary, no CDN) for watching and steering the queues, served by the API
//! itself. It reads and acts through the same `/api/v1` routes as every client, with the
//! permissions of whoever signed in: `queues:read` for the queue and job-list views (a project's
//! admin sees its project's part of each queue; the charts, worker and outbox views, which span
//! every project, are a platform operator's), `queues:write` to pause and resume, `jobs:read` / `jobs:write` (the job's project) to
//! open, retry and cancel a job. `jobs:read` also opens the search over finished jobs
//! (`GET /api/v1/jobs`, the Postgres archive) and the failure groups
//! (`GET /api/v1/jobs/failures`): a project's own jobs, or every project's for a platform
//! operator whose token holds `queues:read` too (the default platform token does not hold
//! `jobs:read`: the page says so).
//!
//! - `GET /ops/login`, `POST /ops/login`: sign in with a Comet user's email and password, through
//!   the very code of `POST /api/v1/auth/login` (its rate limits, lock-out and audit); or
//!   `POST /ops/login/token` with a platform operator's token (platform operators have no
//!   password). Both forms carry an anti-forgery token bound to a nonce cookie, as the
//!   invitation page does (no login CSRF).
//! - The session is the sign-in's access token in an `HttpOnly`, `SameSite=Strict` cookie, and
//!   a CSRF token the page sends on every API call ([`session`]).
//! - `GET /ops`: the console (or a redirect to the sign-in page); `POST /ops/logout` revokes the
//!   token (and its refresh family) as `POST /api/v1/auth/logout` does, and clears the cookie.
//! - `GET /ops/assets/{name}`: the script and the style sheet.
//!
//! Every page is documented in the OpenAPI document (HTML, like the invitation page), never
//! cached, never framed, and its content security policy allows only this origin's script and
//! style.

pub mod session;

use std::sync::LazyLock;

use axum::{
    Form,
    extract::{Path, State, rejection::FormRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    auth::Claims,
    domain::{MAX_EMAIL, NO_NUL_PATTERN, PRINTABLE_PATTERN},
    secrets,
};
use utoipa::{
    ToSchema,
    openapi::{
        RefOr,
        schema::{ObjectBuilder, Schema, Type},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::check_session,
    client_ip::ClientIp,
    error::ApiError,
    extract::Validate,
    rate_limit,
    routes::auth::{LoginRequest, MAX_LOGIN_PASSWORD},
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show_console))
        .routes(routes!(show_sign_in, sign_in))
        .routes(routes!(sign_in_with_token))
        .routes(routes!(sign_out))
        .routes(routes!(asset))
}

/// The nonce cookie of the sign-in forms (their anti-forgery token is bound to it).
const LOGIN_COOKIE: &str = "comet_ops_login";
/// Where the nonce cookie is sent: the sign-in forms only.
const LOGIN_PATH: &str = "/ops/login";
/// What the sign-in forms' anti-forgery token is bound to besides the nonce.
const LOGIN_PURPOSE: &str = "comet-ops-login";
/// How long a sign-in page may sit before its form expires (seconds).
const LOGIN_NONCE_TTL: i64 = 3600;
/// Longest platform token the form takes (characters).
const MAX_TOKEN: usize = 4096;

/// The permissions the console's views and buttons follow.
const CONSOLE_PERMISSIONS: [&str; 6] = [
    "queues:read",
    "queues:write",
    "jobs:read",
    "jobs:write",
    "schedules:read",
    "schedules:manage",
];

static TEMPLATES: LazyLock<tera::Tera> = LazyLock::new(|| {
    let mut tera = tera::Tera::new();
    tera.autoescape_on(vec![".html"]);
    tera.add_raw_templates([
        ("login.html", include_str!("assets/login.html")),
        ("console.html", include_str!("assets/console.html")),
    ])
    .expect("the ops console's templates parse");
    tera
});

/// The embedded assets: (name, content type, bytes).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "ops.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/ops.js"),
    ),
    (
        "ops.css",
        "text/css; charset=utf-8",
        include_str!("assets/ops.css"),
    ),
];

/// The console's policy: this origin's script, style and API only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A page with the headers every one of them carries.
fn html(status: StatusCode, template: &str, ctx: &impl Serialize) -> Response {
    let body = match tera::Context::from_serialize(ctx).and_then(|c| TEMPLATES.render(template, &c))
    {
        Ok(body) => body,
        Err(e) => {
            return ApiError::Internal(anyhow::anyhow!("Failed to render {template}: {e}"))
                .into_response();
        }
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_store(h);
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    resp
}

/// Never cached, framed, sniffed, or named in a referrer.
fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// `303 See Other` to `location`.
fn see_other(location: &'static str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    no_store(resp.headers_mut());
    resp
}

/// The sign-in page's view.
#[derive(Serialize, Default)]
struct SignInView {
    csrf: String,
    problem: String,
    email: String,
    token_open: bool,
    max_email: usize,
    max_password: usize,
    max_token: usize,
}

/// The sign-in page: a fresh nonce cookie unless the browser sent one, the forms bound to it,
/// and `problem` (if any) said at the top.
fn sign_in_page(
    s: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    problem: &str,
    email: &str,
    token_open: bool,
) -> Response {
    let sent = session::cookie(headers, LOGIN_COOKIE)
        .filter(|n| (20..=64).contains(&n.len()))
        .map(str::to_owned);
    let fresh = sent.is_none();
    let nonce = sent.unwrap_or_else(secrets::new_token);
    let view = SignInView {
        csrf: secrets::form_token(&s.settings.auth.jwt_secret, &nonce, LOGIN_PURPOSE),
        problem: problem.to_owned(),
        email: email.to_owned(),
        token_open,
        max_email: MAX_EMAIL,
        max_password: MAX_LOGIN_PASSWORD,
        max_token: MAX_TOKEN,
    };
    let mut resp = html(status, "login.html", &view);
    if fresh {
        let secure = session::secure(s, headers);
        resp.headers_mut().append(
            header::SET_COOKIE,
            session::set_cookie(LOGIN_COOKIE, &nonce, LOGIN_PATH, LOGIN_NONCE_TTL, secure),
        );
    }
    resp
}

/// Whether a sign-in form was posted from the sign-in page in this browser.
fn genuine_sign_in(s: &AppState, headers: &HeaderMap, csrf: &str) -> bool {
    session::cookie(headers, LOGIN_COOKIE).is_some_and(|nonce| {
        secrets::form_token_matches(&s.settings.auth.jwt_secret, nonce, LOGIN_PURPOSE, csrf)
    })
}

const FORGED: &str = "This form has expired: it was not sent from the sign-in page in this \
                      browser, or the page is too old. Sign in again.";
const NOT_A_FORM: &str = "The sign-in form was incomplete; fill it in again.";

/// A signed-in browser: to the console, with the session cookie (living as long as its token)
/// and the sign-in nonce dropped.
fn signed_in(s: &AppState, headers: &HeaderMap, token: &str, expires_at: i64) -> Response {
    let secure = session::secure(s, headers);
    let max_age = expires_at - Utc::now().timestamp();
    let mut resp = see_other("/ops");
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        session::set_cookie(session::COOKIE, token, "/", max_age, secure),
    );
    h.append(
        header::SET_COOKIE,
        session::set_cookie(LOGIN_COOKIE, "", LOGIN_PATH, 0, secure),
    );
    resp
}

/// The sign-in page for a refused sign-in: the JSON route's status and `Retry-After`, a
/// sentence for the page (the JSON answer is logged as usual).
fn refused(
    s: &AppState,
    headers: &HeaderMap,
    e: ApiError,
    email: &str,
    token_open: bool,
) -> Response {
    let retry_after = match &e {
        ApiError::TooManyRequests { retry_after } | ApiError::Busy { retry_after, .. } => {
            Some(*retry_after)
        }
        _ => None,
    };
    let problem = match &e {
        ApiError::Unauthorized(_) if token_open => {
            "This token does not sign in: it is invalid, expired, revoked, or not a platform \
             operator's token (users sign in with their email and password)."
                .to_owned()
        }
        ApiError::Unauthorized(_) => "Invalid email or password.".to_owned(),
        ApiError::TooManyRequests { retry_after } => {
            format!("Too many attempts: try again in {retry_after} s.")
        }
        ApiError::Validation(errors) => errors
            .as_slice()
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        ApiError::ProjectSuspended => "Your project is suspended.".to_owned(),
        ApiError::ProjectDeleted => "Your project was deleted.".to_owned(),
        ApiError::Busy { .. } | ApiError::Unavailable(_) => {
            "Comet cannot sign you in right now: try again in a moment.".to_owned()
        }
        _ => "Something went wrong on our side; try again later.".to_owned(),
    };
    let json = e.into_response();
    let mut resp = sign_in_page(s, headers, json.status(), &problem, email, token_open);
    if let Some(secs) = retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The ops console's sign-in page (HTML): email and password, or a platform operator's token.
///
/// Public. 200: the forms (a nonce cookie for their anti-forgery token, `Path=/ops/login`);
/// 303 to `/ops` when the browser is already signed in.
#[utoipa::path(get, path = "/ops/login", tag = "ops-console",
    responses((status = 200, content_type = "text/html", body = String, description = "The sign-in forms"),
              (status = 303, description = "Already signed in: to the console",
               headers(("Location" = String, description = "`/ops`")))))]
async fn show_sign_in(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(claims) = session::cookie_claims(&s, &headers)
        && check_session(&s, &claims).await.is_ok()
    {
        return see_other("/ops");
    }
    sign_in_page(&s, &headers, StatusCode::OK, "", "", false)
}

/// The password sign-in form as the browser posts it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SignInForm {
    /// The user's email (as `POST /api/v1/auth/login` takes it).
    #[schema(schema_with = email_schema)]
    pub email: String,
    /// The password.
    #[schema(schema_with = password_schema)]
    pub password: String,
    /// The anti-forgery token (a hidden field of the page, bound to its cookie).
    #[schema(min_length = 1, max_length = 128)]
    pub csrf: String,
}

fn email_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "The user's email, as `POST /api/v1/auth/login` takes it",
        ))
        .min_length(Some(1))
        .max_length(Some(MAX_EMAIL))
        .pattern(Some(PRINTABLE_PATTERN))
        .into()
}

fn password_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("The password"))
        .min_length(Some(1))
        .max_length(Some(MAX_LOGIN_PASSWORD))
        .pattern(Some(NO_NUL_PATTERN))
        .into()
}

/// Signs in with a Comet user's email and password (HTML form in, redirect or page out).
///
/// Public, and only from the sign-in page: 403 when the anti-forgery token does not match the
/// browser's nonce cookie. Exactly `POST /api/v1/auth/login`'s checks, limits and audit; on
/// success 303 to `/ops` with the session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over
/// TLS), which holds the new access token and lives as long as it (`JWT_TTL_SECS`). Refusals
/// are the sign-in page again, saying why: 401, 422, 429 (with `Retry-After`), 503.
#[utoipa::path(post, path = "/ops/login", tag = "ops-console",
    request_body(content = SignInForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Signed in: to the console, with the session cookie",
               headers(("Location" = String, description = "`/ops`"),
                       ("Set-Cookie" = String, description = "The session cookie"))),
              (status = 400, content_type = "text/html", body = String, description = "Not a form"),
              (status = 401, content_type = "text/html", body = String, description = "Bad credentials"),
              (status = 403, content_type = "text/html", body = String, description = "Not posted from the sign-in page (anti-forgery token)"),
              (status = 422, content_type = "text/html", body = String, description = "An unusable field"),
              (status = 429, content_type = "text/html", body = String, description = "Too many attempts"),
              (status = 503, content_type = "text/html", body = String, description = "Busy or unavailable")))]
async fn sign_in(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: std::result::Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return sign_in_page(&s, &headers, StatusCode::BAD_REQUEST, NOT_A_FORM, "", false);
    };
    let email: String = form.email.chars().take(MAX_EMAIL).collect();
    if !genuine_sign_in(&s, &headers, &form.csrf) {
        tracing::info!("ops sign-in refused: anti-forgery token does not match");
        return sign_in_page(&s, &headers, StatusCode::FORBIDDEN, FORGED, &email, false);
    }
    let request = LoginRequest {
        email: Some(form.email),
        password: Some(form.password),
        project_id: None,
    };
    let credentials = match request.validate() {
        Ok(c) => c,
        Err(errors) => return refused(&s, &headers, ApiError::Validation(errors), &email, false),
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match crate::routes::auth::sign_in(&s, &ip, user_agent, credentials).await {
        Ok((issued, _)) => {
            // the refresh token is not kept: the console's session ends with its access token
            signed_in(
                &s,
                &headers,
                &issued.access_token,
                issued.expires_at.timestamp(),
            )
        }
        Err(e) => refused(&s, &headers, e, &email, false),
    }
}

/// The platform token sign-in form as the browser posts it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenSignInForm {
    /// A platform operator's token (`comet-api token --platform`).
    #[schema(min_length = 1, max_length = 4096)]
    pub token: String,
    /// The anti-forgery token (a hidden field of the page, bound to its cookie).
    #[schema(min_length = 1, max_length = 128)]
    pub csrf: String,
}

/// Signs a platform operator in with their token (HTML form in, redirect or page out).
///
/// Public, and only from the sign-in page (403 otherwise). Platform operators have no password:
/// the token (`comet-api token --platform`) becomes the session, in the same cookie as a
/// user's, until it expires; signing out revokes it. Only a valid, unrevoked platform token
/// signs in (401 otherwise: users sign in with their password). Counted against the login
/// limit per client IP (429).
#[utoipa::path(post, path = "/ops/login/token", tag = "ops-console",
    request_body(content = TokenSignInForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Signed in: to the console, with the session cookie",
               headers(("Location" = String, description = "`/ops`"),
                       ("Set-Cookie" = String, description = "The session cookie"))),
              (status = 400, content_type = "text/html", body = String, description = "Not a form"),
              (status = 401, content_type = "text/html", body = String, description = "Not a valid platform token"),
              (status = 403, content_type = "text/html", body = String, description = "Not posted from the sign-in page (anti-forgery token)"),
              (status = 429, content_type = "text/html", body = String, description = "Too many attempts"),
              (status = 503, content_type = "text/html", body = String, description = "Unavailable")))]
async fn sign_in_with_token(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: std::result::Result<Form<TokenSignInForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return sign_in_page(&s, &headers, StatusCode::BAD_REQUEST, NOT_A_FORM, "", true);
    };
    if !genuine_sign_in(&s, &headers, &form.csrf) {
        tracing::info!("ops token sign-in refused: anti-forgery token does not match");
        return sign_in_page(&s, &headers, StatusCode::FORBIDDEN, FORGED, "", true);
    }
    let limit = &s.settings.auth.login_per_ip;
    if let Err(e) = rate_limit::check(&s, "login-ip", &ip, limit).await {
        return refused(&s, &headers, e, "", true);
    }
    let token = form.token.trim();
    let claims = shared::auth::verify(&s.settings.auth.jwt_secret, token)
        .ok()
        .filter(|c| c.platform)
        .ok_or(ApiError::Unauthorized("not a platform token"));
    let checked = match claims {
        Ok(claims) => check_session(&s, &claims).await.map(|()| claims),
        Err(e) => Err(e),
    };
    match checked {
        Ok(claims) => {
            tracing::info!(jti = %claims.jti, "ops console: platform operator signed in");
            signed_in(&s, &headers, token, claims.exp)
        }
        Err(e) => {
            tracing::info!("ops token sign-in refused");
            refused(&s, &headers, e, "", true)
        }
    }
}

/// The console page's view.
#[derive(Serialize)]
struct ConsoleView {
    csrf: String,
    perms: String,
    expires_at: String,
    platform: bool,
    /// Every queue, space-separated: the search's queue list, which needs no `queues:read`.
    queues: String,
    who: String,
    who_title: String,
}

/// Who a session is, as the header shows it: a user's email, or the platform operator.
async fn who(s: &AppState, claims: &Claims) -> (String, String) {
    if claims.platform {
        return (
            format!("platform operator ({})", claims.sub),
            "Signed in with a platform token".to_owned(),
        );
    }
    let title = format!("Project {}", claims.project_id);
    let Ok(user) = Uuid::parse_str(&claims.sub) else {
        return (claims.sub.clone(), title);
    };
    let found = match s.pool.acquire().await {
        Ok(mut conn) => shared::db::users::find(&mut conn, claims.project_id, user)
            .await
            .ok()
            .flatten(),
        Err(_) => None,
    };
    (found.map_or_else(|| user.to_string(), |u| u.email), title)
}

/// The ops console (HTML): the page whose script reads and acts through `/api/v1` with the
/// session cookie and its CSRF token.
///
/// Public: without a valid session (none, expired, revoked) 303 to the sign-in page.
#[utoipa::path(get, path = "/ops", tag = "ops-console",
    responses((status = 200, content_type = "text/html", body = String, description = "The console"),
              (status = 303, description = "Not signed in: to the sign-in page",
               headers(("Location" = String, description = "`/ops/login`")))))]
async fn show_console(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let Some(claims) = session::cookie_claims(&s, &headers) else {
        return see_other(LOGIN_PATH);
    };
    if check_session(&s, &claims).await.is_err() {
        let mut resp = see_other(LOGIN_PATH);
        let secure = session::secure(&s, &headers);
        resp.headers_mut().append(
            header::SET_COOKIE,
            session::set_cookie(session::COOKIE, "", "/", 0, secure),
        );
        return resp;
    }
    let perms = CONSOLE_PERMISSIONS
        .into_iter()
        .filter(|p| claims.has(p))
        .collect::<Vec<_>>()
        .join(" ");
    let (who, who_title) = who(&s, &claims).await;
    let view = ConsoleView {
        csrf: session::csrf_token(&s, &claims),
        perms,
        expires_at: DateTime::from_timestamp(claims.exp, 0)
            .unwrap_or_default()
            .to_rfc3339(),
        platform: claims.platform,
        queues: shared::jobs::QUEUES.join(" "),
        who,
        who_title,
    };
    html(StatusCode::OK, "console.html", &view)
}

/// The sign-out form as the browser posts it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SignOutForm {
    /// The session's CSRF token (a hidden field of the console).
    #[schema(min_length = 1, max_length = 128)]
    pub csrf: String,
}

/// Signs out of the console (HTML form in, redirect out).
///
/// The session's token stops working at once on every process, with the refresh family of its
/// sign-in (as `POST /api/v1/auth/logout`), and the cookie is cleared: 303 to the sign-in
/// page. Only from the console: 403 when the CSRF token does not match a live session (the
/// session is kept). Without a valid session the cookie is just cleared. 503 when the
/// session store cannot record the revocation (the cookie is cleared anyway).
#[utoipa::path(post, path = "/ops/logout", tag = "ops-console",
    request_body(content = SignOutForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Signed out: to the sign-in page, the cookie cleared",
               headers(("Location" = String, description = "`/ops/login`"),
                       ("Set-Cookie" = String, description = "The cleared session cookie"))),
              (status = 400, content_type = "text/html", body = String, description = "Not a form, or no CSRF token"),
              (status = 403, content_type = "text/html", body = String, description = "Not posted from the console (CSRF token)"),
              (status = 503, content_type = "text/html", body = String, description = "The revocation could not be recorded")))]
async fn sign_out(
    State(s): State<AppState>,
    headers: HeaderMap,
    form: std::result::Result<Form<SignOutForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) if !form.csrf.is_empty() && form.csrf.len() <= 128 => form,
        _ => return sign_in_page(&s, &headers, StatusCode::BAD_REQUEST, NOT_A_FORM, "", false),
    };
    let secure = session::secure(&s, &headers);
    let clear = session::set_cookie(session::COOKIE, "", "/", 0, secure);
    if let Some(claims) = session::cookie_claims(&s, &headers) {
        if !session::csrf_matches(&s, &claims, &form.csrf) {
            tracing::info!("ops sign-out refused: CSRF token does not match");
            return sign_in_page(
                &s,
                &headers,
                StatusCode::FORBIDDEN,
                "This sign-out did not come from the console; you are still signed in.",
                "",
                false,
            );
        }
        if let Err(e) = crate::routes::auth::sign_out(&s, &claims).await {
            let json = e.into_response();
            let mut resp = sign_in_page(
                &s,
                &headers,
                json.status(),
                "Your session could not be revoked (Comet is unavailable); it was removed from \
                 this browser but stays valid until it expires. Try signing in and out again.",
                "",
                false,
            );
            resp.headers_mut().append(header::SET_COOKIE, clear);
            return resp;
        }
    }
    let mut resp = see_other(LOGIN_PATH);
    resp.headers_mut().append(header::SET_COOKIE, clear);
    resp
}

/// The console's script and style sheet, embedded in the binary.
///
/// Public. 404 for any other name.
#[utoipa::path(get, path = "/ops/assets/{name}", tag = "ops-console",
    params(("name" = String, Path, description = "`ops.js` or `ops.css`")),
    responses((status = 200, content_type = "text/javascript", body = String, description = "The asset"),
              (status = 404, body = crate::error::ErrorEnvelope)))]
async fn asset(Path(name): Path<String>) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::NotFound("asset").into_response();
    };
    let mut resp = (*body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // small, and changed by every release: revalidated each load
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_parse_and_every_asset_is_embedded() {
        LazyLock::force(&TEMPLATES);
        for name in ["ops.js", "ops.css"] {
            assert!(ASSETS.iter().any(|(n, _, b)| *n == name && !b.is_empty()));
        }
    }
}
