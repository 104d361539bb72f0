//! The factory station through the `aloft` binary against a real server on
//! 127.0.0.1: templates, devices that make their own keys and registration
//! requests (aloft-agent's enroll), `device register` and its refusals
//! (tampered, replayed, wrong signature, other id, stale, future, id taken,
//! payload profile), `device import` of a thousand requests (the rate is
//! printed, not asserted), the factory role's every refusal, products and
//! signature-only releases, and a factory rollout taken by a batch of
//! simulated devices that the station waits for (`device wait
//! --confirmed`).

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aloft_agent::enroll::{EnrollOptions, enroll, request_line};
use aloft_protocol::envelope::seal;
use aloft_protocol::keys::Domain;
use aloft_protocol::payload::{PayloadParams, encrypt_payload};
use aloft_protocol::prost::Message as _;
use aloft_protocol::registration::{self, NONCE_LEN};
use aloft_protocol::{ContentKey, Digest, NoncePrefix, SecretKey, UnixTime, Version, pb};
use aloft_server::{RunningServer, ServerConfig};
use serde_json::Value;
use tempfile::TempDir;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Harness {
    server: Option<RunningServer>,
    dir: TempDir,
    url: String,
    admin_token: String,
}

impl Harness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
        // Sessions end quickly so devices re-hello (offers come with hellos).
        config.limits.next_check_in_secs = 1;
        let server = aloft_server::start(config).await.unwrap();
        let url = format!("http://{}", server.local_addr());
        let admin_token = server.admin_token().to_owned();
        Self {
            server: Some(server),
            dir,
            url,
            admin_token,
        }
    }

    fn server(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    async fn aloft(&self, args: &[&str]) -> Run {
        self.aloft_as(&self.admin_token, args).await
    }

    async fn aloft_as(&self, token: &str, args: &[&str]) -> Run {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aloft"));
        cmd.env_remove("ALOFT_CA")
            .env("ALOFT_SERVER", &self.url)
            .env("ALOFT_TOKEN", token)
            .args(args);
        Run::from(cmd.output().await.unwrap(), args)
    }

    /// Installs a TrustRoot; returns the root and release keys.
    async fn install_trust_root(&self) -> (pb::SignedEnvelope, SecretKey) {
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
        let envelope = seal(&trust, Domain::TrustRoot, &[&root]);
        let path = self.path("trust-root.pb");
        std::fs::write(&path, envelope.encode_to_vec()).unwrap();
        self.aloft(&["trust-root", "set", &path]).await.ok();
        (envelope, release)
    }

    async fn factory_token(&self, name: &str) -> String {
        let out = self
            .aloft(&["token", "create", "--name", name, "--role", "factory"])
            .await
            .ok();
        out.trim().to_owned()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(server) = self.server.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(server.shutdown());
        }
    }
}

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

    fn json(self) -> Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
    }

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

/// What the server answers a factory token for a call outside its role.
const DENIED: &str = "the token's role is not allowed to do this";

/// A registration request for `id` signed by `key` (what a device makes).
fn request(
    id: &str,
    key: &SecretKey,
    created_at: u64,
    payloads: pb::PayloadSupport,
) -> pb::SignedRegistration {
    // Random bytes (a fresh key's scalar serves).
    let nonce = SecretKey::generate().to_bytes()[..NONCE_LEN].to_vec();
    registration::seal(
        &pb::DeviceRegistration {
            device_id: id.into(),
            public_key: key.public_key().to_sec1_compressed().to_vec(),
            attributes: [
                ("product".to_owned(), "sensor".to_owned()),
                ("hardware".to_owned(), "rev-b".to_owned()),
            ]
            .into_iter()
            .collect(),
            factory_version: "1.0.0".into(),
            created_at,
            nonce,
            payloads: payloads as i32,
        },
        key,
    )
}

fn fresh(id: &str) -> pb::SignedRegistration {
    request(
        id,
        &SecretKey::generate(),
        now(),
        pb::PayloadSupport::EncryptedOnly,
    )
}

/// Writes one request line to `name` in the harness directory.
fn request_file(h: &Harness, name: &str, id: &str, r: &pb::SignedRegistration) -> String {
    let path = h.path(name);
    std::fs::write(&path, request_line(id, r) + "\n").unwrap();
    path
}

