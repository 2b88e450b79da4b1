//! Instants as clients write them: RFC 3339 with a time zone.

use chrono::{DateTime, Utc};

use super::Invalid;

/// Parses an RFC 3339 instant; the zone (`Z` or an offset) is required, since a local time
/// means a different instant on every server.
pub fn parse_instant(raw: &str) -> Result<DateTime<Utc>, Invalid> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Invalid::new(
                "must be an RFC 3339 time with a time zone, e.g. 2026-11-21T10:00:00Z \
                 or 2026-11-21T11:00:00+01:00",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_need_a_time_zone() {
        assert_eq!(
            parse_instant("2026-11-21T11:00:00+01:00").unwrap(),
            parse_instant("2026-11-21T10:00:00Z").unwrap()
        );
        for bad in ["2026-11-21T10:00:00", "2026-11-21", "soon", ""] {
            let err = parse_instant(bad).unwrap_err();
            assert!(err.message().contains("RFC 3339"), "{bad:?}: {err}");
        }
    }
}
