//! The rules language: which events a rule looks at ([`TypePattern`]), whether one matches
//! ([`Condition`], CEL), and what the notification says ([`Templates`], tera). Everything is
//! compiled when a rule is saved (the API refuses what does not compile, with the reason) and
//! compiled again by the worker from the stored source, so a rule in the database always
//! compiles.

mod condition;
mod event_type;
mod template;

pub use condition::{
    Condition, ConditionError, EventInput, MAX_COMPREHENSION_DEPTH, MAX_CONDITION, MAX_NODES,
};
pub use event_type::{EventType, MAX_EVENT_TYPE, TypePattern};
pub use template::{EventView, MAX_BODY, MAX_BODY_TEMPLATE, MAX_TITLE, TemplateError, Templates};

/// Channels a notification can go out on.
pub const CHANNELS: &[&str] = &["inApp", "email", "webhook"];

/// The most event-type patterns one rule may have.
pub const MAX_PATTERNS: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_between_threads<T: Send + Sync>() {}

    #[test]
    fn compiled_rules_can_be_cached_and_shared_by_the_workers_tasks() {
        shared_between_threads::<Condition>();
        shared_between_threads::<Templates>();
        shared_between_threads::<TypePattern>();
    }
}
