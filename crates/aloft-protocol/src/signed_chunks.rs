//! Signature-only payloads: plaintext chunks, each authenticated by a Merkle
//! proof to the root the release manifest signs (`chunk_root`).
//!
//! For devices too small to decrypt, and products whose data is not
//! sensitive. The manifest's release-key signatures, expiry, the directive's
//! device binding, nonce and expiry, and the security floor are checked
//! exactly as for an encrypted release; only the payload is not encrypted.
//!
//! Layout (also in `proto/aloft/v1/signed.proto`, `PayloadEncoding`): the
//! image is cut into `chunk_size` plaintext chunks (the last may be
//! shorter). Leaf `i` is `SHA-256(0x00 || chunk i)`; the tree has `depth =
//! ceil(log2(n))` levels (0 for one chunk), leaves past the last chunk are
//! 32 zero bytes, and an inner node is `SHA-256(0x01 || left || right)`.
//! Chunk `i` travels as its plaintext followed by its `depth` sibling
//! hashes, lowest level first; bit `k` of `i` is 1 when the level-`k`
//! sibling is on the left.
//!
//! Each chunk is checked on its own, in its place, before any byte of it is
//! released ([`ChunkVerifier::verify_next`]): a flipped byte, a chunk of
//! another release, a reordered, truncated or extended stream all fail at
//! the chunk where they happen. The proof needs no state beyond the root and
//! the index, so a download resumes at any chunk, and nothing on this path
//! allocates.

use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::limits::{MAX_CHUNK_SIZE, MAX_IMAGE_LEN, MIN_CHUNK_SIZE};
use crate::payload::PayloadParams;
use crate::pb;
use crate::types::Digest;

/// Bytes of one hash in a proof.
pub const HASH_LEN: usize = 32;

/// The padding leaf past the last chunk.
#[cfg(any(feature = "sign", test))]
const EMPTY: [u8; HASH_LEN] = [0; HASH_LEN];

/// Leaf hash of a chunk's plaintext: `SHA-256(0x00 || plaintext)`.
pub fn leaf(plaintext: &[u8]) -> [u8; HASH_LEN] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(plaintext);
    h.finalize().into()
}

/// Inner node: `SHA-256(0x01 || left || right)`.
fn node(left: &[u8; HASH_LEN], right: &[u8; HASH_LEN]) -> [u8; HASH_LEN] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The layout of one signature-only release's payload (from its verified
/// manifest). Arithmetic never overflows or panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedChunkParams {
    /// Plaintext image length.
    pub image_len: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// The Merkle root over the chunks (the manifest's `chunk_root`).
    pub root: Digest,
}

impl SignedChunkParams {
    /// Checks the layout against the limits (as [`PayloadParams::validate`]).
    pub fn validate(&self) -> Result<(), Error> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(Error::InvalidField("chunk size"));
        }
        if self.image_len == 0 {
            return Err(Error::InvalidField("image length"));
        }
        if self.image_len > MAX_IMAGE_LEN {
            return Err(Error::TooLarge("image length"));
        }
        Ok(())
    }

    /// Number of chunks (0 if `chunk_size` is 0).
    pub fn chunk_count(&self) -> u32 {
        if self.chunk_size == 0 {
            return 0;
        }
        let n = self.image_len.div_ceil(u64::from(self.chunk_size));
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Levels of the tree: `ceil(log2(chunk_count))`, 0 for one chunk.
    pub fn depth(&self) -> u32 {
        let n = self.chunk_count();
        if n <= 1 {
            0
        } else {
            u32::BITS - (n - 1).leading_zeros()
        }
    }

    /// Bytes of each chunk's proof.
    pub fn proof_len(&self) -> usize {
        self.depth() as usize * HASH_LEN
    }

    /// Plaintext length of chunk `index`, or `None` past the end.
    pub fn plaintext_len(&self, index: u32) -> Option<usize> {
        self.as_encrypted().plaintext_len(index)
    }

    /// Wire length (plaintext + proof) of chunk `index`, or `None` past the end.
    pub fn chunk_len(&self, index: u32) -> Option<usize> {
        self.plaintext_len(index).map(|n| n + self.proof_len())
    }

    /// Total wire length of the payload (saturating).
    pub fn payload_len(&self) -> u64 {
        let proofs = u64::from(self.chunk_count()).saturating_mul(self.proof_len() as u64);
        self.image_len.saturating_add(proofs)
    }

    /// Byte offset of chunk `index` in the concatenated payload; an index at
    /// or past the end gives [`Self::payload_len`].
    pub fn chunk_offset(&self, index: u32) -> u64 {
        if index >= self.chunk_count() {
            return self.payload_len();
        }
        u64::from(index) * (u64::from(self.chunk_size) + self.proof_len() as u64)
    }

    /// The same chunking as an encrypted layout (for the shared arithmetic).
    fn as_encrypted(&self) -> PayloadParams {
        PayloadParams {
            image_len: self.image_len,
            chunk_size: self.chunk_size,
            nonce_prefix: crate::NoncePrefix::from_bytes([0; crate::NoncePrefix::LEN]),
            image_digest: self.root,
        }
    }
}

