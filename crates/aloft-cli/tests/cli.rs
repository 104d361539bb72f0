//! End-to-end tests of the `aloft` binary against a real in-process server
//! over gRPC on 127.0.0.1 (plaintext and TLS with a pinned CA).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use aloft_protocol::envelope::seal;
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::{PayloadParams, encrypt_payload};
use aloft_protocol::prost::Message as _;
use aloft_protocol::{ContentKey, Digest, NoncePrefix, PublicKey, SecretKey, pb};
use aloft_server::{RunningServer, ServerConfig, TlsFiles};
use serde_json::Value;
use tempfile::TempDir;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A running server, its data directory and how the CLI reaches it.
struct Harness {
    server: Option<RunningServer>,
    dir: TempDir,
    url: String,
    admin_token: String,
    ca: Option<PathBuf>,
}

impl Harness {
    async fn plaintext() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
        let server = aloft_server::start(config).await.unwrap();
        let url = format!("http://{}", server.local_addr());
        let admin_token = server.admin_token().to_owned();
        Self {
            server: Some(server),
            dir,
            url,
            admin_token,
            ca: None,
        }
    }

    async fn tls() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, cert_pem, key_pem) = tls_material(&["localhost"]);
        let ca = dir.path().join("ca.pem");
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        std::fs::write(&ca, ca_pem).unwrap();
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let mut config = ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
        config.tls = Some(TlsFiles { cert, key });
        let server = aloft_server::start(config).await.unwrap();
        let url = format!("https://localhost:{}", server.local_addr().port());
        let admin_token = server.admin_token().to_owned();
        Self {
            server: Some(server),
            dir,
            url,
            admin_token,
            ca: Some(ca),
        }
    }

    fn server(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    /// Runs `aloft ARGS` with the admin token.
    async fn aloft(&self, args: &[&str]) -> Run {
        self.aloft_as(Some(&self.admin_token), args).await
    }

    /// Runs `aloft ARGS` with `token` (or none) in ALOFT_TOKEN.
    async fn aloft_as(&self, token: Option<&str>, args: &[&str]) -> Run {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aloft"));
        cmd.env_remove("ALOFT_TOKEN")
            .env_remove("ALOFT_CA")
            .env("ALOFT_SERVER", &self.url)
            .args(args);
        if let Some(token) = token {
            cmd.env("ALOFT_TOKEN", token);
        }
        if let Some(ca) = &self.ca {
            cmd.env("ALOFT_CA", ca);
        }
        Run::from(cmd.output().await.unwrap(), args)
    }

    /// Installs a TrustRoot listing fresh root and release keys and this
    /// server's key; returns the release key.
    async fn install_trust_root(&self) -> SecretKey {
        let root = SecretKey::generate();
        let release = SecretKey::generate();
        let trust = pb::TrustRoot {
            version: 1,
            expires_at: now() + 86_400,
            root_keys: vec![root.public_key().to_sec1_compressed().to_vec()],
            root_threshold: 1,
            release_keys: vec![release.public_key().to_sec1_compressed().to_vec()],
            release_threshold: 1,
            server_keys: vec![
                self.server()
                    .server_public_key()
                    .to_sec1_compressed()
                    .to_vec(),
            ],
        };
        let path = self.dir.path().join("trust-root.pb");
        std::fs::write(
            &path,
            seal(&trust, Domain::TrustRoot, &[&root]).encode_to_vec(),
        )
        .unwrap();
        self.aloft(&["trust-root", "set", path.to_str().unwrap()])
            .await
            .ok();
        release
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            // Best effort: the runtime may already be shutting down.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(server.shutdown());
            }
        }
    }
}

/// A finished `aloft` run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    args: String,
}

impl Run {
    fn from(output: Output, args: &[&str]) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
            args: args.join(" "),
        }
    }

    /// Asserts success and returns stdout.
    fn ok(self) -> String {
        assert_eq!(
            self.code,
            Some(0),
            "aloft {} failed:\n{}",
            self.args,
            self.stderr
        );
        self.stdout
    }

    /// Asserts success and parses stdout as JSON.
    fn json(self) -> Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
    }

    /// Asserts failure with `code` and an error mentioning every one of `needles`.
    fn fails(self, code: i32, needles: &[&str]) -> String {
        assert_eq!(
            self.code,
            Some(code),
            "aloft {}: stdout {:?} stderr {:?}",
            self.args,
            self.stdout,
            self.stderr
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "aloft {}: {needle:?} not in:\n{}",
                self.args,
                self.stderr
            );
        }
        self.stderr
    }
}

/// A CA, and a leaf certificate and key for `names` signed by it (all PEM).
fn tls_material(names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "aloft test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
}

const ATTRS: &[&str] = &[
    "--attr",
    "product=sensor",
    "--attr",
    "hardware=rev-b",
    "--attr",
    "region=eu-west",
    "--attr",
    "time_zone=Europe/Berlin",
    "--attr",
    "tags=lab,canary",
    "--attr",
    "test=true",
];

async fn provision(h: &Harness, id: &str) -> PathBuf {
    let out = h.path(&format!("dev-{id}"));
    let mut args = vec![
        "device",
        "provision",
        "--id",
        id,
        "--factory-version",
        "1.0.0",
        "--out",
        &out,
    ];
    args.extend_from_slice(ATTRS);
    h.aloft(&args).await.ok();
    PathBuf::from(out)
}

