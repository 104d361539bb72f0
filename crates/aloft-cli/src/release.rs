//! `aloft release ...`: upload a staged release bundle and list releases.

use std::path::{Path, PathBuf};

use aloft_protocol::limits::MAX_IMAGE_LEN;
use aloft_protocol::pb::upload_release_request::Part;
use aloft_protocol::prost::Message as _;
use aloft_protocol::{ContentKey, pb};
use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use serde::Serialize;

use crate::Ctx;
use crate::client::status_error;
use crate::duration::{age, now_unix};
use crate::output::{self, Table};

/// Payload bytes per upload message.
pub const UPLOAD_PART: usize = 64 * 1024;

/// Largest bundle file read: the largest image plus generous room for
/// chunk tags, the manifest and framing.
const MAX_BUNDLE_FILE: u64 = MAX_IMAGE_LEN + MAX_IMAGE_LEN / 64 + 1024 * 1024;

/// `aloft release` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Upload a release bundle (as `cargo xtask release --out FILE` writes it).
    Upload {
        /// The ReleaseBundle protobuf file.
        file: PathBuf,
    },
    /// List uploaded releases.
    List,
}

/// Runs one `aloft release` command.
pub async fn run(ctx: &mut Ctx, cmd: ReleaseCommand) -> anyhow::Result<()> {
    match cmd {
        ReleaseCommand::Upload { file } => upload(ctx, &file).await,
        ReleaseCommand::List => list(ctx).await,
    }
}

/// Reads and checks a release bundle file.
pub fn read_bundle(path: &Path) -> anyhow::Result<pb::ReleaseBundle> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("could not read the release bundle {}", path.display()))?
        .len();
    if len > MAX_BUNDLE_FILE {
        bail!(
            "{} is {len} bytes, more than any release bundle can be",
            path.display()
        );
    }
    let bytes = std::fs::read(path)
        .with_context(|| format!("could not read the release bundle {}", path.display()))?;
    let bundle = pb::ReleaseBundle::decode(bytes.as_slice()).map_err(|e| {
        anyhow!(
            "{} is not a release bundle ({e}); build one with `cargo xtask release --out FILE`",
            path.display()
        )
    })?;
    if bundle
        .manifest
        .as_ref()
        .is_none_or(|m| m.payload.is_empty())
    {
        bail!("{} has no release manifest", path.display());
    }
    // A signature-only release (`aloft-release release --signature-only`)
    // has no content key; the server checks which one the manifest says.
    if !bundle.content_key.is_empty() {
        ContentKey::from_slice(&bundle.content_key).map_err(|_| {
            anyhow!(
                "{} has no valid content key (needs 32 bytes, or none for a signature-only release)",
                path.display()
            )
        })?;
    }
    if bundle.payload.is_empty() {
        bail!("{} has an empty payload", path.display());
    }
    Ok(bundle)
}

/// The upload stream: the header, then the payload in [`UPLOAD_PART`] pieces.
pub fn upload_messages(
    bundle: pb::ReleaseBundle,
) -> impl Iterator<Item = pb::UploadReleaseRequest> + Send + 'static {
    let header = pb::UploadReleaseRequest {
        part: Some(Part::Header(pb::UploadReleaseHeader {
            manifest: bundle.manifest,
            content_key: bundle.content_key,
            payload_len: bundle.payload.len() as u64,
        })),
    };
    let payload = bundle.payload;
    let parts = payload.len().div_ceil(UPLOAD_PART);
    let pieces = (0..parts).map(move |i| {
        let end = payload.len().min((i + 1) * UPLOAD_PART);
        pb::UploadReleaseRequest {
            part: Some(Part::Payload(payload[i * UPLOAD_PART..end].to_vec())),
        }
    });
    std::iter::once(header).chain(pieces)
}

async fn upload(ctx: &mut Ctx, path: &Path) -> anyhow::Result<()> {
    let bundle = read_bundle(path)?;
    let payload_len = bundle.payload.len() as u64;
    let action = format!("uploading {}", path.display());
    let info = ctx
        .client
        .upload_release(tokio_stream::iter(upload_messages(bundle)))
        .await
        .map_err(|s| status_error(&action, &s))?
        .into_inner();
    if info.payload_len != 0 && info.payload_len != payload_len {
        bail!(
            "{action}: the server stored {} payload bytes but {payload_len} were sent",
            info.payload_len
        );
    }
    if ctx.json() {
        return output::print_json(&release_json(&info));
    }
    output::print_fields(&[
        ("uploaded", info.release_id.clone()),
        ("product", info.product.clone()),
        ("hardware", info.hardware.join(",")),
        ("version", info.version.clone()),
        ("security version", info.security_version.to_string()),
        ("image", output::bytes(info.image_len)),
        ("payload", output::bytes(payload_len)),
        ("manifest digest", hex::encode(&info.manifest_digest)),
        ("expires", age(now_unix(), info.expires_at)),
    ])
}

