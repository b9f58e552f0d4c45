//! The one error type of the extension, mapped to real SQLSTATEs with hints.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum PersonalizeError {
    /// A parameter that can never work (SQLSTATE 22023).
    #[error("{message}")]
    InvalidParameter { message: String, hint: String },
    /// Data that breaks the tracking plan, raised in strict mode (SQLSTATE 23514).
    #[error("{message}")]
    PlanViolation { message: String, hint: String },
    /// A size limit (SQLSTATE 54000).
    #[error("{message}")]
    LimitExceeded { message: String, hint: String },
    /// A named thing (segment, campaign) that does not exist (SQLSTATE 42704).
    #[error("{message}")]
    Undefined { message: String, hint: String },
    /// The extension's own objects are missing or broken (SQLSTATE 55000).
    #[error("{message}")]
    NotReady { message: String, hint: String },
    /// An allocation the system refused (SQLSTATE 53200): an error, never an aborted backend.
    #[error("{message}")]
    OutOfMemory { message: String, hint: String },
    /// A key already used for something else (SQLSTATE 23505).
    #[error("{message}")]
    DuplicateKey { message: String, hint: String },
}

impl PersonalizeError {
    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::InvalidParameter {
            message: message.into(),
            hint: hint.into(),
        }
    }

    fn parts(&self) -> (PgSqlErrorCode, &str, &str) {
        match self {
            Self::InvalidParameter { message, hint } => (
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                message,
                hint,
            ),
            Self::PlanViolation { message, hint } => {
                (PgSqlErrorCode::ERRCODE_CHECK_VIOLATION, message, hint)
            }
            Self::LimitExceeded { message, hint } => (
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                message,
                hint,
            ),
            Self::Undefined { message, hint } => {
                (PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, message, hint)
            }
            Self::NotReady { message, hint } => (
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                message,
                hint,
            ),
            Self::OutOfMemory { message, hint } => {
                (PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY, message, hint)
            }
            Self::DuplicateKey { message, hint } => {
                (PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, message, hint)
            }
        }
    }

    /// Raises the error in Postgres (never returns).
    pub fn raise(self) -> ! {
        let (code, message, hint) = self.parts();
        // Messages quote the caller's input; a megabyte-long argument must not come back whole.
        let message = cut(message, MAX_MESSAGE_CHARS);
        ErrorReport::new(code, format!("pg_personalize: {message}"), "pg_personalize")
            .set_hint(hint.to_owned())
            .report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

/// Longest error message, whatever it quotes.
const MAX_MESSAGE_CHARS: usize = 2_000;
/// Longest quoted value (a name, an id) inside a message.
const MAX_SHOWN_CHARS: usize = 100;

/// `s` cut to `max` characters, saying how long it was.
fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s.into(),
        Some((at, _)) => format!("{}... ({} characters)", &s[..at], s.chars().count()).into(),
    }
}

/// A value of the caller's, as an error message quotes it: at most 100 characters.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    cut(s, MAX_SHOWN_CHARS)
}

/// An argument that must not be NULL (SQL wrappers pass NULL through for every argument, so
/// each function says which one was missing instead of silently returning nothing).
pub fn required<T>(v: Option<T>, name: &str) -> T {
    v.unwrap_or_else(|| {
        PersonalizeError::invalid(
            format!("{name} must not be NULL"),
            format!("Pass a value for {name}, or omit it to use its default."),
        )
        .raise()
    })
}

/// A query on the extension's own tables failed (SQLSTATE 55000): `what` says which.
pub fn spi_failed(what: &str, e: impl std::fmt::Display) -> ! {
    PersonalizeError::NotReady {
        message: format!("{what}: {e}"),
        hint: "Check that the extension's tables exist and the role may use them.".into(),
    }
    .raise()
}

/// The `strict` argument of the tracking and import functions: NULL is refused rather than
/// silently treated as either value.
pub fn strict_flag(strict: Option<bool>) -> bool {
    strict.unwrap_or_else(|| {
        PersonalizeError::invalid(
            "strict must be true or false, not NULL",
            "Omit the argument for the default (false: invalid events are quarantined).",
        )
        .raise()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_cut_to_a_readable_length() {
        assert_eq!(shown("short"), "short");
        let long = "é".repeat(1_000_000);
        let s = shown(&long);
        assert!(s.starts_with(&"é".repeat(100)));
        assert!(
            s.ends_with("... (1000000 characters)"),
            "{}",
            &s[s.len() - 40..]
        );
        assert_eq!(s.chars().count(), 100 + "... (1000000 characters)".len());
        assert_eq!(cut(&"x".repeat(2_000), MAX_MESSAGE_CHARS).len(), 2_000);
    }
}