fn read_identity(dir: &Path) -> pb::IdentityBundle {
    pb::IdentityBundle::decode(std::fs::read(dir.join("identity.pb")).unwrap().as_slice()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_list_show_revoke_over_plaintext() {
    let h = Harness::plaintext().await;

    // Without a TrustRoot the device would trust nothing: refused, nothing written.
    let out = h.path("early");
    let mut args = vec![
        "device",
        "provision",
        "--id",
        "early",
        "--factory-version",
        "1.0.0",
        "--out",
        &out,
    ];
    args.extend_from_slice(ATTRS);
    h.aloft(&args)
        .await
        .fails(1, &["no TrustRoot", "aloft trust-root set"]);
    assert!(!Path::new(&out).join("identity.pb").exists());
    h.aloft(&["device", "show", "early"])
        .await
        .fails(1, &["not found"]);

    h.install_trust_root().await;
    let dir = provision(&h, "dev-1").await;

    // The bundle decodes, is private, and holds the key the server registered.
    let bundle = read_identity(&dir);
    assert_eq!(bundle.device_id, "dev-1");
    assert_eq!(bundle.server_url, h.url);
    assert!(bundle.ca_pem.is_empty());
    assert!(bundle.trust_root.is_some());
    assert_eq!(bundle.attributes["product"], "sensor");
    assert_eq!(bundle.attributes["tags"], "lab,canary");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("identity.pb"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key = SecretKey::from_slice(&bundle.private_key).unwrap();
    let shown = h.aloft(&["device", "show", "dev-1", "--json"]).await.json();
    let registered =
        PublicKey::from_sec1(&hex::decode(shown["public_key"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(registered, key.public_key());

    // The summary holds no private key.
    let summary = std::fs::read_to_string(dir.join("identity.json")).unwrap();
    let summary_json: Value = serde_json::from_str(&summary).unwrap();
    assert!(summary_json.get("private_key").is_none());
    assert!(!summary.contains(&hex::encode(key.to_bytes())));
    assert_eq!(summary_json["device_id"], "dev-1");

    // Provisioning into the same directory again is refused before registering.
    let mut again = vec![
        "device",
        "provision",
        "--id",
        "dev-9",
        "--factory-version",
        "1.0.0",
        "--out",
        dir.to_str().unwrap(),
    ];
    again.extend_from_slice(ATTRS);
    h.aloft(&again).await.fails(1, &["already exists"]);
    h.aloft(&["device", "show", "dev-9"])
        .await
        .fails(1, &["not found"]);

    // Bad attributes are usage errors.
    let bad_out = h.path("bad");
    let r = h
        .aloft(&[
            "device",
            "provision",
            "--id",
            "bad",
            "--out",
            &bad_out,
            "--attr",
            "colour=red",
        ])
        .await;
    r.fails(2, &["unknown attribute \"colour\""]);
    let r = h
        .aloft(&[
            "device",
            "provision",
            "--id",
            "bad",
            "--factory-version",
            "1.0.0",
            "--out",
            &bad_out,
            "--attr",
            "product=a",
            "--attr",
            "product=b",
        ])
        .await;
    r.fails(1, &["given twice"]);

    // A second device, then the listing.
    provision(&h, "dev-2").await;
    let list = h.aloft(&["device", "list", "--json"]).await.json();
    let devices = list.as_array().unwrap();
    assert_eq!(devices.len(), 2);
    let d1 = devices.iter().find(|d| d["id"] == "dev-1").unwrap();
    for field in [
        "id",
        "attributes",
        "firmware_version",
        "status",
        "last_seen",
        "slot",
        "release_id",
        "revoked",
        "connected",
    ] {
        assert!(d1.get(field).is_some(), "missing {field} in {d1}");
    }
    assert_eq!(d1["attributes"]["product"], "sensor");
    assert_eq!(d1["attributes"]["time_zone"], "Europe/Berlin");
    assert_eq!(
        d1["attributes"]["tags"],
        serde_json::json!(["lab", "canary"])
    );
    assert_eq!(d1["attributes"]["test"], true);
    assert_eq!(d1["firmware_version"], "1.0.0");
    assert_eq!(d1["status"], "registered");
    assert_eq!(d1["revoked"], false);
    assert!(d1["last_seen"].is_null());

    // Never-seen devices are stale for any duration.
    let stale = h
        .aloft(&["device", "list", "--stale", "1h", "--json"])
        .await
        .json();
    assert_eq!(stale.as_array().unwrap().len(), 2);
    h.aloft(&["device", "list", "--stale", "24"])
        .await
        .fails(2, &["missing unit"]);
    // No device has rolled back or gone silent after an update.
    let broken = h
        .aloft(&["device", "list", "--broken", "--json"])
        .await
        .json();
    assert_eq!(broken.as_array().unwrap().len(), 0, "{broken}");
    assert_eq!(d1["suspected_broken"], serde_json::Value::Null);
    assert_eq!(d1["recent_rollbacks"], 0);

    let table = h.aloft(&["device", "list"]).await.ok();
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID "));
    assert!(table.contains("dev-1") && table.contains("registered") && table.contains("never"));

    let show = h.aloft(&["device", "show", "dev-1"]).await.ok();
    assert!(
        show.contains("dev-1") && show.contains("Europe/Berlin"),
        "{show}"
    );
    h.aloft(&["device", "show", "nope"])
        .await
        .fails(1, &["showing device nope", "not found"]);

    h.aloft(&["device", "revoke", "dev-1"]).await.ok();
    let shown = h.aloft(&["device", "show", "dev-1", "--json"]).await.json();
    assert_eq!(shown["revoked"], true);
    h.aloft(&["device", "revoke", "ghost"])
        .await
        .fails(1, &["not found"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_and_missing_tokens() {
    let h = Harness::plaintext().await;
    h.install_trust_root().await;
    provision(&h, "dev-1").await;

    let created = h
        .aloft(&[
            "token", "create", "--name", "dash", "--role", "viewer", "--json",
        ])
        .await
        .json();
    assert_eq!(created["role"], "viewer");
    assert_eq!(created["name"], "dash");
    let viewer = created["token"].as_str().unwrap().to_owned();
    let viewer_id = created["id"].as_str().unwrap().to_owned();

    // Human output: only the secret on stdout.
    let secret = h
        .aloft(&["token", "create", "--name", "ops", "--role", "operator"])
        .await
        .ok();
    let operator = secret.trim().to_owned();
    assert!(!operator.is_empty() && !operator.contains(' '), "{secret}");

    // A viewer may read but not revoke.
    h.aloft_as(Some(&viewer), &["device", "list"]).await.ok();
    h.aloft_as(Some(&viewer), &["device", "revoke", "dev-1"])
        .await
        .fails(1, &["revoking device dev-1", "role"]);
    let shown = h.aloft(&["device", "show", "dev-1", "--json"]).await.json();
    assert_eq!(shown["revoked"], false);
    // An operator may not create tokens.
    h.aloft_as(
        Some(&operator),
        &["token", "create", "--name", "x", "--role", "admin"],
    )
    .await
    .fails(1, &["role"]);

    // Listing shows the tokens, never their secrets.
    let listed = h.aloft(&["token", "list", "--json"]).await.json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"dash") && names.contains(&"ops"),
        "{listed}"
    );
    let text = h.aloft(&["token", "list"]).await.ok();
    assert!(!text.contains(&viewer) && !text.contains(&operator) && !text.contains(&h.admin_token));

    // A revoked token stops working.
    h.aloft(&["token", "revoke", &viewer_id]).await.ok();
    h.aloft_as(Some(&viewer), &["device", "list"])
        .await
        .fails(1, &["refused the token", "--token-file"]);

    // Missing, wrong and file tokens.
    h.aloft_as(None, &["device", "list"])
        .await
        .fails(1, &["no operator token", "ALOFT_TOKEN"]);
    let err = h
        .aloft_as(Some("not-a-real-token"), &["device", "list"])
        .await
        .fails(1, &["refused the token"]);
    assert!(
        !err.contains("not-a-real-token"),
        "the token was echoed: {err}"
    );
    let token_file = h.path("token");
    std::fs::write(&token_file, format!("  {}\n", h.admin_token)).unwrap();
    h.aloft_as(
        Some("wrong"),
        &["device", "list", "--token-file", &token_file],
    )
    .await
    .ok();
}

/// Builds a release bundle for `image`, signed by `release_key`.
fn release_bundle(release_key: &SecretKey, release_id: &str, image: &[u8]) -> pb::ReleaseBundle {
    let content_key = ContentKey::from_bytes(SecretKey::generate().to_bytes());
    let nonce_prefix = NoncePrefix::from_bytes([1, 2, 3, 4, 5, 6, 7]);
    let image_digest = Digest::of(image);
    let chunk_size = 1024;
    let manifest = pb::ReleaseManifest {
        release_id: release_id.into(),
        product: "sensor".into(),
        hardware: vec!["rev-b".into()],
        version: "1.1.0".into(),
        security_version: 2,
        image_len: image.len() as u64,
        image_sha256: image_digest.as_bytes().to_vec(),
        chunk_size,
        nonce_prefix: nonce_prefix.as_bytes().to_vec(),
        created_at: now(),
        expires_at: now() + 86_400,
        ..Default::default()
    };
    let params = PayloadParams {
        image_len: image.len() as u64,
        chunk_size,
        nonce_prefix,
        image_digest,
    };
    let payload = encrypt_payload(&content_key, &params, image).unwrap();
    pb::ReleaseBundle {
        manifest: Some(seal(&manifest, Domain::ReleaseManifest, &[release_key])),
        content_key: content_key.expose().to_vec(),
        payload,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upload_and_list() {
    let h = Harness::plaintext().await;
    let release_key = h.install_trust_root().await;
    let info = h.aloft(&["server", "info", "--json"]).await.json();
    assert_eq!(info["trust_root"]["version"], 1);
    assert_eq!(info["trust_root"]["lists_server_key"], true);

    // 200 KiB: several 64 KiB upload parts.
    let image: Vec<u8> = (0..200 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let bundle = release_bundle(&release_key, "sensor-1.1.0", &image);
    let payload_len = bundle.payload.len() as u64;
    let file = h.path("sensor-1.1.0.bundle");
    std::fs::write(&file, bundle.encode_to_vec()).unwrap();
    let uploaded = h
        .aloft(&["release", "upload", &file, "--json"])
        .await
        .json();
    assert_eq!(uploaded["id"], "sensor-1.1.0");
    assert_eq!(uploaded["image_len"], image.len() as u64);

    let releases = h.aloft(&["release", "list", "--json"]).await.json();
    let r = &releases.as_array().unwrap()[0];
    assert_eq!(r["id"], "sensor-1.1.0");
    assert_eq!(r["version"], "1.1.0");
    assert_eq!(r["payload_len"], payload_len);
    let table = h.aloft(&["release", "list"]).await.ok();
    assert!(
        table.contains("sensor-1.1.0") && table.contains("rev-b"),
        "{table}"
    );

    // A release signed by a key the TrustRoot does not list is refused.
    let rogue = release_bundle(&SecretKey::generate(), "sensor-rogue", &image);
    let rogue_file = h.path("rogue.bundle");
    std::fs::write(&rogue_file, rogue.encode_to_vec()).unwrap();
    h.aloft(&["release", "upload", &rogue_file])
        .await
        .fails(1, &["uploading"]);
    let releases = h.aloft(&["release", "list", "--json"]).await.json();
    assert_eq!(releases.as_array().unwrap().len(), 1);

    // A file that is not a bundle never reaches the server.
    let junk = h.path("junk.bundle");
    std::fs::write(&junk, b"\xff\xff\xffjunk").unwrap();
    h.aloft(&["release", "upload", &junk])
        .await
        .fails(1, &["not a release bundle"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_pinned_ca() {
    let h = Harness::tls().await;
    let info = h.aloft(&["server", "info", "--json"]).await.json();
    assert_eq!(
        info["server_public_key"].as_str().unwrap(),
        hex::encode(h.server().server_public_key().to_sec1_compressed())
    );

    // Provisioning over TLS copies the pinned CA into the identity.
    h.install_trust_root().await;
    let dir = provision(&h, "tls-dev").await;
    let bundle = read_identity(&dir);
    assert!(bundle.server_url.starts_with("https://localhost:"));
    assert_eq!(
        bundle.ca_pem,
        std::fs::read_to_string(h.ca.as_ref().unwrap()).unwrap()
    );

    // https without a pinned CA is refused before connecting.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aloft"));
    cmd.env_remove("ALOFT_CA")
        .env("ALOFT_TOKEN", &h.admin_token)
        .args(["--server", &h.url, "server", "info"]);
    Run::from(cmd.output().await.unwrap(), &["server", "info"]).fails(1, &["--ca"]);

    // A CA that did not issue the server's certificate fails the handshake.
    let (other_ca, _, _) = tls_material(&["localhost"]);
    let other = h.path("other-ca.pem");
    std::fs::write(&other, other_ca).unwrap();
    h.aloft(&["--ca", &other, "server", "info"])
        .await
        .fails(1, &["could not connect to", &h.url]);
}

#[tokio::test]
async fn unreachable_server_is_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_aloft"))
        .env_remove("ALOFT_CA")
        .args(["--server", &url, "--token", "t", "device", "list"])
        .output()
        .await
        .unwrap();
    Run::from(output, &["device", "list"]).fails(1, &["could not connect to", &url]);

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_aloft"))
        .env_remove("ALOFT_SERVER")
        .args(["--token", "t", "device", "list"])
        .output()
        .await
        .unwrap();
    Run::from(output, &["device", "list"]).fails(1, &["--server", "ALOFT_SERVER"]);
}

// ---- rollouts ----

/// Installs a TrustRoot, uploads release `sensor-1.1.0` and provisions
/// devices `d1` and `d2` (test devices matching the release's product).
async fn rollout_fixture(h: &Harness) {
    let release_key = h.install_trust_root().await;
    let image: Vec<u8> = (0..4096u32).map(|i| (i * 13) as u8).collect();
    let bundle = release_bundle(&release_key, "sensor-1.1.0", &image);
    let file = h.path("sensor-1.1.0.bundle");
    std::fs::write(&file, bundle.encode_to_vec()).unwrap();
    h.aloft(&["release", "upload", &file]).await.ok();
    provision(h, "d1").await;
    provision(h, "d2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_create_list_status_pause_resume_cancel() {
    let h = Harness::plaintext().await;
    rollout_fixture(&h).await;

    // The fleet view: both devices on their factory version, never seen.
    let fleet = h.aloft(&["fleet", "--json"]).await.json();
    assert_eq!(fleet.as_array().unwrap().len(), 1, "{fleet}");
    assert_eq!(fleet[0]["version"], "1.0.0");
    assert_eq!(fleet[0]["devices"], 2);
    assert_eq!(fleet[0]["stale"], 2);
    assert_eq!(fleet[0]["test_devices"], 2);
    let table = h.aloft(&["fleet", "--selector", "id=d1"]).await.ok();
    assert!(
        table.contains("1.0.0") && table.starts_with("FIRMWARE"),
        "{table}"
    );

    // Refused locally with a usage error naming what was wrong.
    h.aloft(&[
        "rollout",
        "create",
        "r0",
        "--release",
        "sensor-1.1.0",
        "--stages",
        "50%,10%",
    ])
    .await
    .fails(2, &["does not exceed the previous stage's 50%"]);
    h.aloft(&[
        "rollout",
        "create",
        "r0",
        "--release",
        "sensor-1.1.0",
        "--window",
        "02:00-02:00",
    ])
    .await
    .fails(2, &["window would be empty"]);

    let created = h
        .aloft(&[
            "rollout",
            "create",
            "r1",
            "--release",
            "sensor-1.1.0",
            "--selector",
            "product=sensor",
            "--stages",
            "test,canary=10%:soak=4h:max-failure=2.5%,100%",
            "--window",
            "02:00-04:00",
            "--max-concurrent",
            "5",
            "--json",
        ])
        .await
        .json();
    assert_eq!(created["id"], "r1");
    assert_eq!(created["release"], "sensor-1.1.0");
    assert_eq!(created["state"], "active");
    assert_eq!(created["window"], "02:00-04:00");
    assert_eq!(created["max_concurrent"], 5);
    let stages = created["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3);
    assert_eq!(stages[0]["test_devices_only"], true);
    assert_eq!(stages[1]["name"], "canary");
    assert_eq!(stages[1]["percent"], 10);
    assert_eq!(stages[1]["soak_secs"], 4 * 3600);
    assert_eq!(stages[1]["max_failure_permille"], 25);
    assert_eq!(stages[2]["soak_secs"], 3600);

    // The server's refusals come back named.
    h.aloft(&["rollout", "create", "r1", "--release", "sensor-1.1.0"])
        .await
        .fails(1, &["creating rollout r1", "already exists"]);
    h.aloft(&["rollout", "create", "r2", "--release", "no-such-release"])
        .await
        .fails(1, &["creating rollout r2", "no-such-release"]);
    h.aloft(&[
        "rollout",
        "create",
        "r2",
        "--release",
        "sensor-1.1.0",
        "--selector",
        "colour=red",
    ])
    .await
    .fails(1, &["creating rollout r2", "invalid selector"]);
    h.aloft(&["rollout", "status", "nope"])
        .await
        .fails(1, &["showing rollout nope", "not found"]);

    // A paused start, shown in the table form.
    let table = h
        .aloft(&[
            "rollout",
            "create",
            "r2",
            "--release",
            "sensor-1.1.0",
            "--paused",
        ])
        .await
        .ok();
    assert!(
        table.contains("state:") && table.contains("paused"),
        "{table}"
    );
    assert!(table.contains("ROLLED BACK"), "{table}");

    let list = h.aloft(&["rollout", "list", "--json"]).await.json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r1", "r2"]);
    let table = h.aloft(&["rollout", "list"]).await.ok();
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains("r1") && table.contains("1/3 test"),
        "{table}"
    );

    let paused = h
        .aloft(&["rollout", "pause", "r1", "--reason", "bad batch", "--json"])
        .await
        .json();
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["pause_reason"], "bad batch");
    let status = h.aloft(&["rollout", "status", "r1"]).await.ok();
    assert!(status.contains("pause reason:  bad batch"), "{status}");
    assert!(status.contains("02:00-04:00 device-local time"), "{status}");
    assert!(
        status.contains("at most 5 concurrent downloads"),
        "{status}"
    );
    assert!(status.contains("canary"), "{status}");

    let resumed = h.aloft(&["rollout", "resume", "r1", "--json"]).await.json();
    assert_eq!(resumed["state"], "active");
    assert_eq!(resumed["pause_reason"], Value::Null);

    let cancelled = h.aloft(&["rollout", "cancel", "r1", "--json"]).await.json();
    assert_eq!(cancelled["state"], "cancelled");
    h.aloft(&["rollout", "resume", "r1"])
        .await
        .fails(1, &["resuming rollout r1", "ended"]);
    let status = h.aloft(&["rollout", "status", "r1", "--json"]).await.json();
    assert_eq!(status["state"], "cancelled");

    // Viewers may look but not steer.
    let viewer = h
        .aloft(&[
            "token", "create", "--name", "v", "--role", "viewer", "--json",
        ])
        .await
        .json();
    let viewer = viewer["token"].as_str().unwrap();
    h.aloft_as(Some(viewer), &["rollout", "status", "r2"])
        .await
        .ok();
    h.aloft_as(Some(viewer), &["rollout", "resume", "r2"])
        .await
        .fails(1, &["resuming rollout r2", "role"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_exclude_force_retry_devices() {
    let h = Harness::plaintext().await;
    rollout_fixture(&h).await;
    h.aloft(&[
        "rollout",
        "create",
        "r1",
        "--release",
        "sensor-1.1.0",
        "--stages",
        "test,100%",
    ])
    .await
    .ok();
    let excluded = h
        .aloft(&["rollout", "exclude", "r1", "d1", "--json"])
        .await
        .json();
    assert_eq!(excluded["id"], "r1");
    h.aloft(&["rollout", "force", "r1", "d2", "--json"])
        .await
        .json();
    h.aloft(&["rollout", "retry", "r1", "d2"]).await.ok();
    h.aloft(&["rollout", "exclude", "r1", "no-such-device"])
        .await
        .fails(1, &["excluding device no-such-device in rollout r1"]);
    h.aloft(&["rollout", "exclude", "nope", "d1"])
        .await
        .fails(1, &["rollout nope"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_advance_and_retry_failed() {
    let h = Harness::plaintext().await;
    rollout_fixture(&h).await;
    h.aloft(&[
        "rollout",
        "create",
        "r1",
        "--release",
        "sensor-1.1.0",
        "--stages",
        "test,10%,100%",
    ])
    .await
    .ok();
    let advanced = h
        .aloft(&["rollout", "advance", "r1", "--json"])
        .await
        .json();
    assert_eq!(advanced["current_stage"], 1);
    assert_eq!(advanced["current_stage_name"], "10%");
    let retried = h
        .aloft(&["rollout", "retry-failed", "r1", "--json"])
        .await
        .json();
    assert_eq!(retried["state"], "active");
    h.aloft(&["rollout", "advance", "nope"])
        .await
        .fails(1, &["advancing rollout nope"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_history_lists_samples_oldest_first() {
    let h = Harness::plaintext().await;
    rollout_fixture(&h).await;
    h.aloft(&[
        "rollout",
        "create",
        "r1",
        "--release",
        "sensor-1.1.0",
        "--stages",
        "test,100%",
    ])
    .await
    .ok();
    h.aloft(&["rollout", "pause", "r1"]).await.ok();
    h.aloft(&["rollout", "advance", "r1"]).await.ok();

    // Created, paused, advanced (still paused): each sampled at once.
    let history = h
        .aloft(&["rollout", "history", "r1", "--since", "1h", "--json"])
        .await
        .json();
    let samples = history.as_array().unwrap();
    let states: Vec<(&str, &str)> = samples
        .iter()
        .map(|s| {
            (
                s["state"].as_str().unwrap(),
                s["current_stage_name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("active", "test"), ("paused", "test"), ("paused", "100%")],
        "{history}"
    );
    let last = &samples[2];
    assert_eq!(last["stages"].as_array().unwrap().len(), 2, "{last}");
    assert_eq!(last["stages"][0]["stage"], "test");
    assert!(last["stages"][1]["targeted"].is_u64(), "{last}");
    assert!(last["totals"]["rolled_back"].is_u64(), "{last}");
    assert!(last["time"].as_u64().unwrap() > 0);
    assert!(last["time_utc"].as_str().unwrap().starts_with("20"));

    let table = h.aloft(&["rollout", "history", "r1"]).await.ok();
    assert!(table.starts_with("TIME (UTC)"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(
        table.contains("paused") && table.contains("100%"),
        "{table}"
    );
    h.aloft(&["rollout", "history", "nope"])
        .await
        .fails(1, &["history of rollout nope", "not found"]);
    h.aloft(&["rollout", "history", "r1", "--since", "24"])
        .await
        .fails(2, &["missing unit"]);
}

/// Reads one line of `child`'s stdout within 20 s.
async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Option<String> {
    tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
        .await
        .expect("watch printed nothing for 20 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_watch_follows_events_until_cancelled() {
    use tokio::io::AsyncBufReadExt as _;
    let h = Harness::plaintext().await;
    rollout_fixture(&h).await;
    h.aloft(&["rollout", "create", "r1", "--release", "sensor-1.1.0"])
        .await
        .ok();

    let started = std::time::Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aloft"))
        .env_remove("ALOFT_CA")
        .env("ALOFT_SERVER", &h.url)
        .env("ALOFT_TOKEN", &h.admin_token)
        .args(["rollout", "watch", "r1", "--json", "--interval", "1s"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // The first line is the status, printed once the stream is subscribed.
    let first: Value = serde_json::from_str(&next_line(&mut lines).await.unwrap()).unwrap();
    assert_eq!(first["type"], "status");
    assert_eq!(first["rollout"]["state"], "active");

    h.aloft(&["rollout", "pause", "r1", "--reason", "look"])
        .await
        .ok();
    // The pause shows up as an event and then as a refreshed status.
    let mut seen: Vec<Value> = Vec::new();
    while !seen
        .iter()
        .any(|l| l["type"] == "status" && l["rollout"]["state"] == "paused")
    {
        let line = next_line(&mut lines).await.expect("watch ended early");
        seen.push(serde_json::from_str(&line).unwrap());
    }
    h.aloft(&["rollout", "cancel", "r1"]).await.ok();
    while let Some(line) = next_line(&mut lines).await {
        seen.push(serde_json::from_str(&line).unwrap());
    }
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let events: Vec<&Value> = seen.iter().filter(|l| l["type"] == "event").collect();
    assert!(!events.is_empty(), "no events in {seen:?}");
    assert!(events.iter().all(|e| e["rollout"] == "r1"), "{events:?}");
    assert!(
        events.iter().any(|e| e["kind"] == "rollout_state"),
        "{events:?}"
    );
    assert_eq!(
        seen.last().unwrap(),
        &serde_json::json!({"type": "end", "reason": "cancelled"})
    );
    eprintln!("watch: {} lines in {:?}", seen.len() + 1, started.elapsed());

    // Ctrl-C (SIGINT) ends a watch cleanly.
    h.aloft(&["rollout", "create", "r2", "--release", "sensor-1.1.0"])
        .await
        .ok();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aloft"))
        .env_remove("ALOFT_CA")
        .env("ALOFT_SERVER", &h.url)
        .env("ALOFT_TOKEN", &h.admin_token)
        .args(["rollout", "watch", "r2", "--json"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&next_line(&mut lines).await.unwrap()).unwrap();
    assert_eq!(first["type"], "status");
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let last: Value = serde_json::from_str(&next_line(&mut lines).await.unwrap()).unwrap();
    assert_eq!(
        last,
        serde_json::json!({"type": "end", "reason": "interrupted"})
    );
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    // Plain lines when stdout is not a terminal; an ended rollout ends at once.
    let out = h.aloft(&["rollout", "watch", "r1"]).await.ok();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("status  cancelled"), "{out}");
    assert_eq!(lines.last().unwrap(), &"watch ended: cancelled");
    h.aloft(&["rollout", "watch", "nope"])
        .await
        .fails(1, &["watching rollout nope", "not found"]);
}

// ---- what a newcomer trips over (issue 18) ----

mod pty;

/// Waits up to 20 s for `needle` in what the pty received so far.
async fn wait_for_screen(pty: &pty::Pty, needle: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !String::from_utf8_lossy(&pty.output()).contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} never reached the terminal; it got:\n{}",
            String::from_utf8_lossy(&pty.output())
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// What a `cols` x 24 terminal shows after `bytes`, row by row, with the
/// rows that wrapped into the next one.
fn screen_rows(bytes: &[u8], cols: u16) -> (Vec<String>, Vec<usize>) {
    let mut parser = vt100::Parser::new(
        std::num::NonZeroU16::new(24).unwrap(),
        std::num::NonZeroU16::new(cols).unwrap(),
        0,
    );
    parser.process(bytes);
    let screen = parser.screen();
    let rows: Vec<String> = screen.rows(0, cols).collect();
    let wrapped = (0..24u16)
        .filter(|r| screen.row_wrapped(*r))
        .map(usize::from)
        .collect();
    (rows, wrapped)
}

/// Checks that the screen holds exactly one rollout block for `id`, with
/// `stages`, and that no row wrapped; returns the screen's rows.
fn one_picture(bytes: &[u8], cols: u16, id: &str, stages: &[&str]) -> Result<Vec<String>, String> {
    let (rows, wrapped) = screen_rows(bytes, cols);
    let picture = rows.join("\n");
    if !wrapped.is_empty() {
        return Err(format!("rows {wrapped:?} wrapped:\n{picture}"));
    }
    let headers = rows
        .iter()
        .filter(|r| r.starts_with(&format!("rollout {id} ")))
        .count();
    if headers != 1 {
        return Err(format!("{headers} rollout blocks:\n{picture}"));
    }
    for stage in stages {
        let shown = rows
            .iter()
            .filter(|r| {
                r.get(2..)
                    .is_some_and(|r| r.starts_with(&format!("{stage} ")))
            })
            .count();
        if shown != 1 {
            return Err(format!("stage {stage} shown {shown} times:\n{picture}"));
        }
    }
    let headings = rows
        .iter()
        .filter(|r| r.trim_start().starts_with("STAGE"))
        .count();
    if headings != 1 {
        return Err(format!("{headings} column headings:\n{picture}"));
    }
    Ok(rows)
}

/// Waits up to 10 s for the terminal to show one picture for which `want`
/// holds (a snapshot may fall between the erase and the redraw).
async fn wait_for_picture(
    pty: &pty::Pty,
    cols: u16,
    id: &str,
    stages: &[&str],
    want: impl Fn(&[String]) -> Result<(), String>,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let result = one_picture(&pty.output(), cols, id, stages)
            .and_then(|rows| want(&rows).map(|()| rows));
        match result {
            Ok(rows) => return rows,
            Err(why) if std::time::Instant::now() >= deadline => panic!("{why}"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

/// Runs `aloft rollout watch ID` on a `cols` x 24 pty through a pause with
/// a reason too long for the line, a resume and a cancel, checking after
/// each that the terminal shows one up-to-date picture.
async fn watch_on_a_terminal(h: &Harness, id: &str, cols: u16) {
    const STAGES: &[&str] = &["test", "canary", "100%"];
    h.aloft(&[
        "rollout",
        "create",
        id,
        "--release",
        "sensor-1.1.0",
        "--stages",
        "test,canary=10%,100%",
    ])
    .await
    .ok();
    let pty = pty::Pty::open(cols, 24);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aloft"))
        .env_remove("ALOFT_CA")
        .env_remove("NO_COLOR")
        .env_remove("COLUMNS")
        .env_remove("LINES")
        .env("TERM", "xterm")
        .env("ALOFT_SERVER", &h.url)
        .env("ALOFT_TOKEN", &h.admin_token)
        .args(["rollout", "watch", id, "--interval", "1s"])
        .stdin(std::process::Stdio::null())
        .stdout(pty.terminal())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_screen(&pty, &format!("rollout {id} ")).await;

    let reason = "waiting for the field team to confirm that the lab devices rebooted cleanly \
                  after the power cut";
    h.aloft(&["rollout", "pause", id, "--reason", reason])
        .await
        .ok();
    wait_for_screen(&pty, "paused  stage").await;
    // A periodic redraw (every second) of the paused rollout, in place, its
    // reason cut to the line.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    wait_for_picture(&pty, cols, id, STAGES, |rows| {
        let header = rows.iter().find(|r| r.starts_with("rollout ")).unwrap();
        let reason_row = rows.iter().find(|r| r.starts_with("pause reason: waiting"));
        match reason_row {
            Some(r) if header.contains("paused") && r.ends_with('…') => Ok(()),
            _ => Err(format!(
                "not paused with an elided reason:\n{}",
                rows.join("\n")
            )),
        }
    })
    .await;

    h.aloft(&["rollout", "resume", id]).await.ok();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    h.aloft(&["rollout", "cancel", id]).await.ok();
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("watch did not end after the cancel")
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    let bytes = pty.finish();
    let text = String::from_utf8_lossy(&bytes);
    let redraws = text.matches(&format!("rollout {id} ")).count();
    assert!(redraws >= 5, "only {redraws} redraws:\n{text}");

    // The last picture: one block, up to date, the watch's last word below it.
    let rows = one_picture(&bytes, cols, id, STAGES).unwrap_or_else(|why| panic!("{why}"));
    eprintln!("{cols} columns, at the end:\n{}", rows.join("\n"));
    let header = rows.iter().find(|r| r.starts_with("rollout ")).unwrap();
    assert!(header.contains("cancelled"), "{header}");
    let shown: Vec<&String> = rows.iter().filter(|r| !r.trim().is_empty()).collect();
    assert_eq!(
        shown.last().map(|r| r.as_str()),
        Some("watch ended: cancelled"),
        "{}",
        rows.join("\n")
    );
    assert!(
        !rows.iter().any(|r| r.starts_with("pause reason")),
        "the picture is not up to date:\n{}",
        rows.join("\n")
    );
    // The events scrolled above the block, each on one row.
    assert!(
        rows.iter().any(|r| r.contains("rollout_state")),
        "{}",
        rows.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_watch_draws_one_picture_on_a_terminal() {
    let h = Harness::plaintext().await;
    rollout_fixture(&h).await;
    watch_on_a_terminal(&h, "r80", 80).await;
    // Narrower than the full table: columns go, nothing wraps.
    watch_on_a_terminal(&h, "r50", 50).await;
}

/// `device provision` refuses missing and malformed inputs itself, before
/// the server is asked: this server has no TrustRoot, so any refusal that
/// came from it would be "no TrustRoot" instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_checks_its_inputs_before_the_server() {
    let h = Harness::plaintext().await;
    let out = h.path("dev-1");
    let provision = |extra: &[&'static str]| {
        let mut args = vec!["device", "provision", "--id", "dev-1", "--out", &out];
        args.extend_from_slice(extra);
        args
    };
    let attrs = &["--attr", "product=sensor", "--attr", "hardware=rev-b"];
    let attrs_v1 = &[
        "--attr",
        "product=sensor",
        "--attr",
        "hardware=rev-b",
        "--factory-version",
        "1.0.0",
    ];

    // The flag is named, as a usage error; nothing was written.
    let err = h
        .aloft(&provision(attrs))
        .await
        .fails(2, &["required", "--factory-version <V>"]);
    assert!(!err.contains("rejected"), "{err}");
    assert!(!Path::new(&out).exists());
    // Even with no server to ask.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_aloft"))
        .env_remove("ALOFT_CA")
        .args(["--server", "http://127.0.0.1:1", "--token", "t"])
        .args(provision(attrs))
        .output()
        .await
        .unwrap();
    Run::from(output, &["device", "provision"]).fails(2, &["--factory-version"]);
    let mut bad_version = provision(attrs);
    bad_version.extend(["--factory-version", "1.0"]);
    h.aloft(&bad_version)
        .await
        .fails(2, &["\"1.0\" is not a version", "MAJOR.MINOR.PATCH"]);
    let mut bad_id = provision(attrs_v1);
    bad_id[3] = "dev 1";
    h.aloft(&bad_id)
        .await
        .fails(2, &["\"dev 1\" is not a valid device id"]);

    // Product and hardware are required by the server: said here.
    h.aloft(&provision(&["--factory-version", "1.0.0"]))
        .await
        .fails(
            1,
            &["--attr product=NAME and --attr hardware=REVISION", "e.g."],
        );
    h.aloft(&provision(&[
        "--factory-version",
        "1.0.0",
        "--attr",
        "product=sensor",
    ]))
    .await
    .fails(1, &["provisioning needs --attr hardware=REVISION"]);

    // What the device is given must work for it.
    let mut url = provision(attrs_v1);
    url.extend(["--device-server-url", "localhost:7443"]);
    h.aloft(&url)
        .await
        .fails(1, &["--device-server-url", "https://localhost:7443"]);
    let mut tls = provision(attrs_v1);
    tls.extend(["--device-server-url", "https://localhost:7443"]);
    h.aloft(&tls)
        .await
        .fails(1, &["no CA to pin", "--device-ca"]);
    let key = h.path("server.key");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMC4=\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let mut ca = provision(attrs_v1);
    ca.extend(["--device-ca", &key]);
    h.aloft(&ca)
        .await
        .fails(1, &["--device-ca", "a private key, not a certificate"]);
    assert!(!Path::new(&out).join("identity.pb").exists());

    // With everything given, the server's own precondition is named.
    h.aloft(&provision(attrs_v1))
        .await
        .fails(1, &["no TrustRoot", "aloft trust-root set"]);
}
