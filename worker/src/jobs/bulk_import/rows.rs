//! Validating one import row: email (syntax and `ALLOWED_INVITE_DOMAINS`), name, roles (by
//! name or id, roles of the project), status, and duplicates inside the file.
//!
//! In-file duplicates are found through a map of a 64-bit hash of each valid email to its row
//! (about 20 bytes a row: 20 MB for a million rows, instead of the emails themselves). The first
//! valid row with an email wins; later ones are errors naming it. Two different emails with the
//! same hash (about 1 in 10^7 for a million-row file) would report a false duplicate.

use std::{
    collections::HashMap,
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
};

use shared::{
    db::{imports::RowError, roles::Role, users::UserStatus},
    domain::{DisplayName, EmailAddress, domain_of},
    imports::{self, ColumnMap, Field, ImportOptions, Row},
};
use uuid::Uuid;

/// Most roles one row may name.
pub const MAX_ROLES: usize = 50;
/// Values are cut to this many characters in the error report.
const MAX_VALUE_CHARS: usize = 200;

/// A row ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRow {
    /// As a spreadsheet numbers it.
    pub number: u64,
    /// Lower-cased.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// The row's roles and the import's default roles, sorted, without repeats.
    pub role_ids: Vec<Uuid>,
    /// The status a new user gets.
    pub status: UserStatus,
}

/// A row, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// To write.
    Valid(ValidRow),
    /// Refused, with every reason.
    Invalid(Vec<RowError>),
}

/// What a row is judged against: the column map, the options, the project's roles, the
/// allowed domains and the emails seen so far.
pub struct Judge {
    map: ColumnMap,
    options: ImportOptions,
    /// Lower-cased name → id, and every id.
    roles: HashMap<String, Uuid>,
    role_ids: Vec<Uuid>,
    domains: Vec<String>,
    seen: HashMap<u64, u32, BuildHasherDefault<IdHasher>>,
    hasher: BuildHasherDefault<DefaultHasher>,
}

/// The map's keys are hashes already.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn cut(value: &str) -> String {
    value.chars().take(MAX_VALUE_CHARS).collect()
}

impl Judge {
    /// A judge for one import.
    pub fn new(map: ColumnMap, options: ImportOptions, roles: &[Role], domains: Vec<String>) -> Self {
        Self {
            map,
            options,
            roles: roles.iter().map(|r| (r.name.to_lowercase(), r.id)).collect(),
            role_ids: roles.iter().map(|r| r.id).collect(),
            domains,
            seen: HashMap::default(),
            hasher: BuildHasherDefault::default(),
        }
    }

    fn error(&self, row: &Row, field: Field, value: &str, message: impl Into<String>) -> RowError {
        RowError {
            row_number: row.number as i64,
            column_name: self.map.header(field).map(str::to_owned),
            value: (!value.is_empty()).then(|| cut(value)),
            message: message.into(),
        }
    }

    /// Judges `row`, and remembers its email if it is valid.
    pub fn judge(&mut self, row: &Row) -> Judged {
        let mut errors = Vec::new();
        let cell = |field: Field| -> Option<Result<&str, imports::NotText>> {
            self.map.index(field).map(|i| row.cell(i))
        };
        let not_text = |field: Field| RowError {
            row_number: row.number as i64,
            column_name: self.map.header(field).map(str::to_owned),
            value: None,
            message: "not valid UTF-8 text".into(),
        };

        let email = match cell(Field::Email) {
            Some(Err(_)) => {
                errors.push(not_text(Field::Email));
                None
            }
            Some(Ok("")) | None => {
                errors.push(self.error(row, Field::Email, "", "the email is missing"));
                None
            }
            Some(Ok(raw)) => match EmailAddress::parse(raw) {
                Err(e) => {
                    errors.push(self.error(row, Field::Email, raw, e.message()));
                    None
                }
                Ok(email) => {
                    let email: String = email.as_ref().to_owned();
                    if !self.domains.is_empty() && !self.domains.iter().any(|d| d == domain_of(&email)) {
                        errors.push(self.error(
                            row,
                            Field::Email,
                            raw,
                            format!("only addresses at {} can be invited", self.domains.join(", ")),
                        ));
                        None
                    } else {
                        Some(email)
                    }
                }
            },
        };

        let name = match cell(Field::Name) {
            Some(Err(_)) => {
                errors.push(not_text(Field::Name));
                None
            }
            Some(Ok(raw)) => match DisplayName::parse_optional(Some(raw)) {
                Ok(name) => name.map(|n| n.as_ref().to_owned()),
                Err(e) => {
                    errors.push(self.error(row, Field::Name, raw, e.message()));
                    None
                }
            },
            None => None,
        };

        let mut role_ids = self.options.default_role_ids.clone();
        match cell(Field::Roles) {
            Some(Err(_)) => errors.push(not_text(Field::Roles)),
            Some(Ok(raw)) if !raw.is_empty() => {
                let names: Vec<&str> = raw
                    .split([';', '|', ','])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                if names.len() > MAX_ROLES {
                    errors.push(self.error(row, Field::Roles, raw, format!("at most {MAX_ROLES} roles")));
                }
                let unknown: Vec<&str> = names
                    .iter()
                    .take(MAX_ROLES)
                    .filter(|n| match self.role(n) {
                        Some(id) => {
                            role_ids.push(id);
                            false
                        }
                        None => true,
                    })
                    .copied()
                    .collect();
                if !unknown.is_empty() {
                    errors.push(self.error(
                        row,
                        Field::Roles,
                        raw,
                        format!("no such role in this project: {}", unknown.join(", ")),
                    ));
                }
            }
            _ => {}
        }
        role_ids.sort();
        role_ids.dedup();

        let default_status = if self.options.send_invitations {
            UserStatus::Invited
        } else {
            UserStatus::Active
        };
        let status = match cell(Field::Status) {
            Some(Err(_)) => {
                errors.push(not_text(Field::Status));
                default_status
            }
            Some(Ok(raw)) if !raw.is_empty() => match raw.to_ascii_lowercase().as_str() {
                "active" => UserStatus::Active,
                "deactivated" | "inactive" => UserStatus::Deactivated,
                "invited" if self.options.send_invitations => UserStatus::Invited,
                "invited" => {
                    errors.push(self.error(
                        row,
                        Field::Status,
                        raw,
                        "an invited user needs an invitation: upload with sendInvitations=true",
                    ));
                    default_status
                }
                _ => {
                    errors.push(self.error(
                        row,
                        Field::Status,
                        raw,
                        "must be active, invited or deactivated",
                    ));
                    default_status
                }
            },
            _ => default_status,
        };

        if let Some(email) = &email {
            let key = self.hasher.hash_one(email.as_str());
            if let Some(first) = self.seen.get(&key) {
                errors.push(self.error(
                    row,
                    Field::Email,
                    email,
                    format!("a duplicate of row {first} (the first row with this email is imported)"),
                ));
            } else if errors.is_empty() {
                self.seen.insert(key, u32::try_from(row.number).unwrap_or(u32::MAX));
            }
        }
        match email {
            Some(email) if errors.is_empty() => Judged::Valid(ValidRow {
                number: row.number,
                email,
                name,
                role_ids,
                status,
            }),
            _ => Judged::Invalid(errors),
        }
    }

