//! One hasher type over every registered algorithm, for code that picks the algorithm at run time
//! (an upload hashed with the algorithm its client asked for).

use super::blake3::{Blake3, Threads};
use super::sha2::{Sha256, Sha384, Sha512};
use crate::error::{Error, Result};

/// A registered digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-256, the canonical algorithm of every registry.
    Sha256,
    /// SHA-384 (distribution accepts it from clients).
    Sha384,
    /// SHA-512.
    Sha512,
    /// BLAKE3 with a 256-bit output.
    Blake3,
}

impl Algorithm {
    /// Parses an OCI algorithm name.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "sha256" => Ok(Algorithm::Sha256),
            "sha384" => Ok(Algorithm::Sha384),
            "sha512" => Ok(Algorithm::Sha512),
            "blake3" => Ok(Algorithm::Blake3),
            other => Err(Error::State(format!(
                "unsupported digest algorithm {other:?}"
            ))),
        }
    }

    /// The OCI name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
            Algorithm::Blake3 => "blake3",
        }
    }
}

/// A hasher of any registered algorithm.
#[derive(Clone, Debug)]
pub enum AnyHasher {
    /// SHA-256.
    Sha256(Sha256),
    /// SHA-384.
    Sha384(Sha384),
    /// SHA-512.
    Sha512(Sha512),
    /// BLAKE3 (boxed: its tree state is far larger than the SHA-2 states).
    Blake3(Box<Blake3>),
}

impl AnyHasher {
    /// A fresh hasher. BLAKE3 uses every core on large writes: an upload is one stream, and
    /// hashing is what bounds it.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => AnyHasher::Sha256(Sha256::new()),
            Algorithm::Sha384 => AnyHasher::Sha384(Sha384::new()),
            Algorithm::Sha512 => AnyHasher::Sha512(Sha512::new()),
            Algorithm::Blake3 => AnyHasher::Blake3(Box::new(Blake3::new(Threads::Auto))),
        }
    }

    /// Restores a state saved by [`AnyHasher::marshal`].
    pub fn unmarshal(algorithm: Algorithm, state: &[u8]) -> Result<Self> {
        match algorithm {
            Algorithm::Sha256 => Ok(AnyHasher::Sha256(Sha256::unmarshal(state)?)),
            Algorithm::Sha384 => Ok(AnyHasher::Sha384(Sha384::unmarshal(state)?)),
            Algorithm::Sha512 => Ok(AnyHasher::Sha512(Sha512::unmarshal(state)?)),
            Algorithm::Blake3 => Ok(AnyHasher::Blake3(Box::new(Blake3::unmarshal(
                state,
                Threads::Auto,
            )?))),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            AnyHasher::Sha256(_) => Algorithm::Sha256,
            AnyHasher::Sha384(_) => Algorithm::Sha384,
            AnyHasher::Sha512(_) => Algorithm::Sha512,
            AnyHasher::Blake3(_) => Algorithm::Blake3,
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        match self {
            AnyHasher::Sha256(h) => h.len(),
            AnyHasher::Sha384(h) => h.len(),
            AnyHasher::Sha512(h) => h.len(),
            AnyHasher::Blake3(h) => h.len(),
        }
    }

    /// Whether nothing has been hashed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hashes `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            AnyHasher::Sha256(h) => h.update(data),
            AnyHasher::Sha384(h) => h.update(data),
            AnyHasher::Sha512(h) => h.update(data),
            AnyHasher::Blake3(h) => h.update(data),
        }
    }

    /// The digest so far, as lowercase hex.
    pub fn hex(&self) -> String {
        hex::encode(match self {
            AnyHasher::Sha256(h) => h.finalize(),
            AnyHasher::Sha384(h) => h.finalize(),
            AnyHasher::Sha512(h) => h.finalize(),
            AnyHasher::Blake3(h) => h.finalize(32),
        })
    }

    /// The state: Go's format for SHA-2, distblob's for BLAKE3. Always `Some` today; the
    /// option leaves room for an algorithm without a saved state.
    pub fn marshal(&self) -> Option<Vec<u8>> {
        match self {
            AnyHasher::Sha256(h) => Some(h.marshal()),
            AnyHasher::Sha384(h) => Some(h.marshal()),
            AnyHasher::Sha512(h) => Some(h.marshal()),
            AnyHasher::Blake3(h) => Some(h.marshal()),
        }
    }
}
