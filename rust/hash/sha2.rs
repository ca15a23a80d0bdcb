//! SHA-256, SHA-384 and SHA-512 with states in Go's `crypto/sha256` / `crypto/sha512`
//! `MarshalBinary` format.
//!
//! Go's format is: a 4-byte magic (`"sha\x03"` for SHA-256, `"sha\x04"` for SHA-384, `"sha\x07"`
//! for SHA-512), the eight chaining values big-endian, the block buffer holding the `len % block`
//! pending bytes followed by zeros, and the total length hashed in bytes as a big-endian `u64`.
//! That is 108 bytes for SHA-256 and 204 for SHA-384 and SHA-512. We write exactly that, and on reading accept any bytes after the pending
//! ones, as Go does (older Go versions left stale bytes there).
//!
//! Only the compression function comes from the `sha2` crate; buffering, padding and the state
//! live here, because `sha2` keeps its state private and a resumable upload needs it in the open.

use crate::error::{Error, Result};

/// What differs between the SHA-2 variants: word size, block size, constants and the compression
/// function. Everything else is shared by [`Sha2`].
pub trait Variant {
    /// A chaining-value word: `u32` or `u64`.
    type Word: Copy + Eq + std::fmt::Debug;
    /// The algorithm's name as the OCI and hashlib spell it.
    const NAME: &'static str;
    /// Bytes per compressed block.
    const BLOCK: usize;
    /// Bytes in the digest.
    const OUTPUT: usize;
    /// Bytes of the message bit length appended in the padding.
    const LEN_FIELD: usize;
    /// The magic that starts a marshalled state in Go.
    const MAGIC: [u8; 4];
    /// The initial chaining values.
    const IV: [Self::Word; 8];
    /// The largest length in bytes a message may have (its bit length must fit the length field
    /// Go uses). A state claiming more cannot have been produced by a hasher.
    const MAX_LEN: u64;
    /// Compresses whole blocks into `h`. `blocks.len()` is a multiple of `BLOCK`.
    fn compress(h: &mut [Self::Word; 8], blocks: &[u8]);
    /// Appends a word big-endian.
    fn put_word(word: Self::Word, out: &mut Vec<u8>);
    /// Reads a big-endian word from the start of `bytes`.
    fn get_word(bytes: &[u8]) -> Self::Word;
}

/// The SHA-256 parameters.
#[derive(Debug, Clone, Copy)]
pub enum Sha256Variant {}

/// The SHA-384 parameters: SHA-512's function with other initial values, truncated to 48 bytes.
#[derive(Debug, Clone, Copy)]
pub enum Sha384Variant {}

/// The SHA-512 parameters.
#[derive(Debug, Clone, Copy)]
pub enum Sha512Variant {}

impl Variant for Sha256Variant {
    type Word = u32;
    const NAME: &'static str = "sha256";
    const BLOCK: usize = 64;
    const OUTPUT: usize = 32;
    const LEN_FIELD: usize = 8;
    const MAGIC: [u8; 4] = *b"sha\x03";
    const IV: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    const MAX_LEN: u64 = (1 << 61) - 1;

    fn compress(h: &mut [u32; 8], blocks: &[u8]) {
        let (blocks, rest) = blocks.as_chunks::<64>();
        debug_assert!(rest.is_empty());
        ::sha2::block_api::compress256(h, blocks);
    }
    fn put_word(word: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&word.to_be_bytes());
    }
    fn get_word(bytes: &[u8]) -> u32 {
        u32::from_be_bytes(bytes[..4].try_into().expect("four bytes"))
    }
}

impl Variant for Sha384Variant {
    type Word = u64;
    const NAME: &'static str = "sha384";
    const BLOCK: usize = 128;
    const OUTPUT: usize = 48;
    const LEN_FIELD: usize = 16;
    const MAGIC: [u8; 4] = *b"sha\x04";
    const IV: [u64; 8] = [
        0xcbbb9d5dc1059ed8,
        0x629a292a367cd507,
        0x9159015a3070dd17,
        0x152fecd8f70e5939,
        0x67332667ffc00b31,
        0x8eb44a8768581511,
        0xdb0c2e0d64f98fa7,
        0x47b5481dbefa4fa4,
    ];
    const MAX_LEN: u64 = u64::MAX;

