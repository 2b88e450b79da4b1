//! Job handlers, one module per job kind.

pub mod ping;
pub mod revoke_sessions;
pub mod send_invitation;