fn enroll_opts() -> EnrollOptions {
    EnrollOptions {
        factory_version: Version::new(1, 0, 0),
        payloads: None,
        now: UnixTime(now()),
    }
}

/// A release bundle of `image` for sensor/rev-b, encrypted or signature-only.
fn release_bundle(
    release_key: &SecretKey,
    id: &str,
    version: &str,
    image: &[u8],
    signature_only: bool,
) -> pb::ReleaseBundle {
    let content_key = ContentKey::from_bytes(SecretKey::generate().to_bytes());
    let nonce_prefix = NoncePrefix::from_bytes([1, 2, 3, 4, 5, 6, 7]);
    let image_digest = Digest::of(image);
    let chunk_size = 1024;
    let mut manifest = pb::ReleaseManifest {
        release_id: id.into(),
        product: "sensor".into(),
        hardware: vec!["rev-b".into()],
        version: version.into(),
        security_version: 1,
        image_len: image.len() as u64,
        image_sha256: image_digest.as_bytes().to_vec(),
        chunk_size,
        nonce_prefix: nonce_prefix.as_bytes().to_vec(),
        created_at: now(),
        expires_at: now() + 86_400,
        ..Default::default()
    };
    if signature_only {
        let (root, payload) =
            aloft_protocol::signed_chunks::build_payload(image, chunk_size).unwrap();
        manifest.payload_encoding = pb::PayloadEncoding::SignatureOnly as i32;
        manifest.chunk_root = root.as_bytes().to_vec();
        manifest.nonce_prefix.clear();
        return pb::ReleaseBundle {
            manifest: Some(seal(&manifest, Domain::ReleaseManifest, &[release_key])),
            content_key: Vec::new(),
            payload,
        };
    }
    let params = PayloadParams {
        image_len: image.len() as u64,
        chunk_size,
        nonce_prefix,
        image_digest,
    };
    pb::ReleaseBundle {
        manifest: Some(seal(&manifest, Domain::ReleaseManifest, &[release_key])),
        content_key: content_key.expose().to_vec(),
        payload: encrypt_payload(&content_key, &params, image).unwrap(),
    }
}

fn write_bundle(h: &Harness, name: &str, bundle: &pb::ReleaseBundle) -> String {
    let path = h.path(name);
    std::fs::write(&path, bundle.encode_to_vec()).unwrap();
    path
}

fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + i / 97) as u8).collect()
}

/// `aloft device template` for `id` with the factory token; its directory.
async fn template(h: &Harness, token: &str, id: &str) -> PathBuf {
    let out = h.path(&format!("devices/{id}"));
    h.aloft_as(
        token,
        &[
            "device",
            "template",
            "--id",
            id,
            "--attr",
            "product=sensor",
            "--attr",
            "hardware=rev-b",
            "--out",
            &out,
        ],
    )
    .await
    .ok();
    PathBuf::from(out)
}