    fn role(&self, name_or_id: &str) -> Option<Uuid> {
        match Uuid::parse_str(name_or_id) {
            Ok(id) => self.role_ids.contains(&id).then_some(id),
            Err(_) => self.roles.get(&name_or_id.to_lowercase()).copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn judge(options: ImportOptions, domains: &[&str]) -> Judge {
        let headers: Vec<String> = ["email", "name", "roles", "status"].map(String::from).to_vec();
        let map = ColumnMap::new(&headers, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let roles = vec![Role {
            id: Uuid::from_u128(7),
            name: "Viewer".into(),
            description: String::new(),
            permissions: vec![],
        }];
        Judge::new(map, options, &roles, domains.iter().map(|d| (*d).to_owned()).collect())
    }

    fn row(number: u64, cells: &[&str]) -> Row {
        Row {
            number,
            cells: cells.iter().map(|c| Ok((*c).to_owned())).collect(),
        }
    }

    fn messages(j: Judged) -> Vec<String> {
        match j {
            Judged::Invalid(e) => e.into_iter().map(|e| format!("{}: {}", e.column_name.unwrap_or_default(), e.message)).collect(),
            Judged::Valid(v) => panic!("valid: {v:?}"),
        }
    }

    #[test]
    fn a_good_row_is_valid_with_its_roles_by_name_or_id() {
        let mut j = judge(ImportOptions::default(), &[]);
        let Judged::Valid(v) = j.judge(&row(2, &["A@X.io", "Ann", "viewer; 00000000-0000-0000-0000-000000000007", ""])) else {
            panic!("invalid")
        };
        assert_eq!(v.email, "a@x.io");
        assert_eq!(v.name.as_deref(), Some("Ann"));
        assert_eq!(v.role_ids, [Uuid::from_u128(7)]);
        assert_eq!(v.status, UserStatus::Active);
    }

    #[test]
    fn every_bad_cell_is_reported() {
        let mut j = judge(ImportOptions::default(), &[]);
        let m = messages(j.judge(&row(3, &["not-an-email", "x\u{0}y", "boss", "invited"])));
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(m[0].starts_with("email: "), "{m:?}");
        assert!(m[1].starts_with("name: "), "{m:?}");
        assert!(m[2].contains("no such role in this project: boss"), "{m:?}");
        assert!(m[3].contains("sendInvitations"), "{m:?}");
        let m = messages(j.judge(&row(4, &["", "", "", "retired"])));
        assert!(m[0].contains("missing") && m[1].contains("must be active"), "{m:?}");
    }

    #[test]
    fn long_names_too_many_roles_and_cells_that_are_not_text_are_reported() {
        let mut j = judge(ImportOptions::default(), &[]);
        let long = "n".repeat(300);
        let roles = vec!["viewer"; MAX_ROLES + 1].join(";");
        let m = messages(j.judge(&row(2, &["a@x.io", &long, &roles])));
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].starts_with("name: "), "{m:?}");
        assert!(m[1].contains("at most 50 roles"), "{m:?}");
        let mut bad = row(3, &["b@x.io"]);
        bad.cells.push(Err(imports::NotText));
        let m = messages(j.judge(&bad));
        assert_eq!(m, ["name: not valid UTF-8 text"]);
    }

    #[test]
    fn the_allowed_domains_bind_the_rows() {
        let mut j = judge(ImportOptions::default(), &["corp.io"]);
        assert!(matches!(j.judge(&row(2, &["a@corp.io"])), Judged::Valid(_)));
        assert!(messages(j.judge(&row(3, &["a@else.io"])))[0].contains("corp.io"));
    }

    #[test]
    fn a_later_duplicate_names_the_first_valid_row() {
        let mut j = judge(ImportOptions::default(), &[]);
        assert!(matches!(j.judge(&row(2, &["a@x.io", "", "nope"])), Judged::Invalid(_)));
        assert!(matches!(j.judge(&row(3, &["A@x.io"])), Judged::Valid(_)));
        let m = messages(j.judge(&row(9, &["a@X.io"])));
        assert!(m[0].contains("duplicate of row 3"), "{m:?}");
    }
}