    fn compress(h: &mut [u64; 8], blocks: &[u8]) {
        Sha512Variant::compress(h, blocks);
    }
    fn put_word(word: u64, out: &mut Vec<u8>) {
        Sha512Variant::put_word(word, out);
    }
    fn get_word(bytes: &[u8]) -> u64 {
        Sha512Variant::get_word(bytes)
    }
}

impl Variant for Sha512Variant {
    type Word = u64;
    const NAME: &'static str = "sha512";
    const BLOCK: usize = 128;
    const OUTPUT: usize = 64;
    const LEN_FIELD: usize = 16;
    const MAGIC: [u8; 4] = *b"sha\x07";
    const IV: [u64; 8] = [
        0x6a09e667f3bcc908,
        0xbb67ae8584caa73b,
        0x3c6ef372fe94f82b,
        0xa54ff53a5f1d36f1,
        0x510e527fade682d1,
        0x9b05688c2b3e6c1f,
        0x1f83d9abfb41bd6b,
        0x5be0cd19137e2179,
    ];
    // Go counts bytes in a u64, and SHA-512's 128-bit length field holds any such count.
    const MAX_LEN: u64 = u64::MAX;

    fn compress(h: &mut [u64; 8], blocks: &[u8]) {
        let (blocks, rest) = blocks.as_chunks::<128>();
        debug_assert!(rest.is_empty());
        ::sha2::block_api::compress512(h, blocks);
    }
    fn put_word(word: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&word.to_be_bytes());
    }
    fn get_word(bytes: &[u8]) -> u64 {
        u64::from_be_bytes(bytes[..8].try_into().expect("eight bytes"))
    }
}

/// The largest block of any variant; the buffer is sized for it so [`Sha2`] needs no const
/// generics.
const MAX_BLOCK: usize = 128;

/// A streaming SHA-2 hasher with an open, serialisable state.
#[derive(Clone)]
pub struct Sha2<V: Variant> {
    h: [V::Word; 8],
    /// Pending bytes of the current block: the first `len % BLOCK` are live.
    buf: [u8; MAX_BLOCK],
    /// Total bytes hashed.
    len: u64,
}

/// Streaming SHA-256.
pub type Sha256 = Sha2<Sha256Variant>;
/// Streaming SHA-384.
pub type Sha384 = Sha2<Sha384Variant>;
/// Streaming SHA-512.
pub type Sha512 = Sha2<Sha512Variant>;

impl<V: Variant> Default for Sha2<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Variant> std::fmt::Debug for Sha2<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(V::NAME).field("len", &self.len).finish()
    }
}

impl<V: Variant> Sha2<V> {
    /// Size in bytes of a state in Go's format.
    pub const MARSHALED_SIZE: usize = 4 + 8 * std::mem::size_of::<V::Word>() + V::BLOCK + 8;

