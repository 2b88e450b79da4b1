//! Quiet hours: a daily window, in a user's time zone, during which their notification email
//! waits. The window may cross midnight (`22:00`–`07:00`); start == end is refused (it would be
//! either nothing or the whole day).

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::Invalid;

/// A validated quiet-hours window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    start: NaiveTime,
    end: NaiveTime,
    zone: Tz,
}

/// Parses `HH:MM` (24-hour).
pub fn parse_time_of_day(raw: &str) -> Result<NaiveTime, Invalid> {
    if raw.len() != 5 {
        return Err(Invalid::new("must be a time of day as HH:MM, e.g. 22:00"));
    }
    NaiveTime::parse_from_str(raw, "%H:%M")
        .map_err(|_| Invalid::new("must be a time of day as HH:MM, e.g. 22:00"))
}

/// Parses an IANA time zone name (`Europe/Paris`, `UTC`).
pub fn parse_time_zone(raw: &str) -> Result<Tz, Invalid> {
    if raw.is_empty() || raw.len() > 64 {
        return Err(Invalid::new(
            "must be an IANA time zone name, e.g. Europe/Paris",
        ));
    }
    raw.parse::<Tz>()
        .map_err(|_| Invalid::new("must be an IANA time zone name, e.g. Europe/Paris"))
}

impl QuietHours {
    /// A window from `start` to `end` in `zone`; refused when they are equal.
    pub fn new(start: NaiveTime, end: NaiveTime, zone: Tz) -> Result<Self, Invalid> {
        if start == end {
            return Err(Invalid::new("must differ from the start of quiet hours"));
        }
        Ok(Self { start, end, zone })
    }

    /// The window as stored (start, end, zone name); `None` when there is none, or when what is
    /// stored is no longer valid (a time zone renamed away): no quiet hours rather than none
    /// ever sent.
    pub fn from_stored(
        start: Option<NaiveTime>,
        end: Option<NaiveTime>,
        zone: &str,
    ) -> Option<Self> {
        Self::new(start?, end?, parse_time_zone(zone).ok()?).ok()
    }

    /// When the window that holds `now` ends (the next local `end`, as an instant), or `None`
    /// when `now` is outside quiet hours.
    pub fn holds_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.zone);
        let time = local.time();
        let inside = if self.start < self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        };
        if !inside {
            return None;
        }
        let mut day = local.date_naive();
        if time >= self.end {
            day = day.succ_opt()?;
        }
        let end = day.and_time(self.end);
        // a local time skipped by a DST change: the first instant after the gap
        let at = self.zone.from_local_datetime(&end).earliest().or_else(|| {
            self.zone
                .from_local_datetime(&(end + Duration::hours(1)))
                .earliest()
        })?;
        Some(at.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveTime {
        parse_time_of_day(s).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_window_within_a_day_holds_only_inside_it() {
        let q = QuietHours::new(t("12:00"), t("14:00"), Tz::UTC).unwrap();
        assert_eq!(q.holds_until(at("2026-12-02T11:59:00Z")), None);
        assert_eq!(
            q.holds_until(at("2026-12-02T12:00:00Z")),
            Some(at("2026-12-02T14:00:00Z"))
        );
        assert_eq!(q.holds_until(at("2026-12-02T14:00:00Z")), None);
    }

    #[test]
    fn a_window_across_midnight_ends_on_the_right_day_in_the_users_zone() {
        let paris: Tz = parse_time_zone("Europe/Paris").unwrap();
        let q = QuietHours::new(t("22:00"), t("07:00"), paris).unwrap();
        // 21:30 UTC is 22:30 in Paris (winter, +01:00): held until 07:00 Paris = 06:00 UTC
        assert_eq!(
            q.holds_until(at("2026-12-02T21:30:00Z")),
            Some(at("2026-12-03T06:00:00Z"))
        );
        // 05:00 UTC = 06:00 Paris: held until 06:00 UTC the same day
        assert_eq!(
            q.holds_until(at("2026-12-03T05:00:00Z")),
            Some(at("2026-12-03T06:00:00Z"))
        );
        assert_eq!(q.holds_until(at("2026-12-03T06:00:00Z")), None);
        assert_eq!(q.holds_until(at("2026-12-02T20:59:00Z")), None);
    }

    #[test]
    fn an_end_inside_a_dst_gap_ends_after_the_gap() {
        // Paris skips 02:00-03:00 on 2027-03-28
        let paris: Tz = parse_time_zone("Europe/Paris").unwrap();
        let q = QuietHours::new(t("23:00"), t("02:30"), paris).unwrap();
        let until = q.holds_until(at("2027-03-27T23:30:00Z")).unwrap();
        assert_eq!(until, at("2027-03-28T01:30:00Z"), "03:30 CEST");
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for bad in ["7:00", "24:00", "12:60", "noon", "12:00:00", ""] {
            assert!(parse_time_of_day(bad).is_err(), "{bad:?}");
        }
        for bad in ["Mars/Olympus", "", "utc+1"] {
            assert!(parse_time_zone(bad).is_err(), "{bad:?}");
        }
        assert!(QuietHours::new(t("10:00"), t("10:00"), Tz::UTC).is_err());
    }
}
