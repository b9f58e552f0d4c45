//! Postgres plumbing: the compiled tracking plan per backend and bulk ingestion through SPI.

pub mod ingest;
pub mod plan_cache;
