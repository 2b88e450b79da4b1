//! Job handlers, one module per job kind.

pub mod ping;
