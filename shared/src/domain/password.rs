//! [`Password`]: a password a user chooses.

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{RefOr, schema::Schema},
};

use super::{Invalid, NO_NUL_PATTERN, string_schema};

/// A new password: 12 to 128 characters, no NUL. Never logged or serialized.
#[derive(Clone)]
pub struct Password(String);

/// Shortest password accepted (characters).
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (characters).
pub const MAX_PASSWORD: usize = 128;

impl Password {
    /// Checks a chosen password.
    pub fn parse(raw: String) -> Result<Self, Invalid> {
        let chars = raw.chars().count();
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&chars) {
            return Err(Invalid::new(format!(
                "must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
            )));
        }
        if raw.contains('\0') {
            return Err(Invalid::new("must not contain NUL characters"));
        }
        Ok(Self(raw))
    }
}

impl AsRef<str> for Password {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialSchema for Password {
    fn schema() -> RefOr<Schema> {
        string_schema(format!(
            "A new password: {MIN_PASSWORD} to {MAX_PASSWORD} characters, no NUL."
        ))
        .min_length(Some(MIN_PASSWORD))
        .max_length(Some(MAX_PASSWORD))
        .pattern(Some(NO_NUL_PATTERN))
        .into()
    }
}

impl ToSchema for Password {}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_12_to_128_characters_without_nul() {
        assert!(Password::parse("x".repeat(11)).is_err());
        assert!(Password::parse("x".repeat(12)).is_ok());
        assert!(Password::parse("é".repeat(128)).is_ok());
        assert!(Password::parse("x".repeat(129)).is_err());
        assert!(Password::parse(format!("{}\0", "x".repeat(12))).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("x".repeat(12)).unwrap()),
            "Password(..)"
        );
    }
}