/// A release as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct ReleaseJson {
    id: String,
    product: String,
    hardware: Vec<String>,
    version: String,
    security_version: u32,
    image_len: u64,
    payload_len: u64,
    manifest_digest: String,
    expires_at: u64,
    uploaded_at: u64,
}

/// Converts a release to its JSON form.
pub fn release_json(r: &pb::ReleaseInfo) -> ReleaseJson {
    ReleaseJson {
        id: r.release_id.clone(),
        product: r.product.clone(),
        hardware: r.hardware.clone(),
        version: r.version.clone(),
        security_version: r.security_version,
        image_len: r.image_len,
        payload_len: r.payload_len,
        manifest_digest: hex::encode(&r.manifest_digest),
        expires_at: r.expires_at,
        uploaded_at: r.uploaded_at,
    }
}

async fn list(ctx: &mut Ctx) -> anyhow::Result<()> {
    let releases = ctx
        .client
        .list_releases(pb::ListReleasesRequest {})
        .await
        .map_err(|s| status_error("listing releases", &s))?
        .into_inner()
        .releases;
    if ctx.json() {
        return output::print_json(&releases.iter().map(release_json).collect::<Vec<_>>());
    }
    let now = now_unix();
    let mut table = Table::new(&[
        "ID", "PRODUCT", "VERSION", "SECURITY", "HARDWARE", "IMAGE", "UPLOADED", "EXPIRES",
    ]);
    for r in &releases {
        table.row(vec![
            r.release_id.clone(),
            r.product.clone(),
            r.version.clone(),
            r.security_version.to_string(),
            r.hardware.join(","),
            output::bytes(r.image_len),
            age(now, r.uploaded_at),
            age(now, r.expires_at),
        ]);
    }
    table.print()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(payload_len: usize) -> pb::ReleaseBundle {
        pb::ReleaseBundle {
            manifest: Some(pb::SignedEnvelope {
                payload: vec![1, 2, 3],
                signatures: vec![],
            }),
            content_key: vec![7; 32],
            payload: (0..payload_len).map(|i| i as u8).collect(),
        }
    }

    #[test]
    fn upload_stream_is_header_then_ordered_parts() {
        let len = 2 * UPLOAD_PART + 100;
        let original = bundle(len);
        let messages: Vec<_> = upload_messages(original.clone()).collect();
        assert_eq!(messages.len(), 4);
        let Some(Part::Header(h)) = &messages[0].part else {
            panic!("first message is not the header")
        };
        assert_eq!(h.payload_len, len as u64);
        assert_eq!(h.content_key, original.content_key);
        let mut joined = Vec::new();
        for m in &messages[1..] {
            let Some(Part::Payload(p)) = &m.part else {
                panic!("payload expected")
            };
            assert!(p.len() <= UPLOAD_PART);
            joined.extend_from_slice(p);
        }
        assert_eq!(joined, original.payload);
    }

    #[test]
    fn bad_bundle_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.bin");

        std::fs::write(&path, b"\xff\xff\xff garbage").unwrap();
        assert!(
            read_bundle(&path)
                .unwrap_err()
                .to_string()
                .contains("not a release bundle")
        );

        let mut b = bundle(10);
        b.manifest = None;
        std::fs::write(&path, b.encode_to_vec()).unwrap();
        assert!(
            read_bundle(&path)
                .unwrap_err()
                .to_string()
                .contains("no release manifest")
        );

        let mut b = bundle(10);
        b.content_key = vec![1; 16];
        std::fs::write(&path, b.encode_to_vec()).unwrap();
        assert!(
            read_bundle(&path)
                .unwrap_err()
                .to_string()
                .contains("content key")
        );

        std::fs::write(&path, bundle(0).encode_to_vec()).unwrap();
        assert!(
            read_bundle(&path)
                .unwrap_err()
                .to_string()
                .contains("empty payload")
        );

        std::fs::write(&path, bundle(10).encode_to_vec()).unwrap();
        assert!(read_bundle(&path).is_ok());

        assert!(
            read_bundle(&dir.path().join("missing"))
                .unwrap_err()
                .to_string()
                .contains("could not read")
        );
    }
}
