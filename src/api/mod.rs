//! SQL-facing functions, one file per capability. Thin: parse arguments, call `core`/`pg`,
//! map errors. Their jsonb-typed public wrappers live in sql/finalize.sql.

mod campaign_trigger;
mod consent;
mod experiments;
mod intervals;
mod loaders;
mod outbox;
mod plan;
mod privileges;
mod segments;
mod serving;
mod synthetic;
mod tracking;
mod training;
