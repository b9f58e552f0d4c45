//! Postgres plumbing: the compiled tracking plan per backend and bulk ingestion through SPI.

pub mod experiment_cache;
pub mod ingest;
pub mod interactions;
pub mod model_cache;
pub mod model_store;
pub mod plan_cache;
pub mod watched_table;