/// Checks a signature-only release's chunks in order against the root,
/// without allocating.
#[derive(Debug)]
pub struct ChunkVerifier {
    params: SignedChunkParams,
    count: u32,
    depth: u32,
    next: u32,
}

impl ChunkVerifier {
    /// Starts at chunk `next` (0, or a resume point; `chunk_count()` is the
    /// finished state). Refuses a layout outside the limits.
    pub fn new(params: SignedChunkParams, next: u32) -> Result<Self, Error> {
        params.validate()?;
        let count = params.chunk_count();
        if next > count {
            return Err(Error::InvalidField("resume chunk index"));
        }
        Ok(Self {
            params,
            count,
            depth: params.depth(),
            next,
        })
    }

    /// Index of the chunk expected next.
    pub fn next_index(&self) -> u32 {
        self.next
    }

    /// True once the last chunk was accepted.
    pub fn is_finished(&self) -> bool {
        self.next == self.count
    }

    /// The layout this verifier follows.
    pub fn params(&self) -> &SignedChunkParams {
        &self.params
    }

    /// Checks the next chunk (plaintext then proof) against the root and
    /// returns its plaintext (a prefix of `chunk`). On failure nothing is
    /// returned and the verifier does not advance.
    ///
    /// Errors: [`Error::PayloadTooLong`] after the last chunk,
    /// [`Error::ChunkLength`] if `chunk` is not this index's wire length,
    /// [`Error::ChunkAuthentication`] if the proof does not lead to the
    /// root (tampered, reordered, or from another release).
    pub fn verify_next<'c>(&mut self, chunk: &'c [u8]) -> Result<&'c [u8], Error> {
        let index = self.next;
        if index >= self.count {
            return Err(Error::PayloadTooLong);
        }
        let expected = self.params.chunk_len(index).ok_or(Error::PayloadTooLong)?;
        if chunk.len() != expected {
            return Err(Error::ChunkLength { index });
        }
        let (plaintext, proof) = chunk.split_at(expected - self.params.proof_len());
        let mut acc = leaf(plaintext);
        for (level, sibling) in proof.chunks_exact(HASH_LEN).enumerate() {
            let sibling: &[u8; HASH_LEN] = sibling
                .try_into()
                .map_err(|_| Error::ChunkLength { index })?;
            acc = if (index >> level) & 1 == 1 {
                node(sibling, &acc)
            } else {
                node(&acc, sibling)
            };
        }
        debug_assert_eq!(proof.len(), self.depth as usize * HASH_LEN);
        if acc != *self.params.root.as_bytes() {
            return Err(Error::ChunkAuthentication { index });
        }
        self.next = index + 1;
        Ok(plaintext)
    }
}

/// How a verified manifest's payload is laid out on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadLayout {
    /// AES-256-GCM chunks ([`crate::payload`]).
    Encrypted(PayloadParams),
    /// Plaintext chunks with Merkle proofs (this module).
    SignatureOnly(SignedChunkParams),
}

impl PayloadLayout {
    /// The wire enum.
    pub fn encoding(&self) -> pb::PayloadEncoding {
        match self {
            Self::Encrypted(_) => pb::PayloadEncoding::Encrypted,
            Self::SignatureOnly(_) => pb::PayloadEncoding::SignatureOnly,
        }
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u32 {
        match self {
            Self::Encrypted(p) => p.chunk_count(),
            Self::SignatureOnly(p) => p.chunk_count(),
        }
    }

    /// Plaintext length of chunk `index`, or `None` past the end.
    pub fn plaintext_len(&self, index: u32) -> Option<usize> {
        match self {
            Self::Encrypted(p) => p.plaintext_len(index),
            Self::SignatureOnly(p) => p.plaintext_len(index),
        }
    }

    /// Wire length of chunk `index`, or `None` past the end.
    pub fn chunk_len(&self, index: u32) -> Option<usize> {
        match self {
            Self::Encrypted(p) => p.chunk_len(index),
            Self::SignatureOnly(p) => p.chunk_len(index),
        }
    }

    /// Total wire length of the payload.
    pub fn payload_len(&self) -> u64 {
        match self {
            Self::Encrypted(p) => p.payload_len(),
            Self::SignatureOnly(p) => p.payload_len(),
        }
    }

    /// Byte offset of chunk `index` in the concatenated payload.
    pub fn chunk_offset(&self, index: u32) -> u64 {
        match self {
            Self::Encrypted(p) => p.chunk_offset(index),
            Self::SignatureOnly(p) => p.chunk_offset(index),
        }
    }
}

/// Opens a release's chunks in order, whichever the encoding: decrypts an
/// encrypted one under its content key, proves a signature-only one under
/// its root. For servers and release tooling; the device core has its own,
/// so that a build without decryption links no AES-GCM.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum PayloadOpener {
    /// An encrypted release.
    Decrypt(crate::payload::ChunkDecryptor),
    /// A signature-only release.
    Verify(ChunkVerifier),
}

