//! [`EmailAddress`]: a user's address, as stored (lower-cased, at most 254 characters).

use super::Invalid;

/// A syntactically valid email address, trimmed and lower-cased; no display name, no domain
/// literal, and a top-level domain is required (`ada@localhost` is refused).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

/// Longest address accepted (RFC 5321's path limit, minus the angle brackets).
pub const MAX_EMAIL: usize = 254;

impl EmailAddress {
    /// Parses an address as a user typed it.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err(Invalid::new("is required"));
        }
        if email.len() > MAX_EMAIL {
            return Err(Invalid::new(format!(
                "must be at most {MAX_EMAIL} characters"
            )));
        }
        let options = email_address::Options::default()
            .without_display_text()
            .without_domain_literal()
            .with_required_tld();
        email_address::EmailAddress::parse_with_options(&email, options).map_err(|e| {
            Invalid::new(format!(
                "is not a valid email address ({})",
                e.to_string().trim_end_matches('.')
            ))
        })?;
        Ok(Self(email))
    }

    /// What follows the last `@`.
    pub fn domain(&self) -> &str {
        domain_of(&self.0)
    }

    /// The address.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// What follows the last `@` of an address (empty without one).
pub fn domain_of(email: &str) -> &str {
    email.rsplit_once('@').map_or("", |(_, d)| d)
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            EmailAddress::parse("  Ada@Example.COM ").unwrap().as_ref(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "Ada <ada@example.com>",
            "ada@localhost",
            "a b@example.com",
            "a\0b@example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} is refused");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(
            EmailAddress::parse(&long).unwrap_err().message(),
            "must be at most 254 characters"
        );
    }

    #[test]
    fn the_domain_is_what_follows_the_last_at() {
        assert_eq!(
            EmailAddress::parse("a@b.example").unwrap().domain(),
            "b.example"
        );
        assert_eq!(domain_of("nope"), "");
    }
}
