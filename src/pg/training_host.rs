//! What model selection (`core::selection`) asks of Postgres while it trains: NOTICEs, query
//! cancel and statement_timeout, the training memory and time budgets, and errors.

use crate::core::selection::{Failure, Host};
use crate::error::PersonalizeError;
use crate::gucs;

/// The backend's main thread as `core::selection`'s host. Selection calls it only from the
/// thread that called `train()` or `evaluate()`; the pool's threads never do.
pub struct Backend;

impl Host for Backend {
    fn notice(&self, message: &str) {
        pgrx::notice!("{message}");
    }

    fn check_interrupts(&self) {
        pgrx::check_for_interrupts!();
    }

    fn memory_limit_bytes(&self) -> usize {
        gucs::training_memory_limit_bytes()
    }

    fn fail(&self, failure: Failure) -> ! {
        match failure {
            Failure::NoSolution { l2 } => PersonalizeError::invalid(
                format!("EASE with l2 = {l2} has no solution on this data"),
                "Raise l2.",
            )
            .raise(),
            Failure::SolveFailed { items } => PersonalizeError::NotReady {
                message: format!("the EASE solve for {items} items failed"),
                hint: "Train another family (model_type => 'als') and report this.".into(),
            }
            .raise(),
        }
    }
}

/// How long the choice among candidates may take (personalize.training_time_budget).
pub fn selection_time_budget() -> std::time::Duration {
    std::time::Duration::from_secs(gucs::TRAINING_TIME_BUDGET.get().max(0) as u64)
}
