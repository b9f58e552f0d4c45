//! Interval arguments and settings checked by what they do (`core::intervals`), raised as
//! 22023 with a hint.

use pgrx::datum::Interval;

use crate::core::intervals::{duration_problem, Span};
use crate::error::PersonalizeError;

pub fn span(i: Interval) -> Span {
    Span {
        months: i.months(),
        days: i.days(),
        micros: i.micros(),
    }
}

/// Raises unless `value` is a duration from 0 (`allow_zero`; else more than 0) to `max` with
/// no negative part; `what` names it and `hint` says what it is for.
pub fn check_duration(what: &str, value: Interval, max: Span, allow_zero: bool, hint: &str) {
    if let Some(problem) = duration_problem(span(value), max, allow_zero) {
        PersonalizeError::invalid(
            format!("{what} {problem}"),
            format!(
                "{hint} Write it in one unit, such as '30 seconds', '2 hours' or '7 days': \
                 months, days and time are added one by one (a month may have 31 days, a year \
                 366), so a negative part makes an interval do something else than its total \
                 says."
            )
            .trim_start()
            .to_owned(),
        )
        .raise();
    }
}
