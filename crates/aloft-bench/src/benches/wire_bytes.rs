//! Benchmark 6, bytes on the wire: not measured yet (it needs a device update
//! end to end through the agent). Until then this reports the payload
//! format's own overhead, computed from `PayloadParams` (arithmetic, not a
//! measurement), so the goal can be judged against what the format allows.

use aloft_protocol::payload::PayloadParams;
use aloft_protocol::{Digest, NoncePrefix};
use anyhow::anyhow;

use crate::benches::{Bench, Ctx};
use crate::report::{BenchResult, Status, Table};

/// The benchmark.
#[derive(Debug)]
pub struct WireBytes;

impl Bench for WireBytes {
    fn name(&self) -> &'static str {
        "wire-bytes"
    }

    fn title(&self) -> &'static str {
        "Bytes on the wire"
    }

    fn item(&self) -> u8 {
        6
    }

    fn run(&self, _ctx: &Ctx) -> anyhow::Result<BenchResult> {
        let mut r = BenchResult::new(self.name(), self.title(), 6, Status::NotMeasuredYet);
        r.note(
            "Not measured yet: needs a device update end to end through the agent (total bytes \
             the device receives, TLS and gRPC framing included, against the image size).",
        );
        let image_len: u64 = 1 << 20;
        let mut t = Table::new(
            "Payload format overhead for a 1 MiB image (computed from PayloadParams, not \
             measured): a 16-byte AES-GCM tag per chunk",
            &["chunk size", "payload bytes", "overhead"],
        );
        for chunk_size in [1024u32, 4096, 16384, 65536] {
            let params = PayloadParams {
                image_len,
                chunk_size,
                nonce_prefix: NoncePrefix::from_slice(&[0; 7]).map_err(|e| anyhow!("{e}"))?,
                image_digest: Digest::from_bytes([0; 32]),
            };
            let payload = params.payload_len();
            let overhead = (payload - image_len) as f64 / image_len as f64;
            t.row(&[
                format!("{chunk_size} B"),
                payload.to_string(),
                format!("{:.2}%", overhead * 100.0),
            ]);
            r.figure(&format!("format_overhead.chunk_{chunk_size}"), overhead);
        }
        r.tables.push(t);
        r.note(
            "So the < 1% goal leaves room for framing only with chunks of 4 KiB or more (1 KiB \
             chunks alone cost 1.56%).",
        );
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_overhead_is_one_tag_per_chunk() {
        let ctx = Ctx {
            quick: true,
            scratch: std::env::temp_dir(),
        };
        let r = WireBytes.run(&ctx).unwrap();
        assert_eq!(r.status, Status::NotMeasuredYet);
        assert_eq!(
            r.figures["format_overhead.chunk_4096"],
            256.0 * 16.0 / f64::from(1 << 20)
        );
    }
}
