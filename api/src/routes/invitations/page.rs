//! The invitation accept page: what the emailed link (`<APP_BASE_URL>/invitations/accept?token=…`)
//! opens. A small server-rendered page (no JavaScript, no assets): the invitee's email and the
//! project's name, a name field prefilled with the name given at invitation, a password field.
//! The form posts back to the same path, and the answer is a page too: success, the form again
//! with every refusal of the password policy, or a clear problem (unknown or used link,
//! expired invitation, too many attempts).
//!
//! Forgery: the page sets a random nonce in a cookie (`HttpOnly`, `SameSite=Strict`, this path
//! only) and puts in the form an HMAC of that nonce and the invitation token's hash
//! ([`shared::secrets::form_token`]); a post whose token does not match its cookie and its
//! invitation is refused (403). The pages are never cached, never framed, send no referrer
//! (the URL holds the token), and their policy forbids scripts.

use std::sync::LazyLock;

use axum::{
    Form,
    extract::{Query, State, rejection::FormRejection, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shared::{
    db::{self, users::UserStatus},
    domain::{DisplayName, MAX_NAME, MAX_PASSWORD, MIN_PASSWORD, Password},
    secrets,
};
use utoipa::{IntoParams, ToSchema};

use super::{AcceptInvitation, EXPIRED, MAX_TOKEN, accept};
use crate::{
    AppState,
    client_ip::ClientIp,
    error::{ApiError, Result},
    extract::Validate,
    rate_limit,
};

/// The cookie holding the form nonce.
const COOKIE: &str = "comet_form";

static TEMPLATES: LazyLock<tera::Tera> = LazyLock::new(|| {
    let mut tera = tera::Tera::new();
    tera.autoescape_on(vec![".html"]);
    tera.add_raw_template("accept.html", include_str!("accept.html"))
        .expect("the accept page template parses");
    tera
});

/// The link's query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The invitation token from the emailed link.
    #[param(min_length = 1, max_length = 512)]
    pub token: String,
}

/// The accept form as the browser posts it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AcceptForm {
    /// The invitation token (a hidden field of the page).
    #[schema(min_length = 1, max_length = 512)]
    pub token: String,
    /// The anti-forgery token (a hidden field of the page, bound to its cookie).
    #[schema(min_length = 1, max_length = 128)]
    pub csrf: String,
    /// Display name (blank keeps the one given at invitation).
    #[schema(value_type = Option<DisplayName>)]
    pub name: Option<String>,
    /// The password to log in with.
    #[schema(value_type = Password)]
    pub password: String,
}

#[derive(Serialize)]
struct View<'a> {
    state: &'a str,
    title: &'a str,
    message: &'a str,
    email: &'a str,
    project_name: &'a str,
    name: &'a str,
    token: &'a str,
    csrf: &'a str,
    errors: Vec<String>,
    min_password: usize,
    max_password: usize,
    max_name: usize,
}

impl Default for View<'_> {
    fn default() -> Self {
        Self {
            state: "problem",
            title: "",
            message: "",
            email: "",
            project_name: "",
            name: "",
            token: "",
            csrf: "",
            errors: Vec::new(),
            min_password: MIN_PASSWORD,
            max_password: MAX_PASSWORD,
            max_name: MAX_NAME,
        }
    }
}

/// A page with the headers every one of them carries.
fn page(status: StatusCode, view: &View<'_>) -> Response {
    let html = match tera::Context::from_serialize(view)
        .and_then(|ctx| TEMPLATES.render("accept.html", &ctx))
    {
        Ok(html) => html,
        Err(e) => {
            return ApiError::Internal(anyhow::anyhow!("Failed to render the accept page: {e}"))
                .into_response();
        }
    };
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
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
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    resp
}

fn problem(status: StatusCode, title: &str, message: &str) -> Response {
    page(
        status,
        &View {
            title,
            message,
            ..View::default()
        },
    )
}

