//! The encrypted payload: AES-256-GCM in independently authenticated chunks.
//!
//! Chunk `i` of `n` is encrypted under the release content key with nonce
//! `nonce_prefix (7) || i as u32 big-endian (4) || last (1)` where `last` is 1
//! only for chunk `n - 1`, and associated data = the manifest's plaintext image
//! digest. Reordering, truncation, extension and substitution (also from
//! another release) are each caught chunk by chunk, before any plaintext is
//! released. On the wire a chunk is its ciphertext followed by its 16-byte tag.
//!
//! Decryption ([`ChunkDecryptor`]) works in place in the caller's buffer and
//! never allocates: it is on the device's per-chunk data path.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{self, AeadInOut, KeyInit};

use crate::Error;
use crate::limits::{MAX_CHUNK_SIZE, MAX_IMAGE_LEN, MIN_CHUNK_SIZE};
use crate::types::{ContentKey, Digest, NoncePrefix};

/// Bytes of the AES-GCM tag after each chunk's ciphertext.
pub const TAG_LEN: usize = 16;

/// Bytes of an AES-GCM nonce.
pub(crate) const NONCE_LEN: usize = 12;

/// The layout of one release's payload (from its verified manifest).
///
/// The arithmetic methods never overflow or panic, whatever the field values;
/// [`PayloadParams::validate`] says whether the values are within the
/// [`crate::limits`] that the decryptor and encryptor require.
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
    /// Checks the layout against the limits: `image_len` in
    /// `1..=MAX_IMAGE_LEN`, `chunk_size` in `MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE`.
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

    /// Number of chunks: 0 if `chunk_size` is 0; saturates at `u32::MAX` for
    /// layouts far past the limits.
    pub fn chunk_count(&self) -> u32 {
        if self.chunk_size == 0 {
            return 0;
        }
        let n = self.image_len.div_ceil(u64::from(self.chunk_size));
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Plaintext length of chunk `index`, or `None` past the end.
    pub fn plaintext_len(&self, index: u32) -> Option<usize> {
        if index >= self.chunk_count() {
            return None;
        }
        let size = u64::from(self.chunk_size);
        // index < chunk_count, so start < image_len and nothing overflows.
        let start = u64::from(index) * size;
        let len = (self.image_len - start).min(size);
        usize::try_from(len).ok()
    }

    /// Wire length (ciphertext + tag) of chunk `index`, or `None` past the end.
    pub fn chunk_len(&self, index: u32) -> Option<usize> {
        self.plaintext_len(index).map(|n| n + TAG_LEN)
    }

    /// Total wire length of the payload (saturating).
    pub fn payload_len(&self) -> u64 {
        let tags = u64::from(self.chunk_count()) * TAG_LEN as u64;
        self.image_len.saturating_add(tags)
    }

    /// Byte offset of chunk `index` in the concatenated payload; an index at
    /// or past the end gives [`Self::payload_len`].
    pub fn chunk_offset(&self, index: u32) -> u64 {
        if index >= self.chunk_count() {
            return self.payload_len();
        }
        // Both factors fit in 33 bits, so the product fits in a u64.
        u64::from(index) * (u64::from(self.chunk_size) + TAG_LEN as u64)
    }

    /// The AES-GCM nonce of chunk `index`.
    fn nonce(&self, index: u32) -> [u8; NONCE_LEN] {
        let last = index.checked_add(1) == Some(self.chunk_count());
        chunk_nonce(&self.nonce_prefix, index, last)
    }
}

/// `prefix (7) || index big-endian (4) || last (1)`.
fn chunk_nonce(prefix: &NoncePrefix, index: u32, last: bool) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..NoncePrefix::LEN].copy_from_slice(prefix.as_bytes());
    nonce[NoncePrefix::LEN..NONCE_LEN - 1].copy_from_slice(&index.to_be_bytes());
    nonce[NONCE_LEN - 1] = u8::from(last);
    nonce
}

/// An AES-256-GCM instance (key schedule and GHASH key computed once).
pub(crate) fn gcm(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(&(*key).into())
}

