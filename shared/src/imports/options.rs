//! An import's options, as the upload gives them and the import row stores them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Field;

/// What to do with a row whose email is already a user of the project.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnDuplicate {
    /// Leave the user as it is; the row counts as skipped.
    #[default]
    Skip,
    /// Set the user's name (when the row has one) and add the row's roles; its status is left
    /// alone.
    Update,
    /// Report the row as failed.
    Fail,
}

/// Options of one import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportOptions {
    /// Validate and count, write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Rows whose email already exists.
    #[serde(default)]
    pub on_duplicate: OnDuplicate,
    /// Create users `INVITED` and email them an invitation; otherwise `ACTIVE`, without email
    /// (they set a password through a password reset).
    #[serde(default)]
    pub send_invitations: bool,
    /// Roles given to every row (besides the row's own).
    #[serde(default)]
    pub default_role_ids: Vec<Uuid>,
    /// Field → header, overriding the aliases.
    #[serde(default)]
    pub columns: BTreeMap<Field, String>,
}
