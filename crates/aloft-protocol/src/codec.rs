//! The gRPC codec of Aloft's services: prost encoding, with small codec
//! buffers.
//!
//! tonic allocates a codec buffer of `buffer_size` bytes for each direction
//! of every RPC as it starts (8 KiB by default) and keeps it for the RPC's
//! life. A device holds one Session stream open for days while sending a
//! heartbeat of a few hundred bytes now and then, so those two buffers were
//! about a third of the server's memory per idle connected device
//! (BENCHMARKS.md, benchmark 2). Aloft starts them at [`BUFFER_SIZE`]; a
//! larger message grows its buffer as it needs (a download chunk, an
//! upload), so nothing is limited by it. The yield threshold stays tonic's.

use core::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial codec buffer per direction of each RPC.
pub const BUFFER_SIZE: usize = 1024;
/// Encoded bytes a streaming response gathers before it yields to the
/// transport (tonic's default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

/// A prost codec with [`BUFFER_SIZE`] codec buffers (named by the generated
/// stubs through `codec_path` in build.rs).
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U>(PhantomData<fn(T) -> U>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> SmallBufferCodec<T, U> {
    /// The buffer settings of both directions.
    pub fn buffer_settings() -> BufferSettings {
        BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(Self::buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(Self::buffer_settings())
    }
}