/// The page for a refusal of the acceptance (logged as the JSON route would log it).
fn refusal(e: ApiError) -> Response {
    let (title, message) = match &e {
        ApiError::NotFound(_) => (
            "This invitation link does not work",
            "It was already used, replaced by a newer invitation, or never existed. If you \
             already accepted, log in; otherwise ask whoever invited you to send a new one.",
        ),
        ApiError::Gone(_) => ("This invitation has expired", EXPIRED),
        ApiError::TooManyRequests { .. } => (
            "Too many attempts",
            "Too many attempts from your address: wait a minute, then try again.",
        ),
        ApiError::Busy { .. } | ApiError::Unavailable(_) => (
            "Comet is busy",
            "Comet cannot take this right now: try again in a moment.",
        ),
        _ => (
            "Something went wrong",
            "Your invitation could not be accepted because of an error on our side; try again \
             later.",
        ),
    };
    // the JSON answer's status, headers (Retry-After) and logging; its body is replaced
    let json = e.into_response();
    let mut resp = problem(json.status(), title, message);
    if let Some(retry) = json.headers().get(header::RETRY_AFTER) {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, retry.clone());
    }
    resp
}

/// What the page shows of an invitation: its invitee's email and name, and its project's name.
struct Invitee {
    email: String,
    name: String,
    project_name: String,
}

/// The invitation of a token hash, if it can still be accepted.
async fn invitee(s: &AppState, token_hash: &str) -> Result<Invitee> {
    let mut conn = s.pool.acquire().await?;
    let invitation = db::invitations::find_by_token_hash(&mut conn, token_hash)
        .await?
        .ok_or(ApiError::NotFound("invitation"))?;
    if invitation.expires_at <= Utc::now() {
        return Err(ApiError::Gone(EXPIRED));
    }
    let user = db::users::find(&mut conn, invitation.project_id, invitation.user_id)
        .await?
        .filter(|u| u.status == UserStatus::Invited)
        .ok_or(ApiError::NotFound("invitation"))?;
    let project = db::projects::find(&mut conn, invitation.project_id)
        .await?
        .ok_or(ApiError::NotFound("invitation"))?;
    Ok(Invitee {
        email: user.email,
        name: user.name.unwrap_or_default(),
        project_name: project.name,
    })
}

/// The form nonce of the request's cookie, if it sent one.
fn cookie_nonce(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| {
            (20..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The form for `view`, setting the nonce cookie when the browser had none.
fn form_page(
    s: &AppState,
    status: StatusCode,
    invitee: &Invitee,
    token: &str,
    nonce: Option<String>,
    name: Option<&str>,
    errors: Vec<String>,
) -> Response {
    let fresh = nonce.is_none();
    let nonce = nonce.unwrap_or_else(secrets::new_token);
    let csrf = secrets::form_token(
        &s.settings.auth.jwt_secret,
        &nonce,
        &secrets::token_hash(token),
    );
    let mut resp = page(
        status,
        &View {
            state: "form",
            title: "Accept your invitation",
            email: &invitee.email,
            project_name: &invitee.project_name,
            name: name.unwrap_or(&invitee.name),
            token,
            csrf: &csrf,
            errors,
            ..View::default()
        },
    );
    if fresh {
        let secure = if s.settings.users.app_base_url.starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        let cookie = format!(
            "{COOKIE}={nonce}; Path=/invitations; HttpOnly; SameSite=Strict; Max-Age=86400{secure}"
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    resp
}

const BAD_LINK: &str = "The link is incomplete: open it again from your invitation email, whole.";

/// The accept page of an invitation link (HTML).
///
/// Public (the token is the credential). 200: the form; 400: no usable token in the link;
/// 404: an unknown or already used link; 410: an expired invitation; 429 past
/// `RATE_LIMIT_ACCEPT_PER_IP` (views and submissions count together). Every answer is an HTML
/// page.
#[utoipa::path(get, path = "/invitations/accept", tag = "invitations",
    params(PageQuery),
    responses((status = 200, content_type = "text/html", body = String, description = "The accept form"),
              (status = 400, content_type = "text/html", body = String, description = "No usable token"),
              (status = 404, content_type = "text/html", body = String, description = "Unknown or used link"),
              (status = 410, content_type = "text/html", body = String, description = "Expired invitation"),
              (status = 429, content_type = "text/html", body = String, description = "Too many attempts"),
              (status = 503, content_type = "text/html", body = String, description = "Busy")))]
pub(super) async fn show_accept_page(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    query: std::result::Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(PageQuery { token })) = query else {
        return problem(StatusCode::BAD_REQUEST, "This link is incomplete", BAD_LINK);
    };
    if !(1..=MAX_TOKEN).contains(&token.chars().count()) {
        return problem(StatusCode::BAD_REQUEST, "This link is incomplete", BAD_LINK);
    }
    let token = token.trim();
    if let Err(e) = rate_limit::check(&s, "accept-ip", &ip, &s.settings.auth.accept_per_ip).await {
        return refusal(e);
    }
    match invitee(&s, &secrets::token_hash(token)).await {
        Ok(invitee) => form_page(
            &s,
            StatusCode::OK,
            &invitee,
            token,
            cookie_nonce(&headers),
            None,
            Vec::new(),
        ),
        Err(e) => refusal(e),
    }
}

/// The accept form's submission (HTML in, HTML out).
///
/// Public (the token is the credential), and only from the page: 403 when the anti-forgery
/// token does not match the browser's cookie and the invitation. 200: accepted (the page says
/// so); 422: the form again, listing each refusal (the password policy, the name); 404, 410,
/// 429, 503 as for the JSON route, as pages.
#[utoipa::path(post, path = "/invitations/accept", tag = "invitations",
    request_body(content = AcceptForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, content_type = "text/html", body = String, description = "Accepted"),
              (status = 400, content_type = "text/html", body = String, description = "Not a form"),
              (status = 403, content_type = "text/html", body = String, description = "Not posted from the page (anti-forgery token)"),
              (status = 404, content_type = "text/html", body = String, description = "Unknown or used link"),
              (status = 410, content_type = "text/html", body = String, description = "Expired invitation"),
              (status = 422, content_type = "text/html", body = String, description = "The form again, with the refusals"),
              (status = 429, content_type = "text/html", body = String, description = "Too many attempts"),
              (status = 503, content_type = "text/html", body = String, description = "Busy")))]
