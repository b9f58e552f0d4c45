//! Plain Rust, no pgrx: everything here is tested with `cargo test` and knows nothing of
//! Postgres.

pub mod als;
#[cfg(target_arch = "x86_64")]
mod als_avx2;
pub mod campaigns;
pub mod csr;
pub mod ease;
pub mod experiments;
#[cfg(test)]
mod fuzz;
pub mod intervals;
pub mod item_item;
pub mod loaders;
pub mod metrics;
pub mod model_image;
pub mod outbox;
pub mod rp3beta;
pub mod segments;
pub mod serving;
pub mod synthetic;
pub mod tracking;
