//! Event types (`transfer.failed`) and the patterns rules select them with (`transfer.failed`
//! exactly, or `transfer.*` for every type under `transfer.`).

use std::fmt;

use crate::domain::Invalid;

/// Longest event type (characters).
pub const MAX_EVENT_TYPE: usize = 100;

/// A dotted event type: 1 to 100 characters, segments of ASCII letters, digits, `_` and `-`,
/// separated by single dots (`transfer.failed`, `bucket.balance_low`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventType(String);

fn check_segments(s: &str) -> Result<(), Invalid> {
    let valid = !s.is_empty()
        && s.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(Invalid::new(
            "must be dot-separated names of letters, digits, `_` and `-` (e.g. `transfer.failed`)",
        ))
    }
}

impl EventType {
    /// Checks a type.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.len() > MAX_EVENT_TYPE {
            return Err(Invalid::new(format!(
                "must be at most {MAX_EVENT_TYPE} characters"
            )));
        }
        check_segments(raw)?;
        Ok(Self(raw.to_owned()))
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which events a rule looks at: one type exactly, or every type below a prefix (`billing.*`
/// matches `billing.paid` and `billing.card.expired`, not `billing`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TypePattern {
    /// This type only.
    Exact(String),
    /// Types starting with this prefix, dot included (`billing.`).
    Prefix(String),
}

impl TypePattern {
    /// Parses `transfer.failed` or `transfer.*` (a lone `*` matches every type).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw == "*" {
            return Ok(Self::Prefix(String::new()));
        }
        match raw.strip_suffix(".*") {
            Some(prefix) => {
                EventType::parse(prefix)?;
                Ok(Self::Prefix(format!("{prefix}.")))
            }
            None => Ok(Self::Exact(EventType::parse(raw)?.0)),
        }
    }

    /// Whether an event of type `event_type` is selected.
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Self::Exact(t) => t == event_type,
            Self::Prefix(p) => event_type.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(t) => f.write_str(t),
            Self::Prefix(p) if p.is_empty() => f.write_str("*"),
            Self::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_dotted_names() {
        for ok in ["transfer.failed", "a", "bucket.balance_low", "x-1.y_2"] {
            assert!(EventType::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "a.*", "é", &"a".repeat(101)] {
            assert!(EventType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_match_exactly_or_below_a_prefix() {
        let exact = TypePattern::parse("transfer.failed").unwrap();
        assert!(exact.matches("transfer.failed"));
        assert!(!exact.matches("transfer.failed.twice"));
        let prefix = TypePattern::parse("billing.*").unwrap();
        assert!(prefix.matches("billing.paid"));
        assert!(prefix.matches("billing.card.expired"));
        assert!(!prefix.matches("billing"));
        assert!(!prefix.matches("billingx.paid"));
        assert!(TypePattern::parse("*").unwrap().matches("anything.at.all"));
        assert_eq!(prefix.to_string(), "billing.*");
        assert!(TypePattern::parse("billing.*.x").is_err());
        assert!(TypePattern::parse(".*").is_err());
    }
}
