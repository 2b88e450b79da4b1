//! Which column holds what: header names matched case-insensitively with common aliases, or as
//! the uploader maps them; unknown columns are listed (and ignored).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::FileError;

/// A field an import reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Field {
    /// The user's email (required).
    Email,
    /// Display name.
    Name,
    /// Roles, by name or id, separated by `;`, `|` or `,`.
    Roles,
    /// `active`, `invited` or `deactivated`.
    Status,
}

impl Field {
    /// Every field.
    pub const ALL: [Field; 4] = [Field::Email, Field::Name, Field::Roles, Field::Status];

    /// The name used in mappings and error reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Email => "email",
            Field::Name => "name",
            Field::Roles => "roles",
            Field::Status => "status",
        }
    }

    /// The header names recognised for the field (lower case, spaces, `-` and `_` removed).
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Field::Email => &["email", "emailaddress", "mail", "workemail"],
            Field::Name => &["name", "fullname", "displayname"],
            Field::Roles => &["roles", "role"],
            Field::Status => &["status", "state"],
        }
    }

    /// The field named `s` in a mapping.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// A header as compared: lower case, without spaces, `-`, `_` or `.`.
fn folded(header: &str) -> String {
    header
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '_' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Where each field is, by column index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnMap {
    /// Field → (column index, header as written).
    pub fields: BTreeMap<Field, (usize, String)>,
    /// Headers no field uses (ignored).
    pub unknown: Vec<String>,
}

impl ColumnMap {
    /// Maps `headers`; `mapping` (field → header, compared as aliases are) overrides the
    /// aliases for the fields it names. The email column is required; two columns for one field
    /// are refused.
    pub fn new(headers: &[String], mapping: &BTreeMap<Field, String>) -> Result<Self, FileError> {
        let mut fields: BTreeMap<Field, (usize, String)> = BTreeMap::new();
        let mut unknown = Vec::new();
        for (i, header) in headers.iter().enumerate() {
            let f = folded(header);
            let field = match mapping.iter().find(|(_, h)| folded(h) == f) {
                Some((field, _)) => Some(*field),
                None => Field::ALL.into_iter().find(|field| {
                    !mapping.contains_key(field) && field.aliases().contains(&f.as_str())
                }),
            };
            match field {
                Some(field) => {
                    if let Some((_, first)) = fields.get(&field) {
                        return Err(FileError::Columns(format!(
                            "two columns are the {}: \"{first}\" and \"{header}\"; map one with \
                             columns.{}",
                            field.as_str(),
                            field.as_str()
                        )));
                    }
                    fields.insert(field, (i, header.clone()));
                }
                None if header.is_empty() => {}
                None => unknown.push(header.clone()),
            }
        }
        for (field, header) in mapping {
            if !fields.contains_key(field) {
                return Err(FileError::Columns(format!(
                    "columns.{} names \"{header}\", which is not in the header row",
                    field.as_str()
                )));
            }
        }
        if !fields.contains_key(&Field::Email) {
            return Err(FileError::Columns(format!(
                "no email column: name one \"email\", \"e-mail\" or \"email address\", or map \
                 it with columns.email (the header row has: {})",
                headers.join(", ")
            )));
        }
        Ok(Self { fields, unknown })
    }

    /// The column index of `field`.
    pub fn index(&self, field: Field) -> Option<usize> {
        self.fields.get(&field).map(|(i, _)| *i)
    }

    /// The header of `field`'s column.
    pub fn header(&self, field: Field) -> Option<&str> {
        self.fields.get(&field).map(|(_, h)| h.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn aliases_match_whatever_the_case_and_spacing() {
        let m = ColumnMap::new(
            &headers(&["E-Mail", "Full Name", "ROLES", "Department"]),
            &BTreeMap::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.index(Field::Email), Some(0));
        assert_eq!(m.index(Field::Name), Some(1));
        assert_eq!(m.index(Field::Roles), Some(2));
        assert_eq!(m.index(Field::Status), None);
        assert_eq!(m.unknown, ["Department"]);
        let m = ColumnMap::new(&headers(&["Email Address"]), &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.header(Field::Email), Some("Email Address"));
    }

    #[test]
    fn a_mapping_overrides_the_aliases() {
        let mapping = BTreeMap::from([(Field::Email, "Login".to_owned())]);
        let m = ColumnMap::new(&headers(&["email", "login"]), &mapping)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.index(Field::Email), Some(1));
        assert_eq!(m.unknown, ["email"]);
        let missing = BTreeMap::from([(Field::Name, "Who".to_owned())]);
        assert!(
            matches!(ColumnMap::new(&headers(&["email"]), &missing), Err(FileError::Columns(m)) if m.contains("columns.name"))
        );
    }

    #[test]
    fn no_email_or_two_emails_are_refused() {
        assert!(
            matches!(ColumnMap::new(&headers(&["name"]), &BTreeMap::new()), Err(FileError::Columns(m)) if m.starts_with("no email column"))
        );
        assert!(
            matches!(ColumnMap::new(&headers(&["email", "E-mail"]), &BTreeMap::new()), Err(FileError::Columns(m)) if m.contains("two columns"))
        );
    }
}
