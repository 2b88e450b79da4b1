//! Cron expressions as Comet accepts them, parsed into the `cron` crate's [`cron::Schedule`].
//!
//! Two forms:
//! - **Standard, five fields**: `minute hour day-of-month month day-of-week`, as crontab(5):
//!   day-of-week `0`–`7` with `0` and `7` both Sunday, or names (`MON-FRI`). It runs at second
//!   0 of the minute. Because the `cron` crate numbers days 1–7 from Sunday, the day-of-week
//!   field is read here by crontab's rules and handed to the crate as day names, so `1-5` is
//!   Monday to Friday, as every crontab means it. Restricting both day-of-month and day-of-week
//!   is refused: crontab fires when *either* matches, the `cron` crate only when *both* do.
//! - **With seconds, six or seven fields**: the `cron` crate's own syntax, verbatim:
//!   `second minute hour day-of-month month day-of-week [year]`, day-of-week `1`–`7` counted
//!   from **Sunday** (names are clearer: `MON-FRI`). Plus the crate's `@hourly`, `@daily`,
//!   `@weekly`, `@monthly`, `@yearly`.

use std::str::FromStr;

/// Day names in crontab's numbering (0 = Sunday).
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Parses a schedule expression (see the module docs); the error says what is wrong.
pub fn parse(expression: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let crate_form = match fields.len() {
        1 if fields[0].starts_with('@') => fields[0].to_owned(),
        5 => standard(&fields)?,
        6 | 7 => fields.join(" "),
        n => {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 to 7 with \
                 seconds first (second minute hour day-of-month month day-of-week [year]); got {n}"
            ));
        }
    };
    cron::Schedule::from_str(&crate_form).map_err(|e| e.to_string())
}

/// Whether a day field restricts anything.
fn restricts(field: &str) -> bool {
    !matches!(field, "*" | "?")
}

/// The crate's six-field form of a standard five-field expression.
fn standard(f: &[&str]) -> Result<String, String> {
    let (minute, hour, dom, month, dow) = (f[0], f[1], f[2], f[3], f[4]);
    if restricts(dom) && restricts(dow) {
        return Err(
            "restricting both day-of-month and day-of-week is ambiguous (crontab fires when \
             either matches, the cron crate only when both do); restrict one of them"
                .into(),
        );
    }
    let dow = if restricts(dow) {
        weekdays(dow)?
    } else {
        dow.to_owned()
    };
    Ok(format!("0 {minute} {hour} {dom} {month} {dow}"))
}

/// A crontab day-of-week field (`0`–`7`, names, lists, ranges, steps) as a list of day names.
fn weekdays(field: &str) -> Result<String, String> {
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: usize = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("day-of-week: bad step in {item:?}"))?;
                (r, step)
            }
            None => (item, 1),
        };
        let (from, to) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                None if step > 1 => (day(r)?, 6),
                None => {
                    let d = day(r)?;
                    (d, d)
                }
            },
        };
        // crontab's 7 is Sunday again: `5-7` is Friday to Sunday
        if from > to && to != 7 {
            return Err(format!("day-of-week: range {range:?} runs backwards"));
        }
        for d in (from..=to).step_by(step) {
            days[d % 7] = true;
        }
    }
    Ok(DAYS
        .iter()
        .zip(days)
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(","))
}

/// One day of a crontab day-of-week field: `0`–`7` or a name.
fn day(s: &str) -> Result<usize, String> {
    if let Ok(n) = s.parse::<usize>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!("day-of-week: {n} is not 0-7"))
        };
    }
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("day-of-week: {s:?} is not a day"))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc, Weekday};

    use super::*;

    fn next(expr: &str, after: DateTime<Utc>) -> DateTime<Utc> {
        parse(expr)
            .expect("valid")
            .after(&after)
            .next()
            .expect("a next tick")
    }

    /// Sunday 2026-11-29 12:00:00 UTC.
    fn sunday_noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
    }

    #[test]
    fn five_fields_run_at_second_zero_of_the_minute() {
        let t = next("*/15 * * * *", sunday_noon());
        assert_eq!((t.hour(), t.minute(), t.second()), (12, 15, 0));
    }

    #[test]
    fn five_field_weekdays_count_from_sunday_zero_as_crontab_does() {
        let t = next("0 9 * * 1", sunday_noon());
        assert_eq!(t.weekday(), Weekday::Mon, "1 is Monday in crontab");
        let t = next("0 9 * * 1-5", sunday_noon());
        assert_eq!(t.weekday(), Weekday::Mon);
        for sunday in ["0 13 * * 0", "0 13 * * 7", "0 13 * * sun", "0 13 * * 5-7"] {
            let t = next(sunday, sunday_noon());
            assert_eq!((t.weekday(), t.hour()), (Weekday::Sun, 13), "{sunday}");
        }
        let t = next("0 13 * * */2", sunday_noon());
        assert_eq!(t.weekday(), Weekday::Sun, "0,2,4,6");
        let t = next("0 11 * * */2", sunday_noon());
        assert_eq!(t.weekday(), Weekday::Tue);
    }

    #[test]
    fn six_and_seven_fields_are_the_cron_crates_own_with_seconds() {
        let t = next("*/10 * * * * *", sunday_noon());
        assert_eq!(t.second(), 10);
        let t = next("0 0 9 * * MON-FRI 2027", sunday_noon());
        assert_eq!((t.year(), t.weekday()), (2027, Weekday::Fri), "1 Jan 2027");
        let t = next("@hourly", sunday_noon());
        assert_eq!(t.hour(), 13);
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (expr, says) in [
            ("* * *", "expected 5 fields"),
            ("* * * * * * * *", "got 8"),
            ("0 9 1 * 1", "ambiguous"),
            ("0 9 * * 8", "not 0-7"),
            ("0 9 * * funday", "not a day"),
            ("0 9 * * 5-2", "backwards"),
            ("61 * * * *", ""),
            ("* * * * * * nope", ""),
        ] {
            let err = parse(expr).expect_err(expr);
            assert!(err.contains(says), "{expr}: {err}");
            assert!(!err.is_empty());
        }
    }
}
