//! The delivery client against a real HTTP receiver on loopback.

use std::{net::IpAddr, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use shared::{
    config::WebhookSettings,
    webhooks::{SendOutcome, SignedHeaders, SigningSecret, WebhookClient, guard::HostLookup},
};

use crate::helpers::{Receiver, verify_at};

fn settings(allow_private: bool) -> WebhookSettings {
    WebhookSettings {
        allow_private,
        timeout: Duration::from_millis(1500),
        connect_timeout: Duration::from_millis(500),
        ..WebhookSettings::default()
    }
}

fn client() -> WebhookClient {
    WebhookClient::new(&settings(true)).expect("client")
}

fn key_of(secret: &SigningSecret) -> Vec<u8> {
    use base64::Engine as _;
    use secrecy::ExposeSecret as _;
    let text = secret.to_text();
    base64::engine::general_purpose::STANDARD
        .decode(
            text.expose_secret()
                .strip_prefix("whsec_")
                .expect("a whsec_ secret"),
        )
        .expect("base64")
}

const BODY: &[u8] = br#"{"type":"transfer.failed","data":{"amount":12}}"#;

fn signed(secrets: &[SigningSecret]) -> SignedHeaders {
    SignedHeaders::new("msg_abc", chrono::Utc::now().timestamp(), BODY, secrets)
}

#[tokio::test]
async fn a_delivery_carries_headers_that_an_independent_verifier_accepts() {
    let rx = Receiver::start().await;
    let secret = SigningSecret::generate();
    let d = client()
        .send(&rx.url("/ok"), &signed(std::slice::from_ref(&secret)), BODY)
        .await;
    assert!(
        matches!(d.outcome, SendOutcome::Delivered { status: 200, .. }),
        "{d:?}"
    );
    assert_eq!(d.response_body, "thanks");
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.header("webhook-id"), "msg_abc");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(&r.body[..], BODY);
    let key = key_of(&secret);
    let (id, ts, sig) = (
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        r.header("webhook-signature"),
    );
    assert!(verify_at(&key, &id, &ts, &sig, &r.body));
    // the verifier is not a rubber stamp: a changed body, id or key fails
    assert!(!verify_at(&key, &id, &ts, &sig, b"{}"));
    assert!(!verify_at(&key, "msg_other", &ts, &sig, &r.body));
    assert!(!verify_at(
        &key_of(&SigningSecret::generate()),
        &id,
        &ts,
        &sig,
        &r.body
    ));
}

