//! The delivery client: one signed POST to an endpoint, classified as delivered, to retry, or
//! failed for good.
//!
//! Connect and total timeouts from the settings; redirects are never followed (a 3xx is a
//! permanent failure: the endpoint's URL is wrong); no proxy; TLS verified against Mozilla's
//! roots (rustls, webpki-roots); at most `WEBHOOK_RESPONSE_BODY_CAP` bytes of the response body
//! are read. Every connection goes through the SSRF guard ([`super::guard`]).

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use reqwest::{StatusCode, header};

use super::{
    guard::{self, GuardedResolver, HostLookup, Refused, SystemLookup},
    signing::SignedHeaders,
};
use crate::config::WebhookSettings;

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// A 2xx answer.
    Delivered {
        /// Its status.
        status: u16,
        /// Milliseconds from sending to the (capped) body read.
        ms: u64,
    },
    /// Worth retrying: a 5xx, 408 or 429, a timeout, a connection failure.
    Retry {
        /// The status, when there was an answer.
        status: Option<u16>,
        /// When the endpoint asked to be retried (`Retry-After` of a 429 or 503), capped at
        /// `WEBHOOK_MAX_RETRY_AFTER_SECS`.
        retry_after: Option<Duration>,
        /// What went wrong, for the attempt record (never the URL or a secret).
        error: String,
    },
    /// Not worth retrying: any other 4xx (410 included), a redirect, a URL the guard refuses.
    Permanent {
        /// The status, when there was an answer.
        status: Option<u16>,
        /// What went wrong, for the attempt record.
        error: String,
    },
}

impl SendOutcome {
    /// The HTTP status, if the endpoint answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Delivered { status, .. } => Some(*status),
            Self::Retry { status, .. } | Self::Permanent { status, .. } => *status,
        }
    }

    /// The error, if it was not delivered.
    pub fn error(&self) -> Option<&str> {
        match self {
            Self::Delivered { .. } => None,
            Self::Retry { error, .. } | Self::Permanent { error, .. } => Some(error),
        }
    }

    /// `ok`, `retry` or `permanent`: the `delivery_attempts.outcome` of this attempt.
    pub fn as_outcome(&self) -> &'static str {
        match self {
            Self::Delivered { .. } => "ok",
            Self::Retry { .. } => "retry",
            Self::Permanent { .. } => "permanent",
        }
    }

    /// Whether it was delivered (what [`crate::db::webhook_endpoints::record_result`] takes).
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Delivered { .. })
    }
}

/// One attempt's result: the outcome, how long it took, and the start of the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Delivered, retry or permanent.
    pub outcome: SendOutcome,
    /// Milliseconds the attempt took, whatever its outcome.
    pub ms: u64,
    /// At most `WEBHOOK_RESPONSE_BODY_CAP` bytes of the response body (lossy UTF-8; empty when
    /// there was no answer).
    pub response_body: String,
}

/// The HTTP client deliveries (and the API's test messages) go through. Cheap to clone; build
/// one per process and share it.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    body_cap: usize,
    allow_private: bool,
    max_retry_after: Duration,
}

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookClient")
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

/// The `User-Agent` of deliveries.
const USER_AGENT: &str = concat!("Comet-Webhooks/", env!("CARGO_PKG_VERSION"));

impl WebhookClient {
    /// A client resolving names with the system resolver.
    pub fn new(settings: &WebhookSettings) -> Result<Self, reqwest::Error> {
        Self::with_lookup(settings, Arc::new(SystemLookup))
    }

    /// A client resolving names with `lookup` (tests resolve names without DNS).
    pub fn with_lookup(
        settings: &WebhookSettings,
        lookup: Arc<dyn HostLookup>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(false)
            .user_agent(USER_AGENT)
            .dns_resolver(Arc::new(GuardedResolver::new(
                lookup,
                settings.allow_private,
            )))
            .build()?;
        Ok(Self {
            http,
            body_cap: settings.response_body_cap,
            allow_private: settings.allow_private,
            max_retry_after: settings.max_retry_after,
        })
    }

    /// POSTs `body` (JSON) to `url` with the Standard Webhooks headers `signed`, and says what
    /// came of it. Never fails: every problem is an outcome. The URL is checked again here (its
    /// form, an IP-literal host; a name's addresses are checked by the resolver).
    #[tracing::instrument(skip_all, fields(webhook.id = %signed.id))]
    pub async fn send(&self, url: &str, signed: &SignedHeaders, body: &[u8]) -> Delivery {
        let started = Instant::now();
        let ms = |started: Instant| started.elapsed().as_millis() as u64;
        let refused = |error: String| Delivery {
            outcome: SendOutcome::Permanent {
                status: None,
                error,
            },
            ms: ms(started),
            response_body: String::new(),
        };
        let url = match guard::parse_url(url) {
            Ok(u) => u,
            Err(e) => return refused(format!("bad URL: it {}", e.message())),
        };
        if let Some(ip) = guard::literal_ip(&url)
            && !self.allow_private
            && !guard::is_public(ip)
        {
            let host = url.host_str().unwrap_or_default().to_owned();
            return refused(Refused { host, addr: ip }.to_string());
        }
        let sent = self
            .http
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &signed.id)
            .header("webhook-timestamp", &signed.timestamp)
            .header("webhook-signature", &signed.signature)
            .body(body.to_vec())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Delivery {
                    outcome: self.transport_failure(&e),
                    ms: ms(started),
                    response_body: String::new(),
                };
            }
        };
        let status = resp.status();
        let retry_after = retry_after(status, resp.headers(), self.max_retry_after);
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| crate::domain::one_line(l, 200));
        let (response_body, body_error) = read_capped(resp, self.body_cap).await;
        let outcome = classify(status, retry_after, location, body_error, ms(started));
        Delivery {
            outcome,
            ms: ms(started),
            response_body,
        }
    }

    fn transport_failure(&self, e: &reqwest::Error) -> SendOutcome {
        if let Some(refused) = find_source::<Refused>(e) {
            return SendOutcome::Permanent {
                status: None,
                error: refused.to_string(),
            };
        }
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "request failed"
        };
        SendOutcome::Retry {
            status: None,
            retry_after: None,
            error: format!("{what}: {}", chain(e)),
        }
    }
}