/// Encrypts `buf` in place and returns the detached tag. Fails only if the
/// message or associated data exceed AES-GCM's limits.
#[cfg(any(feature = "sign", test))]
pub(crate) fn gcm_seal(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN], aead::Error> {
    let tag = cipher.encrypt_inout_detached(&(*nonce).into(), aad, buf.into())?;
    Ok(tag.into())
}

/// Authenticates `buf` against `tag` and, only if it verifies, decrypts it in
/// place. Allocates nothing.
pub(crate) fn gcm_open(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), aead::Error> {
    cipher.decrypt_inout_detached(&(*nonce).into(), aad, buf.into(), &(*tag).into())
}

/// Decrypts a release's chunks in order, in place, without allocating.
pub struct ChunkDecryptor {
    cipher: Aes256Gcm,
    params: PayloadParams,
    count: u32,
    next: u32,
}

impl ChunkDecryptor {
    /// Starts at chunk `next` (0 for a fresh download, or a resume point).
    ///
    /// Refuses a layout outside the limits ([`PayloadParams::validate`]) and
    /// a resume point past the last chunk (`next == chunk_count()` is the
    /// finished state).
    pub fn new(key: &ContentKey, params: PayloadParams, next: u32) -> Result<Self, Error> {
        params.validate()?;
        let count = params.chunk_count();
        if next > count {
            return Err(Error::InvalidField("resume chunk index"));
        }
        Ok(Self {
            cipher: gcm(key.expose()),
            params,
            count,
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

    /// The layout this decryptor follows.
    pub fn params(&self) -> &PayloadParams {
        &self.params
    }

    /// Authenticates and decrypts the next chunk in place. `chunk` holds the
    /// ciphertext followed by its tag; on success the returned slice (a prefix
    /// of `chunk`) is the plaintext. On failure nothing is returned and the
    /// decryptor does not advance, and `chunk`'s contents are unspecified.
    ///
    /// Errors: [`Error::PayloadTooLong`] after the last chunk,
    /// [`Error::ChunkLength`] if `chunk` is not exactly this index's wire
    /// length, [`Error::ChunkAuthentication`] if the tag does not verify
    /// (tampered, reordered, truncated, or from another key or release).
    pub fn decrypt_next<'c>(&mut self, chunk: &'c mut [u8]) -> Result<&'c [u8], Error> {
        let index = self.next;
        if index >= self.count {
            return Err(Error::PayloadTooLong);
        }
        let expected = self.params.chunk_len(index).ok_or(Error::PayloadTooLong)?;
        if chunk.len() != expected {
            return Err(Error::ChunkLength { index });
        }
        let plaintext_len = expected - TAG_LEN;
        let (body, tag) = chunk.split_at_mut(plaintext_len);
        let tag: &[u8; TAG_LEN] = (&*tag)
            .try_into()
            .map_err(|_| Error::ChunkLength { index })?;
        gcm_open(
            &self.cipher,
            &self.params.nonce(index),
            self.params.image_digest.as_bytes(),
            body,
            tag,
        )
        .map_err(|_| Error::ChunkAuthentication { index })?;
        self.next = index + 1;
        Ok(&chunk[..plaintext_len])
    }
}

impl core::fmt::Debug for ChunkDecryptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChunkDecryptor")
            .field("params", &self.params)
            .field("next", &self.next)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// Encrypts chunk `index` with an already keyed cipher.
#[cfg(feature = "sign")]
fn encrypt_chunk_with(
    cipher: &Aes256Gcm,
    params: &PayloadParams,
    index: u32,
    buf: &mut [u8],
) -> Result<(), Error> {
    let plaintext_len = params.plaintext_len(index).ok_or(Error::PayloadTooLong)?;
    if buf.len() != plaintext_len + TAG_LEN {
        return Err(Error::ChunkLength { index });
    }
    let (body, tag_out) = buf.split_at_mut(plaintext_len);
    let tag = gcm_seal(
        cipher,
        &params.nonce(index),
        params.image_digest.as_bytes(),
        body,
    )
    .map_err(|_| Error::TooLarge("payload chunk"))?;
    tag_out.copy_from_slice(&tag);
    Ok(())
}

/// Encrypts chunk `index` in place: `buf` holds the plaintext followed by
/// `TAG_LEN` spare bytes, which receive the tag.
///
/// Refuses a layout outside the limits, an index past the last chunk
/// ([`Error::PayloadTooLong`]) and a buffer of the wrong length
/// ([`Error::ChunkLength`]).
#[cfg(feature = "sign")]
pub fn encrypt_chunk(
    key: &ContentKey,
    params: &PayloadParams,
    index: u32,
    buf: &mut [u8],
) -> Result<(), Error> {
    params.validate()?;
    encrypt_chunk_with(&gcm(key.expose()), params, index, buf)
}

/// Encrypts a whole image into its wire payload (release tooling).
///
/// Refuses a layout outside the limits, and an image whose length or SHA-256
/// does not match `params` (which would make a payload no device accepts).
#[cfg(feature = "sign")]
pub fn encrypt_payload(
    key: &ContentKey,
    params: &PayloadParams,
    image: &[u8],
) -> Result<alloc::vec::Vec<u8>, Error> {
    params.validate()?;
    if u64::try_from(image.len()).ok() != Some(params.image_len) {
        return Err(Error::InvalidField("image length"));
    }
    if Digest::of(image) != params.image_digest {
        return Err(Error::InvalidField("image digest"));
    }
    let total =
        usize::try_from(params.payload_len()).map_err(|_| Error::TooLarge("image length"))?;
    let cipher = gcm(key.expose());
    let mut out = alloc::vec::Vec::with_capacity(total);
    let mut rest = image;
    for index in 0..params.chunk_count() {
        let n = params.plaintext_len(index).ok_or(Error::PayloadTooLong)?;
        let (plaintext, tail) = rest.split_at(n);
        rest = tail;
        let start = out.len();
        out.extend_from_slice(plaintext);
        out.extend_from_slice(&[0u8; TAG_LEN]);
        encrypt_chunk_with(&cipher, params, index, &mut out[start..])?;
    }
    debug_assert_eq!(out.len(), total);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// AES-256-GCM known answer: Test Case 16 of McGrew & Viega, "The
    /// Galois/Counter Mode of Operation (GCM)", revised 2005, Appendix B
    /// (256-bit key, 96-bit IV, 60-byte plaintext, 20-byte AAD). Run through
    /// the same seal/open helpers the payload and the key wrap use.
    #[test]
    fn aes_256_gcm_matches_gcm_spec_test_case_16() {
        let key: [u8; 32] =
            unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let nonce: [u8; 12] = unhex("cafebabefacedbaddecaf888");
        let aad: [u8; 20] = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let plaintext: [u8; 60] = unhex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let ciphertext: [u8; 60] = unhex(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        );
        let tag: [u8; 16] = unhex("76fc6ece0f4e1768cddf8853bb2d551b");

        let cipher = gcm(&key);
        let mut buf = plaintext;
        assert_eq!(gcm_seal(&cipher, &nonce, &aad, &mut buf).unwrap(), tag);
        assert_eq!(buf, ciphertext);

        gcm_open(&cipher, &nonce, &aad, &mut buf, &tag).unwrap();
        assert_eq!(buf, plaintext);

        let mut buf = ciphertext;
        let mut bad_tag = tag;
        bad_tag[15] ^= 1;
        assert!(gcm_open(&cipher, &nonce, &aad, &mut buf, &bad_tag).is_err());
        assert!(gcm_open(&cipher, &nonce, &aad[..19], &mut buf, &tag).is_err());
    }

    #[test]
    fn nonce_layout_is_prefix_index_last() {
        let prefix = NoncePrefix::from_bytes([1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            chunk_nonce(&prefix, 0x0a0b_0c0d, true),
            [1, 2, 3, 4, 5, 6, 7, 0x0a, 0x0b, 0x0c, 0x0d, 1]
        );
        assert_eq!(
            chunk_nonce(&prefix, 0, false),
            [1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0]
        );

        let params = PayloadParams {
            image_len: 600,
            chunk_size: 256,
            nonce_prefix: prefix,
            image_digest: Digest::from_bytes([0; 32]),
        };
        assert_eq!(params.nonce(1)[11], 0);
        assert_eq!(params.nonce(2)[11], 1);
    }
}