pub(super) async fn submit_accept_page(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: std::result::Result<Form<AcceptForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return problem(
            StatusCode::BAD_REQUEST,
            "This form is incomplete",
            "Open the link from your invitation email again and fill in the form there.",
        );
    };
    let token = form.token.trim().to_owned();
    let token_hash = secrets::token_hash(&token);
    let nonce = cookie_nonce(&headers);
    let genuine = form.token.chars().count() <= MAX_TOKEN
        && nonce.as_deref().is_some_and(|n| {
            secrets::form_token_matches(&s.settings.auth.jwt_secret, n, &token_hash, &form.csrf)
        });
    if !genuine {
        tracing::info!("accept form refused: anti-forgery token does not match");
        return problem(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "It was not sent from the invitation page in this browser, or the page is too old. \
             Open the link from your invitation email again.",
        );
    }
    let raw = AcceptInvitation {
        token: Some(token.clone()),
        password: Some(form.password),
        name: form.name.clone(),
    };
    match raw.validate() {
        Ok(acceptance) => {
            // what the success page names (read before the invitation is deleted)
            let shown = match invitee(&s, &token_hash).await {
                Ok(shown) => shown,
                Err(e) => return refusal(e),
            };
            match accept(&s, &ip, acceptance).await {
                Ok(user) => page(
                    StatusCode::OK,
                    &View {
                        state: "done",
                        title: "You're in",
                        email: &user.email,
                        project_name: &shown.project_name,
                        ..View::default()
                    },
                ),
                Err(e) => refusal(e),
            }
        }
        Err(errors) => match invitee(&s, &token_hash).await {
            Ok(invitee) => {
                let errors = errors
                    .as_slice()
                    .iter()
                    .map(|e| format!("{}: {}", label(&e.field), e.message))
                    .collect();
                form_page(
                    &s,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &invitee,
                    &token,
                    nonce,
                    form.name.as_deref(),
                    errors,
                )
            }
            Err(e) => refusal(e),
        },
    }
}

/// A field as the page names it.
fn label(field: &str) -> &str {
    match field {
        "password" => "Password",
        "name" => "Name",
        other => other,
    }
}
