//! BLAKE3 over the `blake3` crate, optionally spread over several cores.
//!
//! Multithreading uses rayon's work splitting inside one update (`update_rayon`). A rayon pool
//! costs threads, so pools are built once per thread count and shared by every hasher that asks
//! for that count; `AUTO` uses rayon's global pool (one thread per core).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Below this many bytes splitting the work over threads costs more than it gains (the `blake3`
/// documentation puts the break-even near 128 KiB).
const PARALLEL_THRESHOLD: usize = 128 * 1024;

/// How many threads a hasher may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// One thread per core (rayon's global pool).
    Auto,
    /// At most this many threads; 1 hashes on the caller's thread only.
    Max(usize),
}

/// A BLAKE3 hasher.
#[derive(Clone, Debug)]
pub struct Blake3 {
    inner: ::blake3::Hasher,
    threads: Threads,
}

fn pool(threads: usize) -> Arc<rayon::ThreadPool> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(Default::default);
    let mut pools = pools
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    pools
        .entry(threads)
        .or_insert_with(|| {
            Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("distblob-blake3-{i}"))
                    .build()
                    .expect("a rayon pool can be built"),
            )
        })
        .clone()
}

impl Default for Blake3 {
    fn default() -> Self {
        Self::new(Threads::Max(1))
    }
}

impl Blake3 {
    /// A hasher that has hashed nothing.
    pub fn new(threads: Threads) -> Self {
        Blake3 {
            inner: ::blake3::Hasher::new(),
            threads,
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.inner.count()
    }

    /// Whether nothing has been hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The thread setting.
    pub fn threads(&self) -> Threads {
        self.threads
    }

    /// Hashes `data`, on several threads when it is large enough and the setting allows.
    pub fn update(&mut self, data: &[u8]) {
        if data.len() < PARALLEL_THRESHOLD {
            self.inner.update(data);
            return;
        }
        match self.threads {
            Threads::Max(0 | 1) => {
                self.inner.update(data);
            }
            Threads::Auto => {
                self.inner.update_rayon(data);
            }
            Threads::Max(n) => {
                let inner = &mut self.inner;
                pool(n).install(|| inner.update_rayon(data));
            }
        }
    }

    /// The first `length` bytes of the output (32 is the standard digest).
    pub fn finalize(&self, length: usize) -> Vec<u8> {
        let mut out = vec![0u8; length];
        self.inner.finalize_xof().fill(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn official_vectors() {
        // From BLAKE3's test_vectors.json (first 32 bytes of the extended output).
        let cases = [
            (
                0,
                "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            ),
            (
                1025,
                "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
            ),
        ];
        for (len, want) in cases {
            let mut h = Blake3::default();
            h.update(&input(len));
            assert_eq!(hex::encode(h.finalize(32)), want);
        }
    }

    #[test]
    fn threads_do_not_change_the_digest() {
        let data = input(3 << 20);
        let mut one = Blake3::new(Threads::Max(1));
        let mut two = Blake3::new(Threads::Max(2));
        let mut auto = Blake3::new(Threads::Auto);
        for h in [&mut one, &mut two, &mut auto] {
            h.update(&data[..1000]);
            h.update(&data[1000..]);
        }
        assert_eq!(one.finalize(32), two.finalize(32));
        assert_eq!(one.finalize(32), auto.finalize(32));
        assert_eq!(one.len(), data.len() as u64);
    }
}