fn device_count(v: &Value) -> usize {
    v.as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_made_key_registers_from_its_request_and_bad_requests_are_refused() {
    let h = Harness::start().await;
    h.install_trust_root().await;
    let station = h.factory_token("line-3").await;

    // The station writes a template (it may read the server's TrustRoot);
    // the device makes its key into it and emits its request.
    let dir = template(&h, &station, "dev-1").await;
    let bundle =
        pb::IdentityBundle::decode(std::fs::read(dir.join("identity.pb")).unwrap().as_slice())
            .unwrap();
    assert!(bundle.private_key.is_empty(), "a template has no key");
    assert!(bundle.trust_root.is_some());
    let enrolled = enroll(&dir.join("identity.pb"), &enroll_opts()).unwrap();
    let file = request_file(&h, "dev-1.json", "dev-1", &enrolled.request);

    let d = h
        .aloft_as(
            &station,
            &["device", "register", "--request", &file, "--json"],
        )
        .await
        .json();
    assert_eq!(d["id"], "dev-1");
    assert_eq!(d["key_origin"], "on_device");
    assert_eq!(
        d["public_key"],
        hex::encode(enrolled.identity.public_key().to_sec1_compressed())
    );
    // Its own registration is what a factory token may read.
    let shown = h
        .aloft_as(&station, &["device", "show", "dev-1", "--json"])
        .await
        .json();
    assert_eq!(shown["registered_by"], d["registered_by"]);

    // Replayed: the same request again.
    h.aloft_as(&station, &["device", "register", "--request", &file])
        .await
        .fails(1, &["replayed registration request", "dev-1"]);

    // Tampered: one byte of the signed payload changed on the way.
    let mut tampered = fresh("dev-2");
    let last = tampered.payload.len() - 1;
    tampered.payload[last] ^= 1;
    let f = request_file(&h, "tampered.json", "dev-2", &tampered);
    h.aloft_as(&station, &["device", "register", "--request", &f])
        .await
        .fails(1, &["not signed by the key it names"]);

    // Wrong signature: signed by another key than the one it names.
    let named = SecretKey::generate();
    let mut wrong = request("dev-3", &named, now(), pb::PayloadSupport::EncryptedOnly);
    let other = request(
        "dev-3",
        &SecretKey::generate(),
        now(),
        pb::PayloadSupport::EncryptedOnly,
    );
    wrong.signature = aloft_protocol::SecretKey::generate()
        .sign(Domain::DeviceRegistration, &wrong.payload)
        .as_bytes()
        .to_vec();
    let f = request_file(&h, "wrong.json", "dev-3", &wrong);
    h.aloft_as(&station, &["device", "register", "--request", &f])
        .await
        .fails(1, &["not signed by the key it names"]);
    // Another request's signature does not fit either.
    wrong.signature = other.signature;
    let f = request_file(&h, "swapped.json", "dev-3", &wrong);
    h.aloft_as(&station, &["device", "register", "--request", &f])
        .await
        .fails(1, &["not signed by the key it names"]);

    // For another device than the station says.
    let f = request_file(&h, "other.json", "", &fresh("dev-4"));
    h.aloft_as(
        &station,
        &["device", "register", "--request", &f, "--id", "dev-5"],
    )
    .await
    .fails(1, &["is for device dev-4, not dev-5"]);

    // Stale and future requests.
    let stale = request(
        "dev-6",
        &SecretKey::generate(),
        now() - 8 * 86_400,
        pb::PayloadSupport::EncryptedOnly,
    );
    let f = request_file(&h, "stale.json", "dev-6", &stale);
    h.aloft_as(&station, &["device", "register", "--request", &f])
        .await
        .fails(1, &["more than the 604800 s this server accepts"]);
    let future = request(
        "dev-7",
        &SecretKey::generate(),
        now() + 3600,
        pb::PayloadSupport::EncryptedOnly,
    );
    let f = request_file(&h, "future.json", "dev-7", &future);
    h.aloft_as(&station, &["device", "register", "--request", &f])
        .await
        .fails(1, &["in the future"]);

    // The id is taken (a new key for dev-1), and stays so after a revoke.
    let f = request_file(&h, "again.json", "dev-1", &fresh("dev-1"));
    h.aloft_as(&station, &["device", "register", "--request", &f])
        .await
        .fails(1, &["already registered", "never reused"]);
    h.aloft(&["device", "revoke", "dev-1"]).await.ok();
    h.aloft_as(&station, &["device", "register", "--request", &f])
        .await
        .fails(1, &["already registered"]);

    // A device that cannot decrypt, for a product whose releases are encrypted.
    let small = request(
        "dev-8",
        &SecretKey::generate(),
        now(),
        pb::PayloadSupport::SignatureOnly,
    );
    let f = request_file(&h, "small.json", "dev-8", &small);
    h.aloft_as(&station, &["device", "register", "--request", &f])
        .await
        .fails(
            1,
            &[
                "cannot decrypt",
                "aloft product set NAME --payloads signature-only",
            ],
        );
    // Once the product is declared signature-only, it registers.
    h.aloft(&["product", "set", "sensor", "--payloads", "signature-only"])
        .await
        .ok();
    let d = h
        .aloft_as(&station, &["device", "register", "--request", &f, "--json"])
        .await
        .json();
    assert_eq!(d["payloads"], "signature-only");

    // None of the refused ones exist.
    let ids: Vec<String> = h
        .aloft(&["device", "list", "--json"])
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["dev-1", "dev-8"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_factory_role_registers_devices_and_nothing_else() {
    let h = Harness::start().await;
    let (_, release_key) = h.install_trust_root().await;
    let station = h.factory_token("line-1").await;
    let listed = h.aloft(&["token", "list", "--json"]).await.json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "line-1" && t["role"] == "factory")
    );
    // Something of the operator's to reach for.
    let admin_dev = h.path("admin-dev");
    h.aloft(&[
        "device",
        "provision",
        "--id",
        "admin-dev",
        "--factory-version",
        "1.0.0",
        "--attr",
        "product=sensor",
        "--attr",
        "hardware=rev-b",
        "--out",
        &admin_dev,
    ])
    .await
    .ok();
    let bundle = write_bundle(
        &h,
        "r.bundle",
        &release_bundle(&release_key, "sensor-1.1.0", "1.1.0", &image(4000), false),
    );
    let bundle2 = write_bundle(
        &h,
        "r2.bundle",
        &release_bundle(&release_key, "sensor-1.2.0", "1.2.0", &image(4000), false),
    );
    h.aloft(&["release", "upload", &bundle]).await.ok();

    // Allowed: the server info, registering from requests, its own devices.
    let info = h
        .aloft_as(&station, &["server", "info", "--json"])
        .await
        .json();
    assert_eq!(info["trust_root"]["version"], 1);
    let f = request_file(&h, "own.json", "own-1", &fresh("own-1"));
    h.aloft_as(&station, &["device", "register", "--request", &f])
        .await
        .ok();
    h.aloft_as(&station, &["device", "show", "own-1"])
        .await
        .ok();

    // Refused, each: the same command succeeds with the admin token below.
    let out = h.path("fac-dev");
    let refusals: Vec<Vec<&str>> = vec![
        vec!["device", "list"],
        vec!["device", "show", "admin-dev"],
        vec!["release", "upload", &bundle2],
        vec!["release", "list"],
        vec!["rollout", "create", "r1", "--release", "sensor-1.1.0"],
        vec!["rollout", "list"],
        vec!["token", "create", "--name", "mine", "--role", "operator"],
        vec!["token", "list"],
        vec!["product", "set", "sensor"],
        vec![
            "device",
            "provision",
            "--id",
            "fac-dev",
            "--factory-version",
            "1.0.0",
            "--attr",
            "product=sensor",
            "--attr",
            "hardware=rev-b",
            "--out",
            &out,
        ],
        vec!["device", "revoke", "own-1"],
    ];
    for args in &refusals {
        h.aloft_as(&station, args).await.fails(1, &[DENIED]);
    }
    // An id that does not exist gets the same refusal as another's device.
    h.aloft_as(&station, &["device", "show", "nobody"])
        .await
        .fails(1, &[DENIED, "reads only the devices it registered"]);
    h.aloft_as(
        &station,
        &["device", "wait", "admin-dev", "--confirmed", "sensor-1.1.0"],
    )
    .await
    .fails(1, &[DENIED]);
    // A bare public key (key made off the device) is not for a station.
    let refused = h.aloft_as(&station, &refusals[9]).await.fails(1, &[DENIED]);
    assert!(refused.contains("not from a public key"), "{refused}");

    // The same commands with the admin token work: the refusals were the role.
    let fac_out = h.path("fac-dev-admin");
    for args in &refusals {
        let mut args = args.clone();
        if args[..2] == ["device", "provision"] {
            let last = args.len() - 1;
            args[last] = &fac_out;
        }
        h.aloft(&args).await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_a_thousand_requests_is_all_or_nothing_and_reports_its_rate() {
    let h = Harness::start().await;
    h.install_trust_root().await;
    let station = h.factory_token("line-2").await;
    const N: usize = 1000;
    let requests: Vec<(String, pb::SignedRegistration)> = (0..N)
        .map(|i| {
            let id = format!("bulk-{i:05}");
            let r = fresh(&id);
            (id, r)
        })
        .collect();
    let jsonl: String = requests
        .iter()
        .map(|(id, r)| request_line(id, r) + "\n")
        .collect();
    let file = h.path("line-2.jsonl");

    // One tampered request (line 7) refuses the whole file; so does an id
    // given twice. Nothing is stored.
    let mut lines: Vec<String> = jsonl.lines().map(str::to_owned).collect();
    let mut bad = requests[6].1.clone();
    bad.payload[3] ^= 1;
    lines[6] = request_line(&requests[6].0, &bad);
    std::fs::write(&file, lines.join("\n")).unwrap();
    h.aloft_as(&station, &["device", "import", &file])
        .await
        .fails(
            1,
            &[
                &format!("{file}:7"),
                "1 of 1000 requests refused",
                "nothing was registered",
            ],
        );
    let mut twice = jsonl.clone();
    twice.push_str(&request_line(&requests[0].0, &fresh(&requests[0].0)));
    std::fs::write(&file, &twice).unwrap();
    h.aloft_as(&station, &["device", "import", &file])
        .await
        .fails(1, &["appears twice", &format!("first at {file}:1")]);
    // A line that does not parse is refused before anything is sent.
    std::fs::write(&file, format!("{jsonl}not,a request\n")).unwrap();
    h.aloft_as(&station, &["device", "import", &file])
        .await
        .fails(1, &[&format!("{file}:1001"), "nothing was sent"]);
    assert_eq!(
        device_count(&h.aloft(&["device", "list", "--json"]).await.json()),
        0
    );

    // A dry run checks all and stores nothing.
    std::fs::write(&file, &jsonl).unwrap();
    let out = h
        .aloft_as(&station, &["device", "import", &file, "--dry-run"])
        .await
        .ok();
    assert!(out.contains("checked 1000 requests (dry run"), "{out}");
    assert_eq!(
        device_count(&h.aloft(&["device", "list", "--json"]).await.json()),
        0
    );

    // The import, in batches of 250 messages: every device registered.
    let out = h
        .aloft_as(
            &station,
            &["device", "import", &file, "--batch", "250", "--json"],
        )
        .await
        .json();
    assert_eq!(out["registered"], 1000);
    assert_eq!(out["refused"], 0);
    println!(
        "device import: {} devices in {:.3} s = {:.0} devices/s (CLI process, file read, signatures checked, one store transaction)",
        out["registered"],
        out["seconds"].as_f64().unwrap(),
        out["devices_per_second"].as_f64().unwrap()
    );
    let devices = h.aloft(&["device", "list", "--json"]).await.json();
    assert_eq!(device_count(&devices), N);
    assert!(
        devices
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["key_origin"] == "on_device")
    );
    // Importing the same file again: every request is a replay.
    h.aloft_as(&station, &["device", "import", &file])
        .await
        .fails(1, &["1000 of 1000 requests refused", "replayed"]);

    // CSV, with its header, and the human summary with the rate.
    let mut csv = String::from("device_id,payload,signature\n");
    for i in 0..200 {
        let id = format!("csv-{i:03}");
        let r = fresh(&id);
        csv.push_str(&format!(
            "{id},{},{}\n",
            hex::encode(&r.payload),
            hex::encode(&r.signature)
        ));
    }
    let csv_file = h.path("line-2.csv");
    std::fs::write(&csv_file, csv).unwrap();
    let out = h
        .aloft_as(&station, &["device", "import", &csv_file])
        .await
        .ok();
    assert!(out.contains("registered 200 devices"), "{out}");
    assert!(out.contains("devices/s"), "{out}");
    println!("{}", out.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensitive_product_refuses_signature_only_releases() {
    let h = Harness::start().await;
    let (_, release_key) = h.install_trust_root().await;
    h.aloft(&[
        "product",
        "set",
        "sensor",
        "--payloads",
        "signature-only",
        "--sensitive",
    ])
    .await
    .fails(1, &["cannot be sensitive and signature-only"]);
    let p = h
        .aloft(&["product", "set", "sensor", "--sensitive", "--json"])
        .await
        .json();
    assert_eq!(p["payloads"], "encrypted");
    assert_eq!(p["sensitive"], true);
    let listed = h.aloft(&["product", "list", "--json"]).await.json();
    assert_eq!(listed[0]["product"], "sensor");

    let plain = write_bundle(
        &h,
        "plain.bundle",
        &release_bundle(&release_key, "sensor-2.0.0", "2.0.0", &image(5000), true),
    );
    h.aloft(&["release", "upload", &plain]).await.fails(
        1,
        &["marked sensitive", "signature-only release is refused"],
    );
    // Not sensitive but encrypted: refused too, with its own fix.
    h.aloft(&["product", "set", "sensor"]).await.ok();
    h.aloft(&["release", "upload", &plain])
        .await
        .fails(1, &["aloft product set sensor --payloads signature-only"]);
    // Declared signature-only: it is taken.
    h.aloft(&["product", "set", "sensor", "--payloads", "signature-only"])
        .await
        .ok();
    let r = h
        .aloft(&["release", "upload", &plain, "--json"])
        .await
        .json();
    assert_eq!(r["id"], "sensor-2.0.0");
    // Marked sensitive afterwards: no rollout of it.
    h.aloft(&["product", "set", "sensor", "--sensitive"])
        .await
        .ok();
    h.aloft(&["rollout", "create", "r2", "--release", "sensor-2.0.0"])
        .await
        .fails(1, &["marked sensitive"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_factory_rollout_updates_a_batch_before_the_station_packs_it() {
    let h = Harness::start().await;
    let (_, release_key) = h.install_trust_root().await;
    let factory = release_bundle(&release_key, "sensor-1.0.0", "1.0.0", &image(6000), false);
    let update = release_bundle(&release_key, "sensor-1.1.0", "1.1.0", &image(7000), false);
    let update_file = write_bundle(&h, "update.bundle", &update);
    h.aloft(&["release", "upload", &update_file]).await.ok();

    // The factory rollout takes no stages or window.
    h.aloft(&[
        "rollout",
        "create",
        "f1",
        "--release",
        "sensor-1.1.0",
        "--factory",
        "--stages",
        "10%,100%",
    ])
    .await
    .fails(2, &["--stages"]);
    let r = h
        .aloft(&[
            "rollout",
            "create",
            "f1",
            "--release",
            "sensor-1.1.0",
            "--factory",
            "--factory-period",
            "1d",
            "--json",
        ])
        .await
        .json();
    assert_eq!(r["stages"].as_array().unwrap().len(), 1);

    // The station: templates, the devices' own requests, one import.
    let station = h.factory_token("line-4").await;
    const N: usize = 5;
    let requests = h.path("line-4.jsonl");
    for i in 0..N {
        let id = format!("line-4-{i}");
        let dir = template(&h, &station, &id).await;
        let e = enroll(&dir.join("identity.pb"), &enroll_opts()).unwrap();
        let mut line = request_line(&id, &e.request);
        line.push('\n');
        let mut all = std::fs::read_to_string(&requests).unwrap_or_default();
        all.push_str(&line);
        std::fs::write(&requests, all).unwrap();
    }
    let out = h
        .aloft_as(&station, &["device", "import", &requests])
        .await
        .ok();
    assert!(out.contains(&format!("registered {N} devices")), "{out}");

    // The devices power up at the end of the line (simulated: the real
    // agent and device core on simulated flash, 1.0.0 in slot A).
    let mut config = aloft_sim::SimConfig::new(
        N,
        h.url.clone(),
        aloft_sim::Identities::Dir(PathBuf::from(h.path("devices"))),
        factory,
    );
    config.until_updated = Some("1.1.0".into());
    config.duration = Duration::from_secs(90);
    config.agent = aloft_agent::AgentConfig {
        heartbeat: Duration::from_millis(500),
        backoff: aloft_agent::BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
        },
        ..aloft_agent::AgentConfig::default()
    };
    let fleet = tokio::spawn(aloft_sim::run(config));

    // The station waits for each before packing it.
    for i in 0..N {
        let id = format!("line-4-{i}");
        let out = h
            .aloft_as(
                &station,
                &[
                    "device",
                    "wait",
                    &id,
                    "--confirmed",
                    "sensor-1.1.0",
                    "--timeout",
                    "80s",
                ],
            )
            .await
            .ok();
        assert!(
            out.contains(&format!("device {id} confirmed sensor-1.1.0")),
            "{out}"
        );
    }
    let summary = fleet.await.unwrap().unwrap();
    assert_eq!(summary.devices, N, "{summary:?}");
    assert!(summary.condition_met, "{summary:?}");
    assert_eq!(summary.versions.get("1.1.0"), Some(&N), "{summary:?}");
    let shown = h
        .aloft(&["device", "show", "line-4-0", "--json"])
        .await
        .json();
    assert_eq!(shown["status"], "updated");
    assert_eq!(shown["firmware_version"], "1.1.0");
    // A device that never powers up: the wait runs out and says so.
    let f = request_file(&h, "idle.json", "idle-1", &fresh("idle-1"));
    h.aloft_as(&station, &["device", "register", "--request", &f])
        .await
        .ok();
    h.aloft_as(
        &station,
        &[
            "device",
            "wait",
            "idle-1",
            "--confirmed",
            "sensor-1.1.0",
            "--timeout",
            "1s",
        ],
    )
    .await
    .fails(
        1,
        &["did not confirm sensor-1.1.0 within 1 s", "registered"],
    );
}