impl PayloadOpener {
    /// From chunk 0 of `layout`; `key` must be given exactly for an
    /// encrypted layout ([`Error::InvalidField`] otherwise).
    pub fn new(key: Option<&crate::ContentKey>, layout: &PayloadLayout) -> Result<Self, Error> {
        match (layout, key) {
            (PayloadLayout::Encrypted(p), Some(key)) => Ok(Self::Decrypt(
                crate::payload::ChunkDecryptor::new(key, *p, 0)?,
            )),
            (PayloadLayout::SignatureOnly(p), None) => Ok(Self::Verify(ChunkVerifier::new(*p, 0)?)),
            (PayloadLayout::Encrypted(_), None) => Err(Error::InvalidField(
                "content key (missing for an encrypted release)",
            )),
            (PayloadLayout::SignatureOnly(_), Some(_)) => Err(Error::InvalidField(
                "content key (given for a signature-only release)",
            )),
        }
    }

    /// Opens the next chunk (in place for an encrypted one) and returns its
    /// plaintext, a prefix of `chunk`.
    pub fn open<'c>(&mut self, chunk: &'c mut [u8]) -> Result<&'c [u8], Error> {
        match self {
            Self::Decrypt(d) => d.decrypt_next(chunk),
            Self::Verify(v) => v.verify_next(chunk),
        }
    }

    /// Index of the chunk expected next.
    pub fn next_index(&self) -> u32 {
        match self {
            Self::Decrypt(d) => d.next_index(),
            Self::Verify(v) => v.next_index(),
        }
    }

    /// True once the last chunk was opened.
    pub fn is_finished(&self) -> bool {
        match self {
            Self::Decrypt(d) => d.is_finished(),
            Self::Verify(v) => v.is_finished(),
        }
    }
}

/// Builds a signature-only payload for `image` (release tooling): returns
/// the root to sign into the manifest and the wire payload (every chunk
/// followed by its proof).
///
/// Refuses a layout outside the limits.
#[cfg(feature = "sign")]
pub fn build_payload(
    image: &[u8],
    chunk_size: u32,
) -> Result<(Digest, alloc::vec::Vec<u8>), Error> {
    use alloc::vec::Vec;

    let probe = SignedChunkParams {
        image_len: image.len() as u64,
        chunk_size,
        root: Digest::from_bytes(EMPTY),
    };
    probe.validate()?;
    let count = probe.chunk_count() as usize;
    let depth = probe.depth();
    let width = 1usize << depth;
    // levels[0] = leaves (padded), levels[depth] = [root].
    let mut levels: Vec<Vec<[u8; HASH_LEN]>> = Vec::with_capacity(depth as usize + 1);
    let mut leaves: Vec<[u8; HASH_LEN]> = image.chunks(chunk_size as usize).map(leaf).collect();
    leaves.resize(width, EMPTY);
    levels.push(leaves);
    for _ in 0..depth {
        let below = levels.last().expect("at least the leaves");
        let up = below.chunks_exact(2).map(|p| node(&p[0], &p[1])).collect();
        levels.push(up);
    }
    let root = Digest::from_bytes(levels[depth as usize][0]);
    let params = SignedChunkParams { root, ..probe };
    let total =
        usize::try_from(params.payload_len()).map_err(|_| Error::TooLarge("image length"))?;
    let mut out = Vec::with_capacity(total);
    for (i, plaintext) in image.chunks(chunk_size as usize).enumerate() {
        out.extend_from_slice(plaintext);
        let mut at = i;
        for level in levels.iter().take(depth as usize) {
            out.extend_from_slice(&level[at ^ 1]);
            at >>= 1;
        }
    }
    debug_assert_eq!(out.len(), total);
    debug_assert_eq!(count, image.len().div_ceil(chunk_size as usize));
    Ok((root, out))
}

