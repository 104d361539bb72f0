//! Size limits applied before any parsing or crypto work. Shared by the
//! device and the server so both sides refuse the same inputs.

/// Largest encoded signed envelope (payload plus signatures).
pub const MAX_ENVELOPE_LEN: usize = 16 * 1024;
/// Most signatures examined on one envelope.
pub const MAX_SIGNATURES: usize = 16;
/// Most keys of one role in a TrustRoot.
pub const MAX_KEYS_PER_ROLE: usize = 16;
/// Most hardware revisions one manifest may list.
pub const MAX_HARDWARE_IDS: usize = 32;
/// Longest product or hardware name.
pub const MAX_NAME_LEN: usize = 64;
/// Smallest and largest plaintext chunk size a manifest may declare.
pub const MIN_CHUNK_SIZE: u32 = 256;
/// See [`MIN_CHUNK_SIZE`].
pub const MAX_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest image a manifest may declare (1 GiB).
pub const MAX_IMAGE_LEN: u64 = 1 << 30;
/// Largest encoded device message (hello with its pending reports).
pub const MAX_DEVICE_MESSAGE_LEN: usize = 8 * 1024;
/// Most reports carried in one hello.
pub const MAX_REPORTS_PER_HELLO: usize = 16;
/// Most TrustRoot successors walked in one chain update (one session).
pub const MAX_TRUST_CHAIN: usize = 32;
/// Longest `Directive.payload_url` a device uses (a longer one is ignored:
/// the device downloads through the server).
pub const MAX_PAYLOAD_URL_LEN: usize = 4096;
