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
        trust.release_keys[0].key_id().to_string(),
        first.release_key_id
    );
    assert_eq!(
        trust.server_keys[0].key_id().to_string(),
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
        keys::read_trust_root(&opts.out).unwrap().server_keys,
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
    assert_eq!(manifest.version, Version::new(1, 0, 0));

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

    let trust = keys::read_trust_root(&dir.path().join("keys")).unwrap();
    let (f, layout) = board::open_flash(&flash).unwrap();
    let config = aloft_agent::Identity::load(dir.path().join("identity-aloft-sample.pb"))
        .unwrap()
        .device_config()
        .unwrap();
    let mut dev = Device::open(f, layout, config).unwrap();
    let booted = dev.boot(&trust).unwrap();
    assert_eq!(booted.slot, Slot::A);
    assert!(!booted.trial);
    assert!(dev.is_confirmed());
    assert_eq!(booted.manifest.version, Version::new(1, 0, 0));

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
