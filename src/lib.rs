//! pg_personalize: e-commerce personalization inside PostgreSQL.
//!
//! Layers: `core` (the crate crates/personalize-core) is plain Rust, no pgrx, tested with
//! `cargo test -p personalize-core`; `pg` is the Postgres plumbing (caches, ingestion, model
//! files, the serving engine, the outbox's readers and writers); `api` holds the SQL-facing
//! functions, one file per capability. Hand-written SQL lives in `sql/`. Imports go down only:
//! api → pg → core.

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

/// The plain-Rust core (crates/personalize-core), under the name the layers use.
pub use personalize_core as core;

mod api;
mod error;
mod gucs;
mod pg;

// The hand-written SQL, one file per capability beside the Rust it calls: the tables first
// (bootstrap), then each capability's triggers, SQL wrappers and comments once the Rust
// functions they name exist (`requires`), and last the status view and the privileges
// (finalize). scripts/sql_requires.py --check (the lint step) fails when a list misses what
// its file uses.
pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!(
    "../sql/intervals.sql",
    name = "intervals",
    requires = [api::intervals::_check_duration]
);
pgrx::extension_sql_file!(
    "../sql/tracking.sql",
    name = "tracking",
    requires = [
        "intervals",
        api::plan::_invalidate_plan_cache,
        api::plan::_plan_schema_problem,
        api::tracking::_track_many,
        api::tracking::_track_one,
        api::tracking::_validate_one,
        api::tracking::replay_rejected
    ]
);
pgrx::extension_sql_file!(
    "../sql/loaders.sql",
    name = "loaders",
    requires = [
        api::loaders::_import_events,
        api::loaders::_import_online_retail,
        api::loaders::_import_retailrocket
    ]
);
pgrx::extension_sql_file!(
    "../sql/catalogue.sql",
    name = "catalogue",
    requires = [api::serving::_invalidate_catalog_cache]
);
pgrx::extension_sql_file!(
    "../sql/models.sql",
    name = "models",
    requires = [
        api::training::evaluate_families,
        api::training::train_recommender
    ]
);
pgrx::extension_sql_file!(
    "../sql/serving.sql",
    name = "serving",
    requires = [
        api::serving::explain_recommendation,
        api::serving::rank_items,
        api::serving::recommend,
        api::serving::recommend_for_session,
        api::serving::similar_items
    ]
);
pgrx::extension_sql_file!(
    "../sql/synthetic.sql",
    name = "synthetic",
    requires = [
        api::synthetic::generate_shop,
        api::synthetic::synthetic_events,
        api::synthetic::synthetic_items
    ]
);
pgrx::extension_sql_file!(
    "../sql/segments.sql",
    name = "segments",
    requires = [
        api::segments::_invalidate_segment_cache,
        api::segments::_segment_hint,
        api::segments::_segment_members_among,
        api::segments::_segment_problem,
        api::segments::_segment_sql,
        api::segments::in_segment,
        api::segments::segment_members,
        api::segments::user_segments
    ]
);
pgrx::extension_sql_file!(
    "../sql/segment_predicates.sql",
    name = "segment_predicates",
    requires = ["segments"]
);
pgrx::extension_sql_file!(
    "../sql/campaigns.sql",
    name = "campaigns",
    requires = [
        "intervals",
        api::campaign_trigger::_events_fire_campaigns,
        api::campaign_trigger::_invalidate_campaign_cache,
        api::outbox::_after_quiet_hours,
        api::outbox::_template_problem,
        api::outbox::claim_messages
    ]
);
pgrx::extension_sql_file!(
    "../sql/experiments.sql",
    name = "experiments",
    requires = [
        "campaigns",
        "intervals",
        api::experiments::_invalidate_experiment_cache,
        api::experiments::_variants_problem,
        api::experiments::assign_variant,
        api::experiments::experiment_report,
        api::experiments::log_exposure,
        api::experiments::variant_model
    ]
);
pgrx::extension_sql_file!(
    "../sql/consent.sql",
    name = "consent",
    requires = [
        "sync",
        "campaigns",
        api::consent::_unsubscribe_recipient,
        api::consent::unsubscribe_token
    ]
);
pgrx::extension_sql_file!(
    "../sql/sync.sql",
    name = "sync",
    requires = ["catalogue", "tracking"]
);
pgrx::extension_sql_file!(
    "../sql/identity.sql",
    name = "identity",
    requires = ["campaigns"]
);
pgrx::extension_sql_file!(
    "../sql/privacy.sql",
    name = "privacy",
    requires = ["experiments", "identity", "consent"]
);
pgrx::extension_sql_file!(
    "../sql/any_ids.sql",
    name = "any_ids",
    requires = [
        "catalogue",
        "serving",
        "segments",
        "segment_predicates",
        "experiments",
        "identity",
        "privacy",
        "consent"
    ]
);
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    pg::plan_cache::register_invalidation_callback();
    pg::model_cache::register_invalidation_callback();
    pg::experiment_cache::register_invalidation_callback();
    pg::campaign_cache::register_invalidation_callbacks();
    pg::segment_cache::register_invalidation_callback();
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
