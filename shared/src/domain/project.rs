//! A project's values: its [`Slug`], its [`Description`], its [`ProjectStatus`] and its
//! [`ProjectSettings`] (known keys only, each bounded).

use serde::{Deserialize, Serialize};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{RefOr, schema::Schema},
};

use super::{Invalid, at_most, string_schema, within};

/// A project's short handle, unique among live projects: 1 to 63 characters of `a-z`, `0-9`
/// and `-`, starting and ending with a letter or digit (a DNS label, so it fits in URLs and
/// host names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

/// Longest slug accepted (characters).
pub const MAX_SLUG: usize = 63;

impl Slug {
    /// Checks a slug as given (no case folding: `Acme` is refused, not changed).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_SLUG
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-')
            && !raw.ends_with('-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::new(format!(
                "must be 1 to {MAX_SLUG} characters of a-z, 0-9 and '-', starting and ending \
                 with a letter or digit"
            )))
        }
    }

    /// A slug made from a name: ASCII letters and digits lower-cased, every other run of
    /// characters one `-`, cut to [`MAX_SLUG`]; `None` when the name has no ASCII letter or
    /// digit.
    pub fn from_name(name: &str) -> Option<Self> {
        let mut out = String::new();
        for c in name.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        out.truncate(MAX_SLUG);
        let out = out.trim_end_matches('-');
        Self::parse(out).ok()
    }
}

impl AsRef<str> for Slug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What a project is for: at most 500 characters as sent, no control characters but line
/// breaks and tabs, trimmed; may be empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

/// Longest description accepted (characters, as sent).
pub const MAX_DESCRIPTION: usize = 500;

/// JSON Schema `pattern` of a description: no control characters but `\n` and `\t`.
pub const DESCRIPTION_PATTERN: &str = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$";

impl Description {
    /// Checks a description.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        // the limits hold for the value as sent, as the OpenAPI document says
        at_most(raw, MAX_DESCRIPTION)?;
        if raw
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(Invalid::new(
                "must not contain control characters (line breaks and tabs are fine)",
            ));
        }
        Ok(Self(raw.trim().to_owned()))
    }
}

impl PartialSchema for Description {
    fn schema() -> RefOr<Schema> {
        string_schema(format!(
            "At most {MAX_DESCRIPTION} characters, no control characters but line breaks and \
             tabs; surrounding whitespace is trimmed."
        ))
        .max_length(Some(MAX_DESCRIPTION))
        .pattern(Some(DESCRIPTION_PATTERN))
        .into()
    }
}

impl ToSchema for Description {}

impl AsRef<str> for Description {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Whether a project works. A suspended project's tokens and API keys are refused (403
/// `project_suspended`) until it is active again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProjectStatus {
    /// Works.
    Active,
    /// Refused until made active again.
    Suspended,
}

impl ProjectStatus {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectStatus::Active => "active",
            ProjectStatus::Suspended => "suspended",
        }
    }

    /// From its stored or shown name.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "active" => Ok(ProjectStatus::Active),
            "suspended" => Ok(ProjectStatus::Suspended),
            _ => Err(Invalid::new("must be active or suspended")),
        }
    }
}

/// Most events per second a project may send (the bound of `eventsPerSecond`).
pub const MAX_EVENTS_PER_SECOND: u32 = 100_000;

/// A project's settings: known keys only (an unknown key is refused, never stored), each
/// optional and bounded. Stored as a JSON object in `projects.settings`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectSettings {
    /// Events per second the project may send (1 to 100000; absent: the platform's default).
    /// Read by event ingestion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100000)]
    pub events_per_second: Option<u32>,
}

impl ProjectSettings {
    /// Checks every key's bounds; each refusal is named `settings.<key>`.
    pub fn check(self) -> Result<Self, Vec<(&'static str, Invalid)>> {
        let mut errors = Vec::new();
        if let Some(eps) = self.events_per_second
            && let Err(e) = within(eps, 1..=MAX_EVENTS_PER_SECOND)
        {
            errors.push(("settings.eventsPerSecond", e));
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_dns_labels() {
        for ok in ["a", "acme", "acme-2", "a1-b2", &"x".repeat(63)] {
            assert!(Slug::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Acme", "a_b", "a b", "é", &"x".repeat(64)] {
            assert!(Slug::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_name_gives_a_slug_when_it_has_ascii_letters_or_digits() {
        let slug = |n: &str| Slug::from_name(n).map(|s| s.0);
        assert_eq!(slug("Acme Corp."), Some("acme-corp".into()));
        assert_eq!(slug("  --Ünïcode & Co 2 "), Some("n-code-co-2".into()));
        assert_eq!(slug("日本"), None);
        assert_eq!(
            slug(&"ab ".repeat(40)).unwrap().len(),
            62,
            "cut, no trailing '-'"
        );
    }

    #[test]
    fn descriptions_are_bounded_and_may_break_lines() {
        assert_eq!(
            Description::parse("  a\nb\tc ").unwrap().as_ref(),
            "a\nb\tc"
        );
        assert!(Description::parse("").is_ok());
        assert!(Description::parse(&"é".repeat(500)).is_ok());
        assert!(Description::parse(&"é".repeat(501)).is_err());
        assert!(Description::parse("nul\0").is_err());
        // bounded as sent: 501 characters are refused even if trimming leaves 500
        assert!(Description::parse(&format!("{} ", "é".repeat(500))).is_err());
        assert!(
            Description::parse("a\r").is_err(),
            "a carriage return is refused anywhere"
        );
    }

    #[test]
    fn settings_know_their_keys_and_bounds() {
        let parsed: Result<ProjectSettings, _> =
            serde_json::from_value(serde_json::json!({"eventsPerSecond": 50}));
        assert_eq!(parsed.unwrap().events_per_second, Some(50));
        let unknown: Result<ProjectSettings, _> =
            serde_json::from_value(serde_json::json!({"colour": "red"}));
        assert!(unknown.is_err());
        let zero = ProjectSettings {
            events_per_second: Some(0),
        };
        let errors = zero.check().unwrap_err();
        assert_eq!(errors[0].0, "settings.eventsPerSecond");
        let max = ProjectSettings {
            events_per_second: Some(MAX_EVENTS_PER_SECOND),
        };
        assert!(max.check().is_ok());
        assert_eq!(
            serde_json::to_value(ProjectSettings::default()).unwrap(),
            serde_json::json!({})
        );
    }
}
