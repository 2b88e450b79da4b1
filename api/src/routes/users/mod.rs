//! Users of a project, one module per use case: who am I ([`me`]), list and export ([`list`]),
//! invite and resend ([`invite`]), roles ([`roles`]), deactivation ([`deactivate`]).
//!
//! Every query is scoped to the caller's project: another project's user is a 404. Writes run in
//! one transaction with their audit entry and their jobs (through the outbox): a request that
//! fails leaves no user, no audit entry and no job behind. A change that takes permissions away
//! from an ACTIVE user revokes its tokens before the response ([`crate::revocation`]).

pub mod deactivate;
pub mod invite;
pub mod list;
pub mod me;
pub mod preferences;
pub mod roles;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me::me))
        .routes(routes!(
            preferences::get_preferences,
            preferences::put_preferences
        ))
        .routes(routes!(list::list_users))
        .routes(routes!(list::export_users))
        .routes(routes!(invite::invite_user))
        .routes(routes!(invite::resend_invitation))
        .routes(routes!(roles::add_role))
        .routes(routes!(roles::remove_role, roles::change_role))
        .routes(routes!(deactivate::deactivate_user))
}
