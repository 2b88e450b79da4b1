//! `deliver_notification`'s reads, batched: the notifications of the jobs starting at the same
//! moment are read in one statement ([`db::deliveries::to_deliver_many`]), and the enabled
//! endpoints of their projects in one more when some of them go out by webhook, by the same
//! mechanism as `process_event`'s reads ([`shared::group_commit`]: whatever is waiting, at most
//! [`MAX_BATCH`], no timer). One job alone is read at once, as before; under load, two
//! statements serve up to [`MAX_BATCH`] jobs instead of two each.

use std::collections::HashMap;

use anyhow::Context as _;
use shared::{
    db::{
        self,
        deliveries::{DeliveryKey, ToDeliver},
        webhook_endpoints::Endpoint,
    },
    group_commit::{BatchWrite, GroupCommit},
    jobs::Channel,
};
use sqlx::PgPool;
use uuid::Uuid;

/// The most jobs one read serves.
pub const MAX_BATCH: usize = 64;

/// Reads at the same time.
pub const IN_FLIGHT: usize = 2;

/// What a job reads before it delivers.
#[derive(Debug)]
pub struct Read {
    /// The notification, with the targets done for this job.
    pub notification: ToDeliver,
    /// For the webhook channel: the project's enabled endpoints that select the notification's
    /// event type (a notification without an event: those without a filter), in their order.
    /// Empty for the other channels.
    pub endpoints: Vec<Endpoint>,
}

/// The process's reader of notifications to deliver.
pub type DeliveryReader = GroupCommit<Reader>;

/// Starts the process's [`DeliveryReader`].
pub fn spawn(pool: PgPool) -> DeliveryReader {
    GroupCommit::spawn(Reader { pool }, MAX_BATCH, IN_FLIGHT)
}

/// Reads batches of notifications (and endpoints).
pub struct Reader {
    pool: PgPool,
}

impl BatchWrite for Reader {
    type Item = DeliveryKey;
    type Output = Option<Read>;
    type Key = (Uuid, Uuid, &'static str, Uuid);

    fn key(k: &DeliveryKey) -> Self::Key {
        (k.0, k.1, k.2.as_str(), k.3)
    }

    async fn write(&self, keys: &[&DeliveryKey]) -> anyhow::Result<Vec<Option<Read>>> {
        let keys: Vec<DeliveryKey> = keys.iter().map(|k| **k).collect();
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("Failed to get a Postgres connection")?;
        let mut found: HashMap<DeliveryKey, ToDeliver> =
            db::deliveries::to_deliver_many(&mut conn, &keys)
                .await
                .context("Failed to read the notifications")?
                .into_iter()
                .collect();
        let mut hooked: Vec<Uuid> = keys
            .iter()
            .filter(|k| k.2 == Channel::Webhook && found.contains_key(k))
            .map(|k| k.0)
            .collect();
        hooked.sort_unstable();
        hooked.dedup();
        let mut endpoints: HashMap<Uuid, Vec<Endpoint>> = HashMap::new();
        if !hooked.is_empty() {
            for (project, ep) in db::webhook_endpoints::enabled_of(&mut conn, &hooked)
                .await
                .context("Failed to read the webhook endpoints")?
            {
                endpoints.entry(project).or_default().push(ep);
            }
        }
        Ok(keys
            .iter()
            .map(|k| {
                let notification = found.remove(k)?;
                let endpoints = match (k.2, endpoints.get(&k.0)) {
                    (Channel::Webhook, Some(all)) => {
                        // no event (a digest, a notice): only the endpoints that take every type
                        let event_type = notification.event_type.as_deref().unwrap_or("");
                        all.iter()
                            .filter(|e| e.selects(event_type))
                            .cloned()
                            .collect()
                    }
                    _ => Vec::new(),
                };
                Some(Read {
                    notification,
                    endpoints,
                })
            })
            .collect())
    }

    fn name(&self) -> &'static str {
        "deliver_notification_read"
    }
}
