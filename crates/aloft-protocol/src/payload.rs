//! The encrypted payload: AES-256-GCM in independently authenticated chunks.
//!
//! Chunk `i` of `n` is encrypted under the release content key with nonce
//! `nonce_prefix (7) || i as u32 big-endian (4) || last (1)` where `last` is 1
//! only for chunk `n - 1`, and associated data = the manifest's plaintext image
//! digest. Reordering, truncation, extension and substitution (also from
//! another release) are each caught chunk by chunk, before any plaintext is
//! released. On the wire a chunk is its ciphertext followed by its 16-byte tag.

use crate::types::{ContentKey, Digest, NoncePrefix};
use crate::Error;

/// Bytes of the AES-GCM tag after each chunk's ciphertext.
pub const TAG_LEN: usize = 16;

/// The layout of one release's payload (from its verified manifest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadParams {
    /// Plaintext image length.
    pub image_len: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Nonce prefix.
    pub nonce_prefix: NoncePrefix,
    /// Plaintext image digest (bound into every chunk as associated data).
    pub image_digest: Digest,
}

impl PayloadParams {
    /// Number of chunks.
    pub fn chunk_count(&self) -> u32 {
        todo!()
    }

    /// Plaintext length of chunk `index`, or `None` past the end.
    pub fn plaintext_len(&self, index: u32) -> Option<usize> {
        let _ = index;
        todo!()
    }

    /// Wire length (ciphertext + tag) of chunk `index`, or `None` past the end.
    pub fn chunk_len(&self, index: u32) -> Option<usize> {
        self.plaintext_len(index).map(|n| n + TAG_LEN)
    }

    /// Total wire length of the payload.
    pub fn payload_len(&self) -> u64 {
        todo!()
    }

    /// Byte offset of chunk `index` in the concatenated payload.
    pub fn chunk_offset(&self, index: u32) -> u64 {
        let _ = index;
        todo!()
    }
}

/// Decrypts a release's chunks in order, in place, without allocating.
pub struct ChunkDecryptor {
    _private: (),
}

impl ChunkDecryptor {
    /// Starts at chunk `next` (0 for a fresh download, or a resume point).
    pub fn new(key: &ContentKey, params: PayloadParams, next: u32) -> Result<Self, Error> {
        let _ = (key, params, next);
        todo!()
    }

    /// Index of the chunk expected next.
    pub fn next_index(&self) -> u32 {
        todo!()
    }

    /// True once the last chunk was accepted.
    pub fn is_finished(&self) -> bool {
        todo!()
    }

    /// Authenticates and decrypts the next chunk in place. `chunk` holds the
    /// ciphertext followed by its tag; on success the returned slice (a prefix
    /// of `chunk`) is the plaintext. On failure nothing is returned and the
    /// decryptor does not advance, and `chunk`'s contents are unspecified.
    pub fn decrypt_next<'c>(&mut self, chunk: &'c mut [u8]) -> Result<&'c [u8], Error> {
        let _ = chunk;
        todo!()
    }
}

/// Encrypts chunk `index` in place: `buf` holds the plaintext followed by
/// `TAG_LEN` spare bytes, which receive the tag.
#[cfg(feature = "sign")]
pub fn encrypt_chunk(
    key: &ContentKey,
    params: &PayloadParams,
    index: u32,
    buf: &mut [u8],
) -> Result<(), Error> {
    let _ = (key, params, index, buf);
    todo!()
}

/// Encrypts a whole image into its wire payload (release tooling).
#[cfg(feature = "sign")]
pub fn encrypt_payload(
    key: &ContentKey,
    params: &PayloadParams,
    image: &[u8],
) -> Result<alloc::vec::Vec<u8>, Error> {
    let _ = (key, params, image);
    todo!()
}
