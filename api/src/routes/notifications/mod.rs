//! The user's own notifications (the dashboard's inbox): the list and its filters, one item,
//! the unread count, acknowledging, deleting (for the user only), webview actions
//! ([`inbox`]), and the live stream with its tickets ([`stream`]).
//!
//! Every route is for a user's token of the project (no permission beyond being a user: an
//! inbox holds only what was delivered to its user); a token that is not a user's (platform,
//! service) gets 404 (no such user, as `GET /api/v1/users/me` answers it), an API key 401. A notification the user did not receive,
//! deleted, or of another project is 404. The SQL is in `shared::db::inbox_items`; the writes
//! that also push to streams are `shared::inbox`'s.

mod inbox;
mod stream;

use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{AppState, auth::Authenticated, error::ApiError};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(inbox::list_notifications))
        .routes(routes!(inbox::unread_count))
        .routes(routes!(inbox::acknowledge_all))
        .routes(routes!(inbox::get_notification, inbox::delete_notification))
        .routes(routes!(inbox::acknowledge))
        .routes(routes!(inbox::webview_action))
        .routes(routes!(stream::stream_ticket))
        .routes(routes!(stream::stream))
}

/// The (project, user) whose inbox a token opens.
fn inbox_owner(auth: &Authenticated) -> Result<(Uuid, Uuid), ApiError> {
    crate::auth::user_of(&auth.claims)
        .map(|user| (auth.claims.project_id, user))
        .ok_or(ApiError::NotFound("user"))
}
