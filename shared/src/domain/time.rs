//! Instants as clients write them: RFC 3339 with a time zone.

use chrono::{DateTime, Utc};

use super::Invalid;

/// Parses an RFC 3339 instant, exactly as JSON Schema's `date-time` format reads it: the zone
/// (`Z` or an offset) is required, since a local time means a different instant on every
/// server; date and time are separated by `T` (or `t`), and nothing surrounds the value.
pub fn parse_instant(raw: &str) -> Result<DateTime<Utc>, Invalid> {
    let refused = || {
        Invalid::new(
            "must be an RFC 3339 time with a time zone, e.g. 2026-11-21T10:00:00Z \
             or 2026-11-21T11:00:00+01:00",
        )
    };
    // chrono also takes a space between date and time, which `date-time` does not
    if !matches!(raw.as_bytes().get(10), Some(b'T' | b't')) {
        return Err(refused());
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| refused())
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

    #[test]
    fn instants_are_read_as_json_schema_date_time_reads_them() {
        assert!(
            parse_instant("2026-11-21t10:00:00z").is_ok(),
            "case does not matter"
        );
        for bad in [
            "2026-11-21 10:00:00Z",
            " 2026-11-21T10:00:00Z",
            "2026-11-21T10:00:00Z ",
        ] {
            assert!(parse_instant(bad).is_err(), "{bad:?}");
        }
    }
}
