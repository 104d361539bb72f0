//! The byte formats of the targets that take more than one message: a
//! [`Reader`] the targets parse with, a [`Writer`] the seed generator
//! writes with, and the op codes of the two session targets. A short or
//! odd input is never an error: missing bytes read as zeros, so every input
//! means something.

/// Reads an input front to back; past the end every read gives zeros.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    /// Exactly `N` bytes, zero-padded at the end.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let got = self.bytes(N);
        out[..got.len()].copy_from_slice(got);
        out
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// A u16-length-prefixed byte string.
    pub fn frame(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.bytes(n)
    }

    /// What is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let n = self.data.len();
        self.bytes(n)
    }
}

/// Writes what a [`Reader`] reads.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    /// The bytes so far.
    pub out: Vec<u8>,
}

impl Writer {
    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    /// A little-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A little-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A little-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }

    /// A u16-length-prefixed byte string.
    pub fn frame(&mut self, b: &[u8]) -> &mut Self {
        let n = u16::try_from(b.len()).expect("a frame fits in 64 KiB");
        self.u16(n).bytes(b)
    }
}

/// Ops of the `device_session` target (the op byte is taken modulo
/// [`device_op::COUNT`]).
pub mod device_op {
    /// A `ServerToDevice` message (a frame) at the current time.
    pub const MESSAGE: u8 = 0;
    /// Advance the clock by a u32 of milliseconds, then the timers.
    pub const ADVANCE: u8 = 1;
    /// Advance the clock to the next timer, then the timers.
    pub const NEXT_TIMER: u8 = 2;
    /// The driver finished a TrustRoot update.
    pub const TRUST_UPDATED: u8 = 3;
    /// The driver finished an install: durable, with an "installed" report.
    pub const INSTALLED: u8 = 4;
    /// The driver finished an install: durable, no report pending.
    pub const INSTALLED_NO_REPORT: u8 = 5;
    /// The driver refused the offer (with a report).
    pub const REFUSED: u8 = 6;
    /// The driver set the offer aside.
    pub const DEFERRED: u8 = 7;
    /// The connection dropped.
    pub const CONNECTION_LOST: u8 = 8;
    /// Number of ops.
    pub const COUNT: u8 = 9;
}

/// Ops of the `server_session` target (modulo [`server_op::COUNT`]).
pub mod server_op {
    /// Send the challenge (a u64 server time follows).
    pub const CHALLENGE: u8 = 0;
    /// A first message (a `SignedDeviceMessage` frame): claimed device,
    /// then `accept_hello` with that device's key.
    pub const HELLO: u8 = 1;
    /// A later message (a `SignedDeviceMessage` frame): `receive`.
    pub const RECEIVE: u8 = 2;
    /// The welcome: the device's root version and the server's newest
    /// (one byte each) follow.
    pub const WELCOME: u8 = 3;
    /// The TrustRoot update; a byte follows: 0 for an empty chain.
    pub const TRUST_UPDATE: u8 = 4;
    /// An offer.
    pub const OFFER: u8 = 5;
    /// A report ack.
    pub const REPORT_ACK: u8 = 6;
    /// Check in later.
    pub const CHECK_IN_LATER: u8 = 7;
    /// Number of ops.
    pub const COUNT: u8 = 8;
}

/// The header of a `chunk_decryptor` input, then chunks as frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// AES-256 content key.
    pub key: [u8; 32],
    /// Nonce prefix.
    pub nonce_prefix: [u8; 7],
    /// Plaintext image digest (the chunks' associated data).
    pub image_digest: [u8; 32],
    /// Plaintext length.
    pub image_len: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Chunk to resume at.
    pub resume: u32,
}

impl ChunkHeader {
    /// Reads a header.
    pub fn read(r: &mut Reader<'_>) -> Self {
        Self {
            key: r.array(),
            nonce_prefix: r.array(),
            image_digest: r.array(),
            image_len: r.u64(),
            chunk_size: r.u32(),
            resume: r.u32(),
        }
    }

    /// Writes it.
    pub fn write(&self, w: &mut Writer) {
        w.bytes(&self.key)
            .bytes(&self.nonce_prefix)
            .bytes(&self.image_digest)
            .u64(self.image_len)
            .u32(self.chunk_size)
            .u32(self.resume);
    }
}