/// The error and its sources, one line, without the URL (it may carry a token).
fn chain(e: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    let mut first = true;
    while let Some(err) = cur {
        let text = if first {
            first = false;
            // reqwest's own message names the URL; its sources do not
            match err.downcast_ref::<reqwest::Error>() {
                Some(_) => None,
                None => Some(err.to_string()),
            }
        } else {
            Some(err.to_string())
        };
        if let Some(t) = text {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&t);
        }
        cur = err.source();
    }
    if out.is_empty() {
        out.push_str("error");
    }
    crate::domain::one_line(&out, 500)
}

/// The first error of type `E` in `e`'s source chain.
fn find_source<E: std::error::Error + 'static>(e: &reqwest::Error) -> Option<&E> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        cur = err.source();
    }
    None
}

/// Reads at most `cap` bytes of the body, then drops the rest (and the connection).
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> (String, Option<String>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - buf.len();
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if buf.len() >= cap {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let err = if e.is_timeout() {
                    "timed out reading the response body".to_owned()
                } else {
                    format!("reading the response body failed: {}", chain(&e))
                };
                return (String::from_utf8_lossy(&buf).into_owned(), Some(err));
            }
        }
    }
    (String::from_utf8_lossy(&buf).into_owned(), None)
}

/// The outcome of an answer.
fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    location: Option<String>,
    body_error: Option<String>,
    ms: u64,
) -> SendOutcome {
    let code = status.as_u16();
    if status.is_success() {
        // the endpoint accepted it: a body cut short afterwards does not undo that
        return SendOutcome::Delivered { status: code, ms };
    }
    let reason = status.canonical_reason().unwrap_or("unknown status");
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        let mut error = format!("HTTP {code} {reason}");
        if let Some(b) = body_error {
            error.push_str(&format!(" ({b})"));
        }
        return SendOutcome::Retry {
            status: Some(code),
            retry_after,
            error,
        };
    }
    let error = if status.is_redirection() {
        format!(
            "HTTP {code} {reason}: redirects are not followed (Location: {})",
            location.as_deref().unwrap_or("none")
        )
    } else {
        format!("HTTP {code} {reason}")
    };
    SendOutcome::Permanent {
        status: Some(code),
        error,
    }
}

/// `Retry-After` of a 429 or 503: delay seconds or an HTTP date, at most `max` (a date in the
/// past is zero). Other statuses' `Retry-After` is ignored, as the issue says.
pub fn retry_after(
    status: StatusCode,
    headers: &header::HeaderMap,
    max: Duration,
) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(SystemTime::now()).unwrap_or_default()
        }
    };
    Some(delay.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> header::HeaderMap {
        let mut h = header::HeaderMap::new();
        h.insert(header::RETRY_AFTER, v.parse().unwrap());
        h
    }

    const MAX: Duration = Duration::from_secs(3600);

    #[test]
    fn retry_after_takes_seconds_or_a_date_from_429_and_503_only() {
        let s429 = StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(
            retry_after(s429, &headers("120"), MAX),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &headers("7"), MAX),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(StatusCode::BAD_GATEWAY, &headers("7"), MAX),
            None
        );
        assert_eq!(retry_after(s429, &headers("999999"), MAX), Some(MAX));
        let in_90 = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
        let got = retry_after(s429, &headers(&in_90), MAX).unwrap();
        assert!((85..=90).contains(&got.as_secs()), "{got:?}");
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(90));
        assert_eq!(
            retry_after(s429, &headers(&past), MAX),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(s429, &headers("soon"), MAX), None);
        assert_eq!(retry_after(s429, &header::HeaderMap::new(), MAX), None);
    }

    #[test]
    fn statuses_are_classified_as_the_issue_says() {
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap(), None, None, None, 1);
        assert!(matches!(c(200), SendOutcome::Delivered { status: 200, .. }));
        assert!(matches!(c(204), SendOutcome::Delivered { .. }));
        for retry in [500, 502, 503, 504, 408, 429] {
            assert!(matches!(c(retry), SendOutcome::Retry { .. }), "{retry}");
        }
        for permanent in [400, 401, 403, 404, 410, 413, 422, 301, 302, 307] {
            assert!(
                matches!(c(permanent), SendOutcome::Permanent { .. }),
                "{permanent}"
            );
        }
    }
}
