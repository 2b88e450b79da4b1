//! Users of a project, one module per use case: who am I and my name ([`me`]), list and export
//! ([`list`]), one user and its changes ([`detail`]), invite and resend ([`invite`]), create
//! with a password ([`create`]), roles ([`roles`]), deactivation and reactivation
//! ([`deactivate`]). Changes that could leave the project without an active admin pass
//! [`crate::admin_guard`].
//!
//! Every query is scoped to the caller's project: another project's user is a 404. Writes run in
//! one transaction with their audit entry and their jobs (through the outbox): a request that
//! fails leaves no user, no audit entry and no job behind. A change that takes permissions away
//! from an ACTIVE user revokes its tokens before the response ([`crate::revocation`]).

pub mod bulk;
pub mod create;
pub mod deactivate;
pub mod detail;
pub mod imports;
pub mod invite;
pub mod list;
pub mod me;
pub mod preferences;
pub mod roles;

use axum::extract::DefaultBodyLimit;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    // the upload streams its body and bounds it itself (`IMPORT_MAX_BYTES`)
    let upload = OpenApiRouter::new()
        .routes(routes!(imports::upload::upload, imports::list_imports))
        .layer(DefaultBodyLimit::disable());
    OpenApiRouter::new()
        .merge(upload)
        .routes(routes!(bulk::bulk_users))
        .routes(routes!(bulk::get_bulk))
        .routes(routes!(bulk::bulk_results))
        .routes(routes!(imports::get_import))
        .routes(routes!(imports::cancel_import))
        .routes(routes!(imports::import_errors_csv))
        .routes(routes!(me::me, me::update_me))
        .routes(routes!(
            preferences::get_preferences,
            preferences::put_preferences
        ))
        .routes(routes!(list::list_users, create::create_user))
        .routes(routes!(detail::get_user, detail::update_user))
        .routes(routes!(list::export_users))
        .routes(routes!(invite::invite_user))
        .routes(routes!(invite::resend_invitation))
        .routes(routes!(roles::add_role))
        .routes(routes!(roles::remove_role, roles::change_role))
        .routes(routes!(deactivate::deactivate_user))
        .routes(routes!(deactivate::reactivate_user))
}
