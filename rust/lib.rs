//! distblob's native core.
//!
//! `hash` (resumable SHA-2 in Go's state format, BLAKE3) is plain Rust, tested with `cargo test`;
//! `python` is the thin PyO3 layer that exposes it as `distblob._native`, built only with the
//! `python` feature (maturin turns it on).

pub mod error;
pub mod hash;
pub mod pool;
pub mod scan;
pub mod upload;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
