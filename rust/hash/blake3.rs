//! BLAKE3 over the `blake3` crate, optionally spread over several cores.
//!
//! Multithreading uses rayon's work splitting inside one update (`update_rayon`), on the
//! fork-safe pools of [`crate::pool`], one per thread count, shared by every hasher that asks
//! for that count; `AUTO` uses one thread per core.

use ::blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root_xof, ChainingValue, HasherExt, Mode,
};

use crate::error::{Error, Result};
use crate::pool::pool;

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

/// Bytes in a BLAKE3 chunk, the leaf of its tree.
const CHUNK: usize = ::blake3::CHUNK_LEN;

/// The magic that starts a marshalled BLAKE3 state (distblob's own format: BLAKE3 has no
/// standard one, and Go's registry never saves BLAKE3 states).
const MAGIC: [u8; 4] = *b"b3\x00\x01";

/// A completed subtree: its chaining value and its size in chunks (a power of two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Subtree {
    cv: ChainingValue,
    chunks: u64,
}

/// A BLAKE3 hasher whose state can be saved and restored.
///
/// It keeps the BLAKE3 tree in the open: a stack of completed subtrees (chaining values of
/// aligned power-of-two runs of chunks, decreasing in size like the binary digits of the
/// length) and the bytes after them that do not fill a chunk. No subtree on the stack is ever
/// the root: the first chunk waits in the tail until more bytes follow, and two equal subtrees at
/// the top stay unmerged until something follows them, since they may be the root's two halves.
/// So the state is complete without any hasher internals: restore the stack and the tail, and
/// hashing goes on. Large updates are hashed as big aligned subtrees by the `blake3` crate, so
/// SIMD (and rayon when allowed) work as in a plain hasher.
#[derive(Clone, Debug)]
pub struct Blake3 {
    stack: Vec<Subtree>,
    /// The bytes after the stack's subtrees: empty only when nothing was hashed.
    tail: Vec<u8>,
    threads: Threads,
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
            stack: Vec::new(),
            tail: Vec::with_capacity(CHUNK),
            threads,
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.stacked_chunks() * CHUNK as u64 + self.tail.len() as u64
    }

    fn stacked_chunks(&self) -> u64 {
        self.stack.iter().map(|s| s.chunks).sum()
    }

    /// Whether nothing has been hashed yet.
    pub fn is_empty(&self) -> bool {
        self.tail.is_empty()
    }

    /// The thread setting.
    pub fn threads(&self) -> Threads {
        self.threads
    }

    /// The chaining value of `data`, a whole aligned subtree starting at byte `offset`.
    fn subtree_cv(&self, offset: u64, data: &[u8]) -> ChainingValue {
        let mut hasher = ::blake3::Hasher::new();
        hasher.set_input_offset(offset);
        match self.threads {
            Threads::Max(n) if n > 1 && data.len() >= PARALLEL_THRESHOLD => {
                pool(n).install(|| hasher.update_rayon(data));
            }
            Threads::Auto if data.len() >= PARALLEL_THRESHOLD => {
                pool(0).install(|| hasher.update_rayon(data));
            }
            _ => {
                hasher.update(data);
            }
        }
        hasher.finalize_non_root()
    }

    /// Merges equal neighbours at the top of the stack, like a binary counter's carries. Only
    /// called when more bytes follow the stack, which makes every merge a non-root node.
    fn collapse(&mut self) {
        while self.stack.len() >= 2 {
            let n = self.stack.len();
            if self.stack[n - 1].chunks != self.stack[n - 2].chunks {
                break;
            }
            let right = self.stack.pop().expect("two subtrees");
            let left = self.stack.pop().expect("two subtrees");
            self.stack.push(Subtree {
                cv: merge_subtrees_non_root(&left.cv, &right.cv, Mode::Hash),
                chunks: left.chunks * 2,
            });
        }
    }

    /// Pushes a completed subtree. Equal neighbours are merged lazily, once a later subtree
    /// proves they are not the two halves of the root.
    fn push(&mut self, subtree: Subtree) {
        self.collapse();
        self.stack.push(subtree);
    }

    /// Hashes `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if !self.tail.is_empty() || self.stack.is_empty() {
            // Bytes after the last whole chunk (or the very first chunk, which may turn out to
            // be the whole input and then the root) wait in the tail until more bytes follow.
            let take = (CHUNK - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if data.is_empty() {
                return;
            }
            let offset = self.stacked_chunks() * CHUNK as u64;
            let cv = self.subtree_cv(offset, &self.tail);
            self.push(Subtree { cv, chunks: 1 });
            self.tail.clear();
        }
        // Whole aligned subtrees straight from `data`: one per update when writes come in
        // aligned power-of-two buffers, so SIMD and rayon get large runs.
        while data.len() >= CHUNK {
            let chunk_index = self.stacked_chunks();
            let available = (data.len() / CHUNK) as u64;
            let mut chunks = 1u64 << (63 - available.leading_zeros());
            if chunk_index > 0 {
                chunks = chunks.min(1u64 << chunk_index.trailing_zeros());
            }
            let bytes = chunks as usize * CHUNK;
            let cv = self.subtree_cv(chunk_index * CHUNK as u64, &data[..bytes]);
            self.push(Subtree { cv, chunks });
            data = &data[bytes..];
        }
        self.tail.extend_from_slice(data);
    }

    /// The first `length` bytes of the output (32 is the standard digest).
    pub fn finalize(&self, length: usize) -> Vec<u8> {
        let mut out = vec![0u8; length];
        if self.stack.is_empty() {
            // At most one chunk: it is the root.
            ::blake3::Hasher::new()
                .update(&self.tail)
                .finalize_xof()
                .fill(&mut out);
            return out;
        }
        let mut tree = self.clone();
        let mut right = if tree.tail.is_empty() {
            tree.stack.pop().expect("two subtrees at least").cv
        } else {
            // The tail follows the stack: its equal neighbours are now known not to be the
            // root's halves.
            tree.collapse();
            let offset = tree.stacked_chunks() * CHUNK as u64;
            tree.subtree_cv(offset, &tree.tail)
        };
        let (first, rest) = tree.stack.split_first().expect("not empty");
        for left in rest.iter().rev() {
            right = merge_subtrees_non_root(&left.cv, &right, Mode::Hash);
        }
        merge_subtrees_root_xof(&first.cv, &right, Mode::Hash).fill(&mut out);
        out
    }

    /// The state: magic, total length (u64 big-endian), the number of subtrees (u8), each as
    /// its chaining value and the log2 of its chunk count (u8), the tail's length (u16
    /// big-endian) and the tail.
    pub fn marshal(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 + 1 + self.stack.len() * 33 + 2 + self.tail.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.len().to_be_bytes());
        out.push(self.stack.len() as u8);
        for subtree in &self.stack {
            out.extend_from_slice(&subtree.cv);
            out.push(subtree.chunks.trailing_zeros() as u8);
        }
        out.extend_from_slice(&(self.tail.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.tail);
        out
    }

    /// Restores a state written by [`Blake3::marshal`], refusing any that no hasher could have
    /// produced (sizes out of order, lengths that do not add up, trailing bytes).
    pub fn unmarshal(state: &[u8], threads: Threads) -> Result<Self> {
        let bad = |why: &str| Err(Error::HashState(format!("blake3 state: {why}")));
        if state.len() < 4 || state[..4] != MAGIC {
            return bad("wrong identifier");
        }
        let mut at = 4;
        let mut take = |n: usize| -> Option<&[u8]> {
            let slice = state.get(at..at + n)?;
            at += n;
            Some(slice)
        };
        let Some(total) = take(8) else {
            return bad("truncated");
        };
        let total = u64::from_be_bytes(total.try_into().expect("eight bytes"));
        let Some(&[count]) = take(1) else {
            return bad("truncated");
        };
        let mut stack: Vec<Subtree> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (Some(cv), Some(&[log2])) = (take(32), take(1)) else {
                return bad("truncated");
            };
            if log2 >= 54 {
                return bad("subtree too large");
            }
            let chunks = 1u64 << log2;
            // Sizes decrease, but for one equal pair at the top (merged lazily).
            let n = stack.len();
            let out_of_order = n >= 1 && stack[n - 1].chunks < chunks
                || n >= 2 && stack[n - 2].chunks == stack[n - 1].chunks;
            if out_of_order {
                return bad("subtrees out of order");
            }
            stack.push(Subtree {
                cv: cv.try_into().expect("32 bytes"),
                chunks,
            });
        }
        let Some(tail_len) = take(2) else {
            return bad("truncated");
        };
        let tail_len = u16::from_be_bytes(tail_len.try_into().expect("two bytes")) as usize;
        let Some(tail) = take(tail_len) else {
            return bad("truncated");
        };
        let tail = tail.to_vec();
        if at != state.len() {
            return bad("trailing bytes");
        }
        if tail.len() > CHUNK || (tail.is_empty() && stack.len() == 1) {
            return bad("impossible tail length");
        }
        let hasher = Blake3 {
            stack,
            tail,
            threads,
        };
        if hasher.len() != total {
            return bad("the length does not match the contents");
        }
        Ok(hasher)
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
    fn any_split_and_restore_matches_the_reference() {
        let data = input(70_000);
        let cuts = [
            0, 1, 1023, 1024, 1025, 2048, 4096, 5000, 65536, 65537, 69_999, 70_000,
        ];
        for &cut in &cuts {
            for &second in &cuts {
                if second < cut {
                    continue;
                }
                let mut h = Blake3::default();
                h.update(&data[..cut]);
                let mut h = Blake3::unmarshal(&h.marshal(), Threads::Max(1)).unwrap();
                h.update(&data[cut..second]);
                let mut h = Blake3::unmarshal(&h.marshal(), Threads::Max(2)).unwrap();
                h.update(&data[second..]);
                assert_eq!(h.len(), data.len() as u64);
                assert_eq!(
                    h.finalize(32),
                    ::blake3::hash(&data).as_bytes().to_vec(),
                    "{cut} {second}"
                );
                for len in [0, cut, second] {
                    let mut prefix = Blake3::default();
                    prefix.update(&data[..len]);
                    let mut want = vec![0u8; 100];
                    ::blake3::Hasher::new()
                        .update(&data[..len])
                        .finalize_xof()
                        .fill(&mut want);
                    assert_eq!(prefix.finalize(100), want);
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn random_splits_match_the_reference(
            len in 0usize..40_000,
            cuts in proptest::collection::vec(0usize..40_000, 0..6),
        ) {
            let data = input(len);
            let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c.min(len)).collect();
            bounds.extend([0, len]);
            bounds.sort_unstable();
            let mut h = Blake3::default();
            for pair in bounds.windows(2) {
                h = Blake3::unmarshal(&h.marshal(), Threads::Max(1)).unwrap();
                h.update(&data[pair[0]..pair[1]]);
            }
            proptest::prop_assert_eq!(h.finalize(32), ::blake3::hash(&data).as_bytes().to_vec());
        }
    }

    #[test]
    fn bad_states_are_refused() {
        let mut h = Blake3::default();
        h.update(&input(5000));
        let good = h.marshal();
        assert!(Blake3::unmarshal(&good, Threads::Max(1)).is_ok());
        for bad in [
            &good[..good.len() - 1],
            &good[..3],
            b"".as_slice(),
            &[good.as_slice(), &[0]].concat(),
        ] {
            assert!(Blake3::unmarshal(bad, Threads::Max(1)).is_err());
        }
        let mut wrong_len = good.clone();
        wrong_len[11] ^= 1;
        assert!(Blake3::unmarshal(&wrong_len, Threads::Max(1)).is_err());
        let mut wrong_magic = good;
        wrong_magic[0] = b'x';
        assert!(Blake3::unmarshal(&wrong_magic, Threads::Max(1)).is_err());
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

    proptest::proptest! {
        /// Hostile states: any bytes, the magic with any tail, a valid state with bytes
        /// overwritten or cut. Unmarshal returns a state or an error, never panics; a state it
        /// accepts hashes on without panicking.
        #[test]
        fn unmarshal_never_panics(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            edits in proptest::collection::vec(
                (proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..8),
            len in 0usize..20_000,
            cut in proptest::prelude::any::<usize>(),
        ) {
            let mut good = Blake3::default();
            good.update(&input(len));
            let mut edited = good.marshal();
            for &(at, byte) in &edits {
                let n = edited.len();
                edited[at % n] = byte;
            }
            let truncated = &edited[..cut % (edited.len() + 1)];
            let mut magic = MAGIC.to_vec();
            magic.extend(&noise);
            for state in [noise.as_slice(), edited.as_slice(), truncated, magic.as_slice()] {
                if let Ok(mut h) = Blake3::unmarshal(state, Threads::Max(1)) {
                    h.update(&input(3000));
                    let _ = h.finalize(32);
                    let _ = h.marshal();
                }
            }
        }
    }
}
