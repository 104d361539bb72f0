//! The release tooling end to end (keys, bundle, factory) and its refusals:
//! a release key the TrustRoot does not list, tampered bundles, malformed
//! versions and faults, unreadable or loose key files, a factory flash that
//! exists, a release for another product, a slot too small.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use aloft_device::{Device, Slot};
use aloft_firmware::board;
use aloft_protocol::prost::Message as _;
use aloft_protocol::{Error as P, SecretKey, Version, pb};
use aloft_release::factory::{FactoryOptions, provision};
use aloft_release::keys::{self, KeysOptions, ServerKeySource};
use aloft_release::release::{self, ReleaseOptions, check_bundle, make_bundle};
use aloft_release::{ReleaseError, keyfile};

fn keys_in(dir: &Path) -> KeysOptions {
    KeysOptions {
        out: dir.join("keys"),
        server_key: ServerKeySource::DataDir(dir.join("server-data")),
        trust_root_version: 1,
        valid_days: 30,
        hosts: vec!["localhost".into(), "127.0.0.1".into()],
    }
}

fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn bundle(dir: &Path, version: &str) -> (pb::ReleaseBundle, PathBuf) {
    let k = keys_in(dir);
    let trust = keys::read_trust_root(&k.out).unwrap();
    let key = keys::read_release_key(&k.out).unwrap();
    let opts = ReleaseOptions::new(Version::parse(version).unwrap());
    let (bundle, summary) = make_bundle(&image(100_000), &opts, &key, &trust).unwrap();
    assert_eq!(summary.release_id, format!("aloft-sample-{version}"));
    let path = dir.join(format!("{version}.bundle"));
    release::write_bundle(&path, &bundle).unwrap();
    (bundle, path)
}

