//! Plain Rust, no pgrx: everything here is tested with `cargo test` and knows nothing of
//! Postgres.

pub mod loaders;
pub mod synthetic;
pub mod tracking;
