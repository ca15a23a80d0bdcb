//! Streaming hashers whose state can be saved and restored.
//!
//! SHA-256, SHA-384 and SHA-512 keep their chaining values, pending block and length in plain fields so
//! they can be serialised in Go's `MarshalBinary` format (the format distribution writes to
//! `hashstates/sha256/<offset>`); the block compression is `sha2`'s, which picks the CPU's SHA
//! extensions at run time. BLAKE3 wraps the `blake3` crate, with optional multithreading.

pub mod any;
pub mod blake3;
pub mod sha2;

pub use self::blake3::Blake3;
pub use self::sha2::{Sha256, Sha384, Sha512};
