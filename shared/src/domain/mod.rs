//! Domain values, validated where they enter (the API's request bodies and queries, and later
//! import rows): each is a newtype with a private field, built only by `parse`, so a value of
//! the type is valid by construction.
//!
//! A refusal is an [`Invalid`]: a phrase such as "must be at most 100 characters" that the
//! caller prefixes with the field's name. [`FieldErrors`] collects them, so one answer names
//! every invalid field. The coming rule conditions, bucket amounts and import rows live here
//! too.

mod email;
mod fields;
mod name;
mod password;
mod project;
mod text;
mod time;

pub use email::{EmailAddress, domain_of};
pub use fields::{FieldError, FieldErrors, from_json_object, read_json_object};
pub use name::DisplayName;
pub use password::Password;
pub use project::{
    Description, MAX_DESCRIPTION, MAX_EVENTS_PER_SECOND, MAX_SLUG, ProjectSettings, ProjectStatus,
    Slug,
};
pub use text::{IdempotencyKey, SearchTerm};
pub use time::parse_instant;

use std::{borrow::Cow, fmt, ops::RangeInclusive};

/// Why a value was refused: a phrase that reads after the field's name ("must be …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(Cow<'static, str>);

impl Invalid {
    /// A refusal with this message.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// `value` if it lies in `range`.
pub fn within<T: PartialOrd + fmt::Display>(
    value: T,
    range: RangeInclusive<T>,
) -> Result<T, Invalid> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(Invalid::new(format!(
            "must be between {} and {} (got {value})",
            range.start(),
            range.end()
        )))
    }
}

/// A required value: absent (or JSON `null`) is refused.
pub fn required<T>(value: Option<T>) -> Result<T, Invalid> {
    value.ok_or_else(|| Invalid::new("is required"))
}

/// Refuses control characters (NUL among them: Postgres cannot store it in text).
fn no_control_characters(s: &str) -> Result<(), Invalid> {
    if s.chars().any(char::is_control) {
        return Err(Invalid::new("must not contain control characters"));
    }
    Ok(())
}

/// Refuses strings longer than `max` characters.
fn at_most(s: &str, max: usize) -> Result<(), Invalid> {
    if s.chars().count() > max {
        return Err(Invalid::new(format!("must be at most {max} characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_accepts_the_bounds_and_names_them_when_refusing() {
        assert_eq!(within(5, 1..=5), Ok(5));
        assert_eq!(within(1, 1..=5), Ok(1));
        let err = within(0, 1..=5).unwrap_err();
        assert_eq!(err.message(), "must be between 1 and 5 (got 0)");
    }
}
