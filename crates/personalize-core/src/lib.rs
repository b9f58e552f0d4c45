//! pg_personalize's core: plain Rust with no pgrx dependency (a crate of its own, so the
//! compiler keeps Postgres out), tested with `cargo test -p personalize-core`. The extension
//! uses it as `crate::core`.

pub mod als;
#[cfg(target_arch = "x86_64")]
mod als_avx2;
pub mod campaigns;
pub mod consent;
pub mod csr;
pub mod ease;
pub mod experiments;
#[cfg(test)]
mod fuzz;
pub mod intervals;
pub mod item_item;
pub mod kernels;
pub mod loaders;
pub mod metrics;
pub mod model_image;
pub mod outbox;
pub mod rp3beta;
pub mod segments;
pub mod selection;
pub mod serving;
pub mod synthetic;
pub mod tracking;
