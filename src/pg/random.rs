//! Random UUIDs: lease tokens from the server's strong random source (what gen_random_uuid
//! uses), and idempotency keys from a per-backend ChaCha20 stream seeded from it, so writing a
//! message costs no system call.

use std::cell::RefCell;

use pgrx::datum::Uuid;
use pgrx::pg_sys;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::PersonalizeError;

thread_local! {
    /// Seeded on first use in this backend (not in the postmaster, so no two backends share
    /// a stream).
    static KEYS: RefCell<Option<ChaCha20Rng>> = const { RefCell::new(None) };
}

/// Bytes from the server's strong random source.
fn strong_random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // SAFETY: writes exactly N bytes into an N-byte buffer.
    if !unsafe { pg_sys::pg_strong_random(b.as_mut_ptr().cast(), N) } {
        PersonalizeError::NotReady {
            message: "could not read the server's random source".into(),
            hint: "pg_strong_random failed; check the server's random source.".into(),
        }
        .raise();
    }
    b
}

/// A version 4 (random) UUID from 16 random bytes.
fn uuid_v4(mut b: [u8; 16]) -> Uuid {
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    Uuid::from_bytes(b)
}

/// A random UUID straight from the strong random source (lease tokens).
pub fn strong_uuid() -> Uuid {
    uuid_v4(strong_random())
}

/// A random UUID from this backend's ChaCha20 stream (idempotency keys).
pub fn fast_uuid() -> Uuid {
    KEYS.with(|k| {
        let mut k = k.borrow_mut();
        let rng = k.get_or_insert_with(|| ChaCha20Rng::from_seed(strong_random()));
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        uuid_v4(b)
    })
}
