//! Webhooks: signed deliveries of a project's notifications to its own HTTP endpoints.
//!
//! - [`signing`]: Standard Webhooks 1.0 (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature`; `whsec_` secrets; two signatures during a rotation's grace period).
//! - [`guard`]: the SSRF guard, at save time and on the address a delivery connects to.
//! - [`client`]: the delivery client and its outcome (delivered, retry, permanent).
//!
//! Endpoints' SQL, including the failure streak that disables an endpoint, is in
//! [`crate::db::webhook_endpoints`]. One delivery, as the `deliver_notification` job makes it:
//!
//! ```text
//! let client = WebhookClient::new(&settings.webhooks)?;               // once per process
//! for ep in db::webhook_endpoints::matching(&pool, project_id, event_type).await? {
//!     let body = serde_json::to_vec(&payload)?;                        // the job's own JSON
//!     let id = webhooks::message_id(notification_id);                  // same on every retry
//!     let d = webhooks::deliver(&client, &ep, &settings.auth.jwt_secret, &id, &body, Utc::now()).await;
//!     // record d.outcome / d.ms / d.response_body in delivery_attempts, then:
//!     let r = db::webhook_endpoints::record_result(&pool, project_id, ep.endpoint_id,
//!         d.outcome.is_success(), Utc::now(), settings.webhooks.disable_after).await?;
//!     // r.notification_id: a `system` notification to deliver in-app, if it disabled the endpoint
//! }
//! ```

pub mod client;
pub mod guard;
pub mod signing;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

pub use client::{Delivery, SendOutcome, WebhookClient};
pub use signing::{SignedHeaders, SigningSecret};

use crate::db::webhook_endpoints::Endpoint;

/// The `webhook-id` of a notification's message: the same for every retry and every endpoint,
/// so a receiver can drop a duplicate.
pub fn message_id(notification_id: Uuid) -> String {
    format!("msg_{}", notification_id.simple())
}

/// The secrets that sign for `endpoint` at `now`: its current one, and its previous one while
/// the rotation's grace period lasts. `None` if a stored secret does not open under `key`
/// (`JWT_SECRET` changed since it was sealed).
pub fn signing_secrets(
    endpoint: &Endpoint,
    key: &SecretString,
    now: DateTime<Utc>,
) -> Option<Vec<SigningSecret>> {
    let open = |sealed: &str| {
        let text = SecretString::from(crate::secrets::open_webhook_secret(key, sealed)?);
        SigningSecret::parse(text.expose_secret()).ok()
    };
    let mut secrets = vec![open(&endpoint.secret_sealed)?];
    if let (Some(prev), Some(until)) = (
        &endpoint.previous_secret_sealed,
        endpoint.previous_secret_expires_at,
    ) && until > now
    {
        secrets.push(open(prev)?);
    }
    Some(secrets)
}

/// Signs `body` as message `msg_id` at `now` with the endpoint's secrets and POSTs it to the
/// endpoint's URL. A secret that does not open is a permanent failure (nothing is sent).
pub async fn deliver(
    client: &WebhookClient,
    endpoint: &Endpoint,
    key: &SecretString,
    msg_id: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Delivery {
    let Some(secrets) = signing_secrets(endpoint, key, now) else {
        tracing::error!(endpoint_id = %endpoint.endpoint_id, "webhook signing secret does not open");
        return Delivery {
            outcome: SendOutcome::Permanent {
                status: None,
                error: "the endpoint's signing secret cannot be opened (JWT_SECRET changed?); \
                        rotate the secret"
                    .into(),
            },
            ms: 0,
            response_body: String::new(),
        };
    };
    let signed = SignedHeaders::new(msg_id, now.timestamp(), body, &secrets);
    client.send(&endpoint.url, &signed, body).await
}
