//! Interval arguments checked by what they do. PostgreSQL keeps an interval as months, days
//! and microseconds and adds each in its own calendar unit, while comparing intervals counts
//! a month as 30 days: so `'1000 mon -30000 days 1 second'` compares as one second but holds
//! a lease for 436 days, and `'1 year'` compares as 360 days. A duration here has no negative
//! part, and its longest calendar reading (a year of 366 days, a month of 31) stays within
//! the limit.

use std::fmt;

/// An interval as PostgreSQL stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

const DAY_MICROS: i128 = 86_400_000_000;

impl Span {
    pub const fn days(days: i32) -> Self {
        Span {
            months: 0,
            days,
            micros: 0,
        }
    }

    pub const fn hours(hours: i64) -> Self {
        Span {
            months: 0,
            days: 0,
            micros: hours * 3_600_000_000,
        }
    }

    /// The longest time it can span from some timestamp: a year (12 of its months) of 366
    /// days, another month of 31 (a calendar day is taken as 24 hours, as the limits are).
    pub fn longest_micros(&self) -> i128 {
        self.calendar_micros(366, 31)
    }

    /// The shortest: years of 365 days, months of 28.
    pub fn shortest_micros(&self) -> i128 {
        self.calendar_micros(365, 28)
    }

    fn calendar_micros(&self, year_days: i128, month_days: i128) -> i128 {
        let months = i128::from(self.months);
        ((months / 12) * year_days + (months % 12) * month_days + i128::from(self.days))
            * DAY_MICROS
            + i128::from(self.micros)
    }

    fn is_zero(&self) -> bool {
        self.months == 0 && self.days == 0 && self.micros == 0
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.months != 0 {
            parts.push(format!("{} mons", self.months));
        }
        if self.days != 0 {
            parts.push(format!("{} days", self.days));
        }
        if self.micros != 0 || parts.is_empty() {
            let m = self.micros;
            parts.push(match m {
                m if m % 3_600_000_000 == 0 && m != 0 => format!("{} hours", m / 3_600_000_000),
                m if m % 60_000_000 == 0 && m != 0 => format!("{} minutes", m / 60_000_000),
                m => format!("{} seconds", m as f64 / 1e6),
            });
        }
        write!(f, "{}", parts.join(" "))
    }
}

/// Why `value` is not a duration between 0 (`allow_zero`, else more than 0) and `max`, or
/// `None` when it is one.
pub fn duration_problem(value: Span, max: Span, allow_zero: bool) -> Option<String> {
    if value.months < 0 || value.days < 0 || value.micros < 0 {
        return Some(format!(
            "must not be negative or have a negative part, not {value}"
        ));
    }
    if value.is_zero() && !allow_zero {
        return Some("must be more than 0".into());
    }
    if value.longest_micros() > max.shortest_micros() {
        if value.months == 0 {
            return Some(format!("must be at most {max}, not {value}"));
        }
        let days = value.longest_micros() / DAY_MICROS;
        return Some(format!(
            "must be at most {max}, not {value} (up to {days} days: a month may have 31, \
             a year 366)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(months: i32, days: i32, seconds: i64) -> Span {
        Span {
            months,
            days,
            micros: seconds * 1_000_000,
        }
    }

    #[test]
    fn mixed_signs_are_refused_whatever_their_total() {
        let twelve_hours = Span::hours(12);
        // The review's leases: 436 days, 7+ days, and one that has already ended.
        assert!(duration_problem(span(1000, -30000, 1), twelve_hours, false).is_some());
        assert!(duration_problem(span(1000, -29999, 0), Span::days(7), true).is_some());
        assert!(duration_problem(span(-1, 30, 1), twelve_hours, false).is_some());
        assert!(duration_problem(span(0, 1, -3600), Span::days(2), false).is_some());
    }

    #[test]
    fn a_year_is_longer_than_52_weeks() {
        let max = Span::days(364);
        assert!(duration_problem(span(12, 0, 0), max, true).is_some());
        assert!(duration_problem(span(11, 0, 0), max, true).is_none());
        assert!(duration_problem(span(0, 364, 0), max, true).is_none());
        assert!(duration_problem(span(0, 364, 1), max, true).is_some());
    }

    #[test]
    fn messages_name_the_units() {
        assert_eq!(
            duration_problem(Span::hours(13), Span::hours(12), false).as_deref(),
            Some("must be at most 12 hours, not 13 hours")
        );
        assert_eq!(
            duration_problem(span(12, 0, 0), Span::days(364), false).as_deref(),
            Some("must be at most 364 days, not 12 mons (up to 366 days: a month may have 31, a year 366)")
        );
        assert_eq!(span(0, 0, 90).to_string(), "90 seconds");
        assert_eq!(span(0, 0, 120).to_string(), "2 minutes");
        assert_eq!(span(-1, 30, 1).to_string(), "-1 mons 30 days 1 seconds");
    }

    #[test]
    fn years_count_as_366_days() {
        assert!(duration_problem(span(1200, 0, 0), Span::days(36_600), true).is_none());
        assert!(duration_problem(span(1201, 0, 0), Span::days(36_600), true).is_some());
        assert!(duration_problem(span(12, 0, 0), Span::days(366), true).is_none());
        assert!(duration_problem(span(13, 0, 0), Span::days(366), true).is_some());
    }

    #[test]
    fn limits_and_zero() {
        let max = Span::hours(12);
        assert!(duration_problem(span(0, 0, 30), max, false).is_none());
        assert!(duration_problem(span(0, 0, 12 * 3600), max, false).is_none());
        assert!(duration_problem(span(0, 0, 12 * 3600 + 1), max, false).is_some());
        assert!(duration_problem(span(0, 1, 0), max, false).is_some());
        assert_eq!(
            duration_problem(span(0, 0, 0), max, false).as_deref(),
            Some("must be more than 0")
        );
        assert!(duration_problem(span(0, 0, 0), max, true).is_none());
        // Extreme values do not overflow.
        let huge = Span {
            months: i32::MAX,
            days: i32::MAX,
            micros: i64::MAX,
        };
        assert!(duration_problem(huge, max, true).is_some());
    }
}