    /// A hasher that has hashed nothing.
    pub fn new() -> Self {
        Sha2 {
            h: V::IV,
            buf: [0; MAX_BLOCK],
            len: 0,
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn pending(&self) -> usize {
        (self.len % V::BLOCK as u64) as usize
    }

    /// Hashes `data`. Whole blocks go to the compression function straight from `data`; only a
    /// partial block at either end is copied into the buffer.
    pub fn update(&mut self, mut data: &[u8]) {
        let mut nx = self.pending();
        self.len = self.len.wrapping_add(data.len() as u64);
        if nx > 0 {
            let take = (V::BLOCK - nx).min(data.len());
            self.buf[nx..nx + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            nx += take;
            if nx < V::BLOCK {
                return;
            }
            V::compress(&mut self.h, &self.buf[..V::BLOCK]);
        }
        let whole = data.len() - data.len() % V::BLOCK;
        if whole > 0 {
            V::compress(&mut self.h, &data[..whole]);
        }
        let rest = &data[whole..];
        self.buf[..rest.len()].copy_from_slice(rest);
    }

    /// The digest of everything hashed so far. The hasher itself is not changed, so hashing can
    /// go on afterwards.
    pub fn finalize(&self) -> Vec<u8> {
        let mut h = self.h;
        let nx = self.pending();
        // The padding: 0x80, zeros up to the length field, the bit length big-endian. It spans
        // one block, or two when the pending bytes leave no room for the length field.
        let mut tail = [0u8; 2 * MAX_BLOCK];
        tail[..nx].copy_from_slice(&self.buf[..nx]);
        tail[nx] = 0x80;
        let total = if nx + 1 + V::LEN_FIELD <= V::BLOCK {
            V::BLOCK
        } else {
            2 * V::BLOCK
        };
        let bits = (self.len as u128) << 3;
        let bits = bits.to_be_bytes();
        tail[total - V::LEN_FIELD..total].copy_from_slice(&bits[16 - V::LEN_FIELD..]);
        V::compress(&mut h, &tail[..total]);
        let mut out = Vec::with_capacity(32 + V::OUTPUT);
        for word in h {
            V::put_word(word, &mut out);
        }
        out.truncate(V::OUTPUT);
        out
    }

    /// The state in Go's `MarshalBinary` format, byte for byte.
    pub fn marshal(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::MARSHALED_SIZE);
        out.extend_from_slice(&V::MAGIC);
        for word in self.h {
            V::put_word(word, &mut out);
        }
        let nx = self.pending();
        out.extend_from_slice(&self.buf[..nx]);
        out.resize(out.len() + V::BLOCK - nx, 0);
        out.extend_from_slice(&self.len.to_be_bytes());
        debug_assert_eq!(out.len(), Self::MARSHALED_SIZE);
        out
    }

    /// Restores a state written by [`Sha2::marshal`] or by Go's `MarshalBinary`.
    ///
    /// Refuses a wrong magic (another variant's state), a wrong size, a length no message can
    /// have, and chaining values that differ from the initial ones although no block was hashed:
    /// each would otherwise yield a wrong digest with no error.
    pub fn unmarshal(state: &[u8]) -> Result<Self> {
        let bad = |why: String| Err(Error::HashState(format!("{} state: {why}", V::NAME)));
        if state.len() < 4 || state[..4] != V::MAGIC {
            let found = &state[..state.len().min(4)];
            return bad(format!(
                "wrong identifier {found:02x?}, expected {:02x?}",
                V::MAGIC
            ));
        }
        if state.len() != Self::MARSHALED_SIZE {
            return bad(format!(
                "{} bytes, expected {}",
                state.len(),
                Self::MARSHALED_SIZE
            ));
        }
        let word = std::mem::size_of::<V::Word>();
        let mut h = V::IV;
        for (i, slot) in h.iter_mut().enumerate() {
            *slot = V::get_word(&state[4 + i * word..]);
        }
        let buf_at = 4 + 8 * word;
        let len_at = buf_at + V::BLOCK;
        let len = u64::from_be_bytes(state[len_at..len_at + 8].try_into().expect("eight bytes"));
        if len > V::MAX_LEN {
            return bad(format!("length {len} exceeds the largest message"));
        }
        if len < V::BLOCK as u64 && h != V::IV {
            return bad(format!(
                "length {len} is less than a block but the chaining values are not the initial ones"
            ));
        }
        let mut buf = [0u8; MAX_BLOCK];
        buf[..V::BLOCK].copy_from_slice(&state[buf_at..len_at]);
        Ok(Sha2 { h, buf, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex_of(data: &[u8]) -> String {
        hex::encode(data)
    }

    #[test]
    fn nist_sha256_vectors() {
        let cases: [(&[u8], &str); 3] = [
            (
                b"",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            (
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
        ];
        for (input, want) in cases {
            let mut h = Sha256::new();
            h.update(input);
            assert_eq!(hex_of(&h.finalize()), want);
        }
    }

    #[test]
    fn nist_million_a() {
        let data = vec![b'a'; 1_000_000];
        let mut h256 = Sha256::new();
        let mut h512 = Sha512::new();
        for chunk in data.chunks(7919) {
            h256.update(chunk);
            h512.update(chunk);
        }
        assert_eq!(
            hex_of(&h256.finalize()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
        assert_eq!(
            hex_of(&h512.finalize()),
            "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973eb\
             de0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b"
        );
    }

    #[test]
    fn nist_sha512_abc() {
        let mut h = Sha512::new();
        h.update(b"abc");
        assert_eq!(
            hex_of(&h.finalize()),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn nist_sha384_vectors() {
        let cases: [(&[u8], &str); 2] = [
            (
                b"abc",
                "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded163\
                 1a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
            ),
            (
                b"",
                "38b060a751ac96384cd9327eb1b1e36a21fdb71114be0743\
                 4c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b",
            ),
        ];
        for (input, want) in cases {
            let mut h = Sha384::new();
            h.update(input);
            assert_eq!(hex_of(&h.finalize()), want);
        }
        let state = Sha384::new().marshal();
        assert_eq!(state.len(), 204);
        assert_eq!(&state[..4], b"sha\x04");
        assert!(Sha512::unmarshal(&state).is_err());
        assert!(Sha384::unmarshal(&Sha512::new().marshal()).is_err());
    }

    #[test]
    fn fresh_state_is_magic_iv_zeros_and_zero_length() {
        let state = Sha256::new().marshal();
        assert_eq!(state.len(), 108);
        assert_eq!(&state[..4], b"sha\x03");
        assert_eq!(&state[4..8], &0x6a09e667u32.to_be_bytes());
        assert!(state[36..].iter().all(|&b| b == 0));
        assert_eq!(Sha512::new().marshal().len(), 204);
    }

    #[test]
    fn marshal_zeroes_bytes_after_the_pending_ones() {
        let mut h = Sha256::new();
        h.update(&[0xff; 70]);
        let state = h.marshal();
        // 70 % 64 = 6 pending bytes, then 58 zeros, although the buffer held 0xff there.
        assert_eq!(&state[36..42], &[0xff; 6]);
        assert!(state[42..100].iter().all(|&b| b == 0));
    }

    #[test]
    fn unmarshal_accepts_stale_bytes_after_the_pending_ones() {
        let mut h = Sha256::new();
        h.update(&[7; 70]);
        let mut state = h.marshal();
        state[50] = 0xaa;
        let restored = Sha256::unmarshal(&state).unwrap();
        assert_eq!(restored.finalize(), h.finalize());
    }

    #[test]
    fn unmarshal_refuses_bad_states() {
        let good = Sha256::new().marshal();
        let mut wrong_magic = good.clone();
        wrong_magic[3] = 0x02;
        assert!(Sha256::unmarshal(&wrong_magic).is_err());
        assert!(Sha256::unmarshal(&good[..107]).is_err());
        assert!(Sha256::unmarshal(b"").is_err());
        assert!(Sha512::unmarshal(&good).is_err());
        let mut too_long = good.clone();
        too_long[100..].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(Sha256::unmarshal(&too_long).is_err());
        let mut not_iv = good;
        not_iv[4] ^= 1;
        assert!(matches!(
            Sha256::unmarshal(&not_iv),
            Err(Error::HashState(_))
        ));
    }

    proptest! {
        #[test]
        fn any_split_and_restore_matches_one_shot(
            data in proptest::collection::vec(any::<u8>(), 0..1000),
            cut in 0usize..1000,
        ) {
            let cut = cut.min(data.len());
            let mut whole = Sha512::new();
            whole.update(&data);
            let mut first = Sha512::new();
            first.update(&data[..cut]);
            let mut resumed = Sha512::unmarshal(&first.marshal()).unwrap();
            resumed.update(&data[cut..]);
            prop_assert_eq!(resumed.finalize(), whole.finalize());

            let mut whole = Sha256::new();
            whole.update(&data);
            let mut first = Sha256::new();
            first.update(&data[..cut]);
            let mut resumed = Sha256::unmarshal(&first.marshal()).unwrap();
            resumed.update(&data[cut..]);
            prop_assert_eq!(resumed.finalize(), whole.finalize());
        }
    }

    proptest! {
        /// Hostile states: any bytes, Go's magic with any tail, a valid state with bytes
        /// overwritten. Unmarshal returns a state or an error, never panics; a state it accepts
        /// hashes on without panicking.
        #[test]
        fn unmarshal_never_panics(
            noise in proptest::collection::vec(any::<u8>(), 0..300),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            data in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            fn exercise<V: Variant>(state: &[u8], more: &[u8]) {
                if let Ok(mut h) = Sha2::<V>::unmarshal(state) {
                    h.update(more);
                    let _ = h.finalize();
                    let _ = h.marshal();
                }
            }
            let mut good = Sha256::new();
            good.update(&data);
            let mut edited = good.marshal();
            let mut good512 = Sha512::new();
            good512.update(&data);
            let mut edited512 = good512.marshal();
            for &(at, byte) in &edits {
                let n = edited.len();
                edited[at % n] = byte;
                let n = edited512.len();
                edited512[at % n] = byte;
            }
            let mut magic256 = b"sha\x03".to_vec();
            magic256.extend(&noise);
            let mut magic512 = b"sha\x07".to_vec();
            magic512.extend(&noise);
            for state in [&noise, &edited, &edited512, &magic256, &magic512] {
                exercise::<Sha256Variant>(state, &data);
                exercise::<Sha512Variant>(state, &data);
            }
        }
    }
}