fn identity(dir: &Path, product: &str) -> PathBuf {
    let trust = std::fs::read(dir.join("keys").join(keys::TRUST_ROOT)).unwrap();
    let id = pb::IdentityBundle {
        device_id: "dev-1".into(),
        private_key: SecretKey::generate().to_bytes().to_vec(),
        server_url: "http://127.0.0.1:9".into(),
        ca_pem: String::new(),
        trust_root: Some(pb::SignedEnvelope::decode(trust.as_slice()).unwrap()),
        attributes: [
            ("product".to_owned(), product.to_owned()),
            ("hardware".to_owned(), board::HARDWARE.to_owned()),
        ]
        .into_iter()
        .collect(),
    };
    let path = dir.join(format!("identity-{product}.pb"));
    std::fs::write(&path, id.encode_to_vec()).unwrap();
    path
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn keys_are_private_kept_and_listed_in_the_trust_root() {
    let dir = tempfile::tempdir().unwrap();
    let opts = keys_in(dir.path());
    let first = keys::create_keys(&opts).unwrap();
    for f in [
        keys::ROOT_KEY,
        keys::RELEASE_KEY,
        keys::CA_KEY,
        keys::SERVER_TLS_KEY,
    ] {
        assert_eq!(mode(&opts.out.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&dir.path().join("server-data/server-key")), 0o600);
    let trust = keys::read_trust_root(&opts.out).unwrap();
    assert_eq!(
        trust.release_keys()[0].key_id().to_string(),
        first.release_key_id
    );
    assert_eq!(
        trust.server_keys()[0].key_id().to_string(),
        first.server_key_id
    );
    assert!(
        std::fs::read_to_string(opts.out.join(keys::SERVER_CERT))
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    // A second run keeps every key and re-signs with a given server key.
    let server = SecretKey::generate().public_key();
    let mut again = opts.clone();
    again.server_key = ServerKeySource::Public(server);
    let second = keys::create_keys(&again).unwrap();
    assert_eq!(second.root_key_id, first.root_key_id);
    assert_eq!(second.release_key_id, first.release_key_id);
    assert!(second.created.is_empty(), "{:?}", second.created);
    assert_eq!(
        keys::read_trust_root(&opts.out).unwrap().server_keys(),
        [server]
    );
}

#[test]
fn refuses_bad_key_arguments() {
    assert!(matches!(
        keys::parse_public_key("zz"),
        Err(ReleaseError::InvalidArg { .. })
    ));
    assert!(matches!(
        keys::parse_public_key(&format!("05{}", "11".repeat(32))),
        Err(ReleaseError::InvalidArg { .. })
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut opts = keys_in(dir.path());
    opts.trust_root_version = 0;
    assert!(matches!(
        keys::create_keys(&opts),
        Err(ReleaseError::InvalidArg { .. })
    ));
}

#[test]
fn refuses_unreadable_loose_or_malformed_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.key");
    assert!(matches!(
        keyfile::read_key(&missing),
        Err(ReleaseError::KeyFile { .. })
    ));
    let loose = dir.path().join("loose.key");
    std::fs::write(&loose, SecretKey::generate().to_bytes()).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = keyfile::read_key(&loose).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
    let short = dir.path().join("short.key");
    keyfile::write_private(&short, &[1; 31]).unwrap();
    assert!(
        keyfile::read_key(&short)
            .unwrap_err()
            .to_string()
            .contains("31 bytes")
    );
    let zero = dir.path().join("zero.key");
    keyfile::write_private(&zero, &[0; 32]).unwrap();
    assert!(matches!(
        keyfile::read_key(&zero),
        Err(ReleaseError::KeyFile { .. })
    ));
    // Key files are never overwritten.
    assert!(matches!(
        keyfile::write_private(&zero, &[1; 32]),
        Err(ReleaseError::Exists(_))
    ));
}

#[test]
fn refuses_malformed_versions() {
    for bad in ["1.2", "1.2.3.4", "v1.0.0", "1.x.0", "", "1..0", "-1.0.0"] {
        assert!(
            matches!(
                release::parse_version(bad),
                Err(ReleaseError::InvalidArg {
                    what: "version",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        release::parse_version("10.20.30").unwrap(),
        Version::new(10, 20, 30)
    );
}

#[test]
fn refuses_an_image_built_with_another_version_or_fault() {
    use aloft_firmware::config::{Fault, FirmwareConfig};
    let rec = |version, fault| {
        let mut image = image(1000);
        image.extend_from_slice(&FirmwareConfig { version, fault }.record());
        image
    };
    let mut opts = ReleaseOptions::new(Version::new(1, 2, 0));
    opts.fault = Fault::Crash;
    release::check_baked(&rec(Version::new(1, 2, 0), Fault::Crash), &opts).unwrap();
    for bad in [
        rec(Version::new(1, 1, 0), Fault::Crash),
        rec(Version::new(1, 2, 0), Fault::None),
    ] {
        assert!(matches!(
            release::check_baked(&bad, &opts),
            Err(ReleaseError::InvalidArg { what: "image", .. })
        ));
    }
    // Not a sample firmware: nothing to compare.
    release::check_baked(&image(1000), &opts).unwrap();
}

#[test]
fn refuses_a_release_key_the_trust_root_does_not_list() {
    let dir = tempfile::tempdir().unwrap();
    keys::create_keys(&keys_in(dir.path())).unwrap();
    let trust = keys::read_trust_root(&dir.path().join("keys")).unwrap();
    let stranger = SecretKey::generate();
    let opts = ReleaseOptions::new(Version::new(1, 0, 0));
    let err = make_bundle(&image(1000), &opts, &stranger, &trust).unwrap_err();
    assert!(
        matches!(
            err,
            ReleaseError::Refused {
                source: P::ThresholdNotMet {
                    needed: 1,
                    valid: 0
                },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn refuses_tampered_bundles() {
    let dir = tempfile::tempdir().unwrap();
    keys::create_keys(&keys_in(dir.path())).unwrap();
    let trust = keys::read_trust_root(&dir.path().join("keys")).unwrap();
    let (good, _) = bundle(dir.path(), "1.0.0");
    let (manifest, img) = check_bundle(&good, &trust).unwrap();
    assert_eq!(img, image(100_000));
    assert_eq!(manifest.version(), Version::new(1, 0, 0));

    let mut payload = good.clone();
    payload.payload[5000] ^= 1;
    assert!(matches!(
        check_bundle(&payload, &trust),
        Err(ReleaseError::Refused {
            source: P::ChunkAuthentication { index: 0 },
            ..
        })
    ));
    let mut truncated = good.clone();
    truncated.payload.truncate(good.payload.len() - 1);
    assert!(matches!(
        check_bundle(&truncated, &trust),
        Err(ReleaseError::Refused { .. })
    ));
    let mut manifest = good.clone();
    manifest.manifest.as_mut().unwrap().payload[3] ^= 1;
    assert!(matches!(
        check_bundle(&manifest, &trust),
        Err(ReleaseError::Refused {
            source: P::ThresholdNotMet { .. },
            ..
        })
    ));
    let mut key = good.clone();
    key.content_key[0] ^= 1;
    assert!(matches!(
        check_bundle(&key, &trust),
        Err(ReleaseError::Refused {
            source: P::ChunkAuthentication { .. },
            ..
        })
    ));
}

#[test]
fn factory_puts_a_confirmed_verified_image_in_slot_a() {
    let dir = tempfile::tempdir().unwrap();
    keys::create_keys(&keys_in(dir.path())).unwrap();
    let (_, bundle_path) = bundle(dir.path(), "1.0.0");
    let id = identity(dir.path(), board::PRODUCT);
    let flash = dir.path().join("dev/flash.bin");
    let opts = FactoryOptions {
        identity: id,
        bundle: bundle_path,
        flash: flash.clone(),
        slot_size: 256 * 1024,
    };
    let summary = provision(&opts).unwrap();
    assert_eq!(summary.version, "1.0.0");
    assert_eq!(summary.flash_len, board::flash_len(256 * 1024));

    let _trust = keys::read_trust_root(&dir.path().join("keys")).unwrap();
    let (f, layout) = board::open_flash(&flash).unwrap();
    let config = aloft_agent::Identity::load(dir.path().join("identity-aloft-sample.pb"))
        .unwrap()
        .device_config()
        .unwrap();
    let mut dev = Device::open(f, layout, config).unwrap();
    let booted = dev.boot().unwrap();
    assert_eq!(booted.slot, Slot::A);
    assert!(!booted.trial);
    assert!(dev.is_confirmed());
    assert_eq!(booted.manifest.version(), Version::new(1, 0, 0));

    // Never overwrites a device's flash.
    assert!(matches!(provision(&opts), Err(ReleaseError::Exists(_))));
}

#[test]
fn factory_refuses_foreign_small_or_unsigned_releases() {
    let dir = tempfile::tempdir().unwrap();
    keys::create_keys(&keys_in(dir.path())).unwrap();
    let (_, bundle_path) = bundle(dir.path(), "1.0.0");
    let flash = dir.path().join("flash.bin");
    let base = FactoryOptions {
        identity: identity(dir.path(), board::PRODUCT),
        bundle: bundle_path.clone(),
        flash: flash.clone(),
        slot_size: 256 * 1024,
    };

    let other_product = FactoryOptions {
        identity: identity(dir.path(), "toaster"),
        ..base.clone()
    };
    assert!(matches!(
        provision(&other_product),
        Err(ReleaseError::InvalidArg {
            what: "release",
            ..
        })
    ));
    let small = FactoryOptions {
        slot_size: 64 * 1024,
        ..base.clone()
    };
    assert!(matches!(
        provision(&small),
        Err(ReleaseError::InvalidArg {
            what: "slot size",
            ..
        })
    ));
    assert!(
        !flash.exists(),
        "a refused factory step leaves no flash file"
    );

    // A bundle signed under another key directory's TrustRoot.
    let other = tempfile::tempdir().unwrap();
    keys::create_keys(&keys_in(other.path())).unwrap();
    let (_, foreign) = bundle(other.path(), "1.0.0");
    let foreign = FactoryOptions {
        bundle: foreign,
        ..base.clone()
    };
    assert!(matches!(
        provision(&foreign),
        Err(ReleaseError::Refused {
            source: P::ThresholdNotMet { .. },
            ..
        })
    ));
    let garbage = dir.path().join("garbage.bundle");
    std::fs::write(&garbage, b"\xff\xff\xff not a bundle").unwrap();
    let garbage = FactoryOptions {
        bundle: garbage,
        ..base
    };
    assert!(matches!(
        provision(&garbage),
        Err(ReleaseError::BadFile { .. })
    ));
    assert!(!flash.exists());
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aloft-release"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_runs_keys_release_and_factory_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let out = cli(&[
        "keys",
        "--out",
        &d("keys"),
        "--server-data",
        &d("data"),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["trust_root_version"], 1);

    std::fs::write(d("image"), image(50_000)).unwrap();
    let release = |extra: &[&str]| {
        let (keys, image) = (d("keys"), d("image"));
        let mut args = vec!["release", "--keys", &keys, "--image", &image, "--json"];
        args.extend(extra.iter().copied());
        cli(&args)
    };
    let out = release(&["--version", "1.0.0", "--out", &d("r.bundle")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["release_id"], "aloft-sample-1.0.0");
    assert_eq!(summary["image_len"], 50_000);

    for (args, needle) in [
        (vec!["--version", "1.2", "--out", &d("x")], "version"),
        (
            vec!["--version", "1.2.0", "--fault", "explode", "--out", &d("x")],
            "fault",
        ),
        (vec!["--version", "1.2.0"], "--out"),
    ] {
        let out = release(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // An unreadable release key stops the release.
    std::fs::set_permissions(
        dir.path().join("keys").join(keys::RELEASE_KEY),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let out = release(&["--version", "1.0.1", "--out", &d("y")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("release.key"));

    let id = identity(dir.path(), board::PRODUCT);
    let out = cli(&[
        "factory",
        "--identity",
        &id.display().to_string(),
        "--bundle",
        &d("r.bundle"),
        "--flash",
        &d("flash.bin"),
        "--slot-size",
        "131072",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["version"], "1.0.0");
    assert_eq!(
        std::fs::metadata(d("flash.bin")).unwrap().len(),
        board::flash_len(131_072)
    );
}

fn rotate(dir: &Path) -> keys::RotateOptions {
    keys::RotateOptions {
        dir: dir.join("keys"),
        valid_days: 365,
        ..Default::default()
    }
}

/// Threat 13: each rotation is version + 1, signed by the old root and the
/// new one, and checks the way a server and a device will; a device that
/// holds v1 walks v1 -> v3 with the archived roots.
#[test]
fn rotation_drill_new_root_revoked_release_key_new_server_key() {
    let dir = tempfile::tempdir().unwrap();
    let first = keys::create_keys(&keys_in(dir.path())).unwrap();
    let v1 = keys::read_trust_root(&dir.path().join("keys")).unwrap();
    let (old_bundle, _) = bundle(dir.path(), "1.0.0");

    // Year 1: a new root key and a new release key; the old release key is
    // revoked (removed), the server's next directive key is listed.
    let data = dir.path().join("server-data");
    let (next_server, created) = keys::next_server_key(&data).unwrap();
    assert!(created);
    assert_eq!(mode(&data.join(keys::SERVER_DATA_NEXT_KEY)), 0o600);
    assert_eq!(keys::next_server_key(&data).unwrap(), (next_server, false));
    let mut opts = rotate(dir.path());
    opts.new_root = true;
    opts.new_release_key = true;
    opts.remove_release_keys = vec![first.release_key_id[..12].to_owned()];
    opts.add_server_keys = vec![next_server];
    opts.remove_server_keys = vec![first.server_key_id.clone()];
    let r = keys::rotate_keys(&opts).unwrap();
    assert_eq!(r.version, 2);
    assert_eq!(r.server_keys, [next_server.key_id().to_string()]);
    assert!(!r.release_keys.contains(&first.release_key_id), "revoked");
    assert_ne!(r.root_keys, std::slice::from_ref(&first.root_key_id));
    let keys_dir = dir.path().join("keys");
    assert_eq!(mode(&keys_dir.join(keys::ROOT_KEY)), 0o600);
    assert!(keys_dir.join("root.retired-v1.key").exists());
    assert!(keys_dir.join("release.retired-v1.key").exists());
    assert!(keys_dir.join("trust-root-v1.pb").exists());

    // Year 2: only a new expiry.
    let r3 = keys::rotate_keys(&rotate(dir.path())).unwrap();
    assert_eq!(r3.version, 3);

    // A device holding v1 walks the archived chain.
    let chain: Vec<pb::SignedEnvelope> = [2, 3]
        .iter()
        .map(|v| {
            let bytes = std::fs::read(keys_dir.join(format!("trust-root-v{v}.pb"))).unwrap();
            pb::SignedEnvelope::decode(bytes.as_slice()).unwrap()
        })
        .collect();
    let v3 = v1
        .update_chain(&chain, aloft_release::now())
        .expect("v1 walks to v3");
    assert_eq!(v3.version(), 3);
    // The revoked key's manifest no longer verifies; the new key's does.
    let manifest = old_bundle.manifest.unwrap();
    assert!(matches!(
        v3.verify_manifest(&manifest, aloft_release::now()),
        Err(P::ThresholdNotMet { .. })
    ));
    let (new_bundle, _) = bundle(dir.path(), "1.1.0");
    assert!(
        v3.verify_manifest(new_bundle.manifest.as_ref().unwrap(), aloft_release::now())
            .is_ok()
    );
}

#[test]
fn rotation_refuses_what_would_strand_devices() {
    let dir = tempfile::tempdir().unwrap();
    let first = keys::create_keys(&keys_in(dir.path())).unwrap();
    let before = std::fs::read(dir.path().join("keys").join(keys::TRUST_ROOT)).unwrap();
    let refused = |opts: keys::RotateOptions, why: &str| {
        let e = keys::rotate_keys(&opts).unwrap_err();
        assert!(matches!(e, ReleaseError::InvalidArg { .. }), "{why}: {e}");
        assert_eq!(
            std::fs::read(dir.path().join("keys").join(keys::TRUST_ROOT)).unwrap(),
            before,
            "{why}: nothing written"
        );
    };
    let mut o = rotate(dir.path());
    o.remove_release_keys = vec![first.release_key_id.clone()];
    refused(o, "no release key left");
    let mut o = rotate(dir.path());
    o.remove_server_keys = vec![first.server_key_id.clone()];
    refused(o, "no server key left");
    let mut o = rotate(dir.path());
    o.remove_release_keys = vec!["abc".into()];
    refused(o, "too short an id");
    let mut o = rotate(dir.path());
    o.remove_release_keys = vec!["0123456789abcdef".into()];
    refused(o, "unknown id");
}

/// The drill with the real binary, as an operator types it.
#[test]
fn rotation_with_the_aloft_release_binary() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_aloft-release"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let k = dir.path().join("keys");
    let d = dir.path().join("data");
    let (ok, _, err) = run(&[
        "keys",
        "--out",
        k.to_str().unwrap(),
        "--server-data",
        d.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&[
        "keys",
        "next-server-key",
        "--server-data",
        d.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let next: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (ok, out, err) = run(&[
        "keys",
        "rotate",
        "--keys",
        k.to_str().unwrap(),
        "--new-root",
        "--next-server-key",
        d.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["version"], 2);
    assert!(
        summary["server_keys"]
            .as_array()
            .unwrap()
            .contains(&next["key_id"])
    );
    // Missing the key directory: a clear error naming the file.
    let (ok, _, err) = run(&["keys", "rotate", "--keys", "/nonexistent-aloft-keys"]);
    assert!(!ok);
    assert!(err.contains("trust-root.pb"), "{err}");
}

#[test]
fn a_refused_rotation_replaces_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let first = keys::create_keys(&keys_in(dir.path())).unwrap();
    let keys_dir = dir.path().join("keys");
    let root_before = std::fs::read(keys_dir.join(keys::ROOT_KEY)).unwrap();
    let mut o = rotate(dir.path());
    o.new_root = true;
    o.remove_server_keys = vec![first.server_key_id.clone()];
    assert!(keys::rotate_keys(&o).is_err());
    assert_eq!(
        std::fs::read(keys_dir.join(keys::ROOT_KEY)).unwrap(),
        root_before
    );
    assert!(!keys_dir.join("root.retired-v1.key").exists());
}

#[test]
fn signature_only_releases_are_signed_not_encrypted_and_checked_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    keys::create_keys(&keys_in(dir.path())).unwrap();
    let k = keys_in(dir.path());
    let trust = keys::read_trust_root(&k.out).unwrap();
    let key = keys::read_release_key(&k.out).unwrap();
    let mut opts = ReleaseOptions::new(Version::new(1, 2, 0));
    opts.signature_only = true;
    opts.chunk_size = 4096;
    let img = image(50_000);
    let (good, summary) = make_bundle(&img, &opts, &key, &trust).unwrap();
    assert_eq!(summary.payload_encoding, "signature-only");
    assert!(good.content_key.is_empty(), "no content key");
    let (manifest, opened) = check_bundle(&good, &trust).unwrap();
    assert!(manifest.is_signature_only());
    assert_eq!(opened, img);
    // The plaintext travels as it is (chunk 0 starts the payload).
    assert_eq!(&good.payload[..4096], &img[..4096]);

    // A flipped byte fails at its chunk; a content key is refused.
    let mut tampered = good.clone();
    tampered.payload[10] ^= 1;
    assert!(matches!(
        check_bundle(&tampered, &trust),
        Err(ReleaseError::Refused {
            source: P::ChunkAuthentication { index: 0 },
            ..
        })
    ));
    let mut keyed = good.clone();
    keyed.content_key = vec![7; 32];
    assert!(matches!(
        check_bundle(&keyed, &trust),
        Err(ReleaseError::Refused {
            what: "content key",
            ..
        })
    ));
    // The default stays encrypted.
    let (encrypted, summary) = make_bundle(
        &img,
        &ReleaseOptions::new(Version::new(1, 2, 1)),
        &key,
        &trust,
    )
    .unwrap();
    assert_eq!(summary.payload_encoding, "encrypted");
    assert_ne!(&encrypted.payload[..4096], &img[..4096]);
}
