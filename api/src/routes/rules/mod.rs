//! Alert rules: which events (types, a CEL condition) become notifications (title and body
//! templates), for whom (target roles), on which channels. Conditions and templates are
//! compiled when saved: what does not compile is a `422` naming the field, with the position.
//! Every change bumps the project's rules version (workers reload their cached rules) and is
//! audited with a diff. `POST /api/v1/rules/test` evaluates without storing anything.
//!
//! [`body`]: a rule as written (validated and compiled) and as read; [`crud`]: the routes that
//! store, list, read, replace and delete rules; [`evaluate`]: the rule test.

mod body;
mod crud;
mod evaluate;

use utoipa_axum::{router::OpenApiRouter, routes};

pub use body::{Channel, Rule, RuleRequest, Suppression};
pub use evaluate::{TestEvent, TestRequest, TestResult};

use crate::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(crud::create_rule, crud::list_rules))
        .routes(routes!(
            crud::get_rule,
            crud::update_rule,
            crud::delete_rule
        ))
        .routes(routes!(evaluate::test_rule))
}