#[test]
fn the_independent_verifier_accepts_the_specifications_example() {
    // standard-webhooks/standard-webhooks, libraries/go/webhook_test.go (TestWebhookSign)
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .unwrap();
    let (id, ts, body) = (
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        br#"{"test": 2432232314}"#,
    );
    let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert!(verify_at(&key, id, ts, sig, body));
    assert!(verify_at(&key, id, ts, &format!("v1,bm9wZQ== {sig}"), body));
    assert!(!verify_at(&key, id, "1614265331", sig, body));
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign_and_each_verifies() {
    let rx = Receiver::start().await;
    let (new, old) = (SigningSecret::generate(), SigningSecret::generate());
    let d = client()
        .send(&rx.url("/ok"), &signed(&[new.clone(), old.clone()]), BODY)
        .await;
    assert!(d.outcome.is_success(), "{d:?}");
    let r = &rx.received()[0];
    let sig = r.header("webhook-signature");
    let parts: Vec<&str> = sig.split(' ').collect();
    assert_eq!(parts.len(), 2, "{sig}");
    let (id, ts) = (r.header("webhook-id"), r.header("webhook-timestamp"));
    for (secret, part) in [(&new, parts[0]), (&old, parts[1])] {
        assert!(verify_at(&key_of(secret), &id, &ts, part, &r.body));
    }
    assert!(!verify_at(&key_of(&new), &id, &ts, parts[1], &r.body));
}

async fn outcome(path: &str) -> SendOutcome {
    let rx = Receiver::start().await;
    let d = client()
        .send(&rx.url(path), &signed(&[SigningSecret::generate()]), BODY)
        .await;
    assert_eq!(rx.received().len(), 1, "{path} was called once");
    d.outcome
}

#[tokio::test]
async fn server_errors_408_and_429_are_retried_and_other_4xx_are_permanent() {
    for code in [500, 502, 503, 408, 429] {
        let o = outcome(&format!("/status/{code}")).await;
        assert!(
            matches!(o, SendOutcome::Retry { status: Some(c), retry_after: None, .. } if c == code),
            "{code}: {o:?}"
        );
    }
    for code in [400, 401, 404, 410, 422] {
        let o = outcome(&format!("/status/{code}")).await;
        assert!(
            matches!(o, SendOutcome::Permanent { status: Some(c), .. } if c == code),
            "{code}: {o:?}"
        );
    }
}

#[tokio::test]
async fn retry_after_of_a_429_or_503_is_honoured_in_seconds_or_as_a_date_and_capped() {
    let o = outcome("/retry-after/429/120").await;
    assert!(
        matches!(o, SendOutcome::Retry { status: Some(429), retry_after: Some(d), .. } if d == Duration::from_secs(120)),
        "{o:?}"
    );
    let date = httpdate_in(600);
    let o = outcome(&format!("/retry-after/503/{}", urlencode(&date))).await;
    let SendOutcome::Retry {
        retry_after: Some(d),
        ..
    } = o
    else {
        panic!("{o:?}")
    };
    assert!((590..=600).contains(&d.as_secs()), "{d:?}");
    // capped at WEBHOOK_MAX_RETRY_AFTER_SECS (3600 by default)
    let o = outcome("/retry-after/429/86400").await;
    assert!(
        matches!(o, SendOutcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(3600)),
        "{o:?}"
    );
    // a 500's Retry-After is not a 429's or 503's: ignored
    let o = outcome("/retry-after/500/30").await;
    assert!(
        matches!(
            o,
            SendOutcome::Retry {
                retry_after: None,
                ..
            }
        ),
        "{o:?}"
    );
}

fn httpdate_in(secs: u64) -> String {
    let at = chrono::Utc::now() + chrono::Duration::seconds(secs as i64);
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn urlencode(s: &str) -> String {
    s.replace(' ', "%20")
        .replace(',', "%2C")
        .replace(':', "%3A")
}

#[tokio::test]
async fn a_timeout_is_retried_and_takes_no_longer_than_the_total_timeout() {
    let rx = Receiver::start().await;
    let started = std::time::Instant::now();
    let d = client()
        .send(
            &rx.url("/slow"),
            &signed(&[SigningSecret::generate()]),
            BODY,
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(2800),
        "{:?}",
        started.elapsed()
    );
    match &d.outcome {
        SendOutcome::Retry {
            status: None,
            error,
            ..
        } => {
            assert!(error.contains("timed out"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    // a port nothing listens on: bind one, then free it
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let d = client()
        .send(
            &format!("http://127.0.0.1:{port}/x"),
            &signed(&[SigningSecret::generate()]),
            BODY,
        )
        .await;
    assert!(
        matches!(d.outcome, SendOutcome::Retry { status: None, .. }),
        "{d:?}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let rx = Receiver::start().await;
    let d = client()
        .send(
            &rx.url("/redirect"),
            &signed(&[SigningSecret::generate()]),
            BODY,
        )
        .await;
    match &d.outcome {
        SendOutcome::Permanent {
            status: Some(302),
            error,
        } => {
            assert!(error.contains("not followed"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    let paths: Vec<String> = rx.received().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/redirect"],
        "the redirect's target was never called"
    );
}

#[tokio::test]
async fn at_most_the_body_cap_of_the_response_is_kept() {
    let rx = Receiver::start().await;
    let d = client()
        .send(&rx.url("/big"), &signed(&[SigningSecret::generate()]), BODY)
        .await;
    assert!(d.outcome.is_success(), "{d:?}");
    assert_eq!(d.response_body.len(), 4096);
}

/// Resolves every name to one address, without DNS.
struct ResolvesTo(IpAddr);

impl HostLookup for ResolvesTo {
    fn lookup(&self, _: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let ip = self.0;
        Box::pin(async move { Ok(vec![ip]) })
    }
}

#[tokio::test]
async fn without_the_flag_loopback_and_private_destinations_are_refused_at_send() {
    let rx = Receiver::start().await;
    let guarded = WebhookClient::new(&settings(false)).expect("client");
    let port = rx.base.rsplit(':').next().unwrap().to_owned();
    for url in [
        rx.url("/ok"),                                  // 127.0.0.1 literal
        format!("http://localhost:{port}/ok"),          // a name resolving to loopback
        format!("http://[::ffff:127.0.0.1]:{port}/ok"), // IPv4-mapped
    ] {
        let d = guarded
            .send(&url, &signed(&[SigningSecret::generate()]), BODY)
            .await;
        match &d.outcome {
            SendOutcome::Permanent {
                status: None,
                error,
            } => {
                assert!(error.contains("not a public address"), "{url}: {error}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    // a DNS name that resolves to 10.x: refused after resolution, before any connection
    let ten = WebhookClient::with_lookup(
        &settings(false),
        Arc::new(ResolvesTo("10.1.2.3".parse().unwrap())),
    )
    .unwrap();
    let d = ten
        .send(
            "https://hooks.internal.example/x",
            &signed(&[SigningSecret::generate()]),
            BODY,
        )
        .await;
    match &d.outcome {
        SendOutcome::Permanent {
            status: None,
            error,
        } => {
            assert!(error.contains("10.1.2.3"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    // the same name resolving to the receiver is delivered once private addresses are allowed
    let allowed = WebhookClient::with_lookup(
        &settings(true),
        Arc::new(ResolvesTo("127.0.0.1".parse().unwrap())),
    )
    .unwrap();
    let d = allowed
        .send(
            &format!("http://hooks.internal.example:{port}/ok"),
            &signed(&[SigningSecret::generate()]),
            BODY,
        )
        .await;
    assert!(d.outcome.is_success(), "{d:?}");
    assert_eq!(rx.received().len(), 1, "only the allowed delivery arrived");
}

#[tokio::test]
async fn a_url_that_is_not_http_is_a_permanent_failure() {
    let d = client()
        .send(
            "ftp://example.com/x",
            &signed(&[SigningSecret::generate()]),
            BODY,
        )
        .await;
    assert!(
        matches!(d.outcome, SendOutcome::Permanent { status: None, .. }),
        "{d:?}"
    );
}