#[cfg(all(test, feature = "sign"))]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    /// Bytes without a period, so no two chunks are equal.
    fn image(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect()
    }

    fn chunks(params: &SignedChunkParams, payload: &[u8]) -> Vec<Vec<u8>> {
        (0..params.chunk_count())
            .map(|i| {
                let at = params.chunk_offset(i) as usize;
                payload[at..at + params.chunk_len(i).unwrap()].to_vec()
            })
            .collect()
    }

    fn layout(img: &[u8], chunk_size: u32) -> (SignedChunkParams, Vec<u8>) {
        let (root, payload) = build_payload(img, chunk_size).unwrap();
        let params = SignedChunkParams {
            image_len: img.len() as u64,
            chunk_size,
            root,
        };
        assert_eq!(payload.len() as u64, params.payload_len());
        (params, payload)
    }

    #[test]
    fn depth_is_the_ceiling_of_log2() {
        for (n, depth) in [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4)] {
            let p = SignedChunkParams {
                image_len: n * 256,
                chunk_size: 256,
                root: Digest::from_bytes(EMPTY),
            };
            assert_eq!(p.depth(), depth, "{n} chunks");
        }
    }

    #[test]
    fn every_chunk_verifies_in_order_for_many_shapes() {
        for len in [1, 255, 256, 257, 1000, 256 * 5, 256 * 8 + 1] {
            let img = image(len);
            let (params, payload) = layout(&img, 256);
            let mut v = ChunkVerifier::new(params, 0).unwrap();
            let mut out = Vec::new();
            for c in chunks(&params, &payload) {
                out.extend_from_slice(v.verify_next(&c).unwrap());
            }
            assert!(v.is_finished());
            assert_eq!(out, img, "len {len}");
        }
    }

    #[test]
    fn a_resume_verifies_from_any_chunk() {
        let img = image(256 * 6 + 10);
        let (params, payload) = layout(&img, 256);
        let all = chunks(&params, &payload);
        for start in 0..params.chunk_count() {
            let mut v = ChunkVerifier::new(params, start).unwrap();
            for c in &all[start as usize..] {
                v.verify_next(c).unwrap();
            }
            assert!(v.is_finished());
        }
    }

    #[test]
    fn tampering_reordering_and_substitution_fail_at_the_chunk() {
        let img = image(256 * 5);
        let (params, payload) = layout(&img, 256);
        let all = chunks(&params, &payload);
        // A flipped byte in the plaintext or in the proof.
        for at in [0, 100, 255, 256, 256 + 31, 256 + 95] {
            let mut c = all[1].clone();
            c[at] ^= 1;
            let mut v = ChunkVerifier::new(params, 1).unwrap();
            assert_eq!(
                v.verify_next(&c),
                Err(Error::ChunkAuthentication { index: 1 })
            );
            assert_eq!(v.next_index(), 1, "no advance after a refusal");
        }
        // Chunk 2 where 1 is due (same length).
        let mut v = ChunkVerifier::new(params, 1).unwrap();
        assert_eq!(
            v.verify_next(&all[2]),
            Err(Error::ChunkAuthentication { index: 1 })
        );
        // The same chunk of another release.
        let mut other = img.clone();
        other[300] ^= 1;
        let (_, other_payload) = layout(&other, 256);
        let foreign = chunks(&params, &other_payload);
        let mut v = ChunkVerifier::new(params, 0).unwrap();
        v.verify_next(&all[0]).unwrap();
        assert_eq!(
            v.verify_next(&foreign[1]),
            Err(Error::ChunkAuthentication { index: 1 })
        );
    }

    #[test]
    fn wrong_lengths_and_extension_are_refused() {
        let img = image(256 * 3 + 5);
        let (params, payload) = layout(&img, 256);
        let all = chunks(&params, &payload);
        let mut v = ChunkVerifier::new(params, 0).unwrap();
        assert_eq!(
            v.verify_next(&all[0][..all[0].len() - 1]),
            Err(Error::ChunkLength { index: 0 })
        );
        for c in &all {
            v.verify_next(c).unwrap();
        }
        assert_eq!(v.verify_next(&all[0]), Err(Error::PayloadTooLong));
        assert!(ChunkVerifier::new(params, params.chunk_count() + 1).is_err());
    }

    #[test]
    fn a_truncated_last_chunk_does_not_verify() {
        // The short last chunk padded to full length is not the last chunk.
        let img = image(256 * 2 + 10);
        let (params, payload) = layout(&img, 256);
        let last = chunks(&params, &payload).pop().unwrap();
        let (plain, proof) = last.split_at(10);
        let mut forged = plain[..9].to_vec();
        forged.push(0);
        forged.extend_from_slice(proof);
        let mut v = ChunkVerifier::new(params, 2).unwrap();
        assert_eq!(
            v.verify_next(&forged),
            Err(Error::ChunkAuthentication { index: 2 })
        );
    }
}
