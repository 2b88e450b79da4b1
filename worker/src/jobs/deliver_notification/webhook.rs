//! The webhook channel (wired when its library lands; see the lead's integration).

use super::{Delivery, TargetResult};

pub(super) async fn deliver(_d: &Delivery<'_>) -> anyhow::Result<Vec<TargetResult>> {
    anyhow::bail!("the webhook channel is not wired yet")
}
