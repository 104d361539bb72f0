//! Payloads in the object store (`aloft_server::payloads`): the object
//! holds the chunks exactly as they travel, uploads publish the release row
//! only after the object, a crash in between leaves an orphan the sweep
//! deletes (and never a release without its payload), old sled chunk trees
//! move into objects; the same on a real S3-protocol server (s3s-fs), whose
//! presigned URLs are checked for signature and expiry.

mod common;
#[path = "support/s3s.rs"]
mod s3s;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aloft_protocol::pb::admin_service_client::AdminServiceClient;
use aloft_protocol::pb::server_to_device::Kind;
use aloft_protocol::{ReleaseId, pb};
use aloft_server::payloads::{PayloadConfig, PayloadUrls, Payloads, UploadId};
use common::*;

/// Every payload object file under a local objects directory (relative
/// paths, staging files included).
fn object_files(objects: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let releases = objects.join("releases");
    for release in std::fs::read_dir(&releases).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(release.path()).unwrap().flatten() {
            out.push(
                file.path()
                    .strip_prefix(objects)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    out.sort();
    out
}

/// Registers `device`, rolls `release` out to it, takes the offer and
/// downloads every chunk over gRPC; also returns the session token and the
/// session (its token is valid while the session is open).
async fn offer_and_download(
    h: &Harness,
    device: &str,
    release: &str,
) -> (pb::Offer, Vec<u8>, Vec<Vec<u8>>, Conn) {
    let dev = h.register(device).await;
    h.rollout(&format!("r-{release}"), release, "").await;
    let (mut conn, welcome) = dev.connect(&h.channel, vec![]).await.unwrap();
    let Kind::Offer(offer) = conn.next().await.unwrap() else {
        panic!("expected an offer")
    };
    let chunks = download(&h.channel, Some(&welcome.session_token), release, 0)
        .await
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c.index, i as u32);
            c.data
        })
        .collect();
    (offer, welcome.session_token, chunks, conn)
}

/// The wire chunks of `release`, as the device must receive them.
fn wire_chunks(release: &Release) -> Vec<Vec<u8>> {
    (0..release.params.chunk_count())
        .map(|i| {
            let at = release.params.chunk_offset(i) as usize;
            release.payload[at..at + release.params.chunk_len(i).unwrap()].to_vec()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_holds_the_chunks_as_they_travel_and_downloads_read_it() {
    let h = start(false).await;
    h.install_trust_root().await;
    // Over one 5 MiB multipart part, with a last chunk shorter than the rest.
    let release = h
        .keys
        .release("big-1.1.0", "1.1.0", (11 << 19) + 100, now() + 3600);
    h.upload(&release, 256 << 10).await.unwrap();

    let objects = h.dir.path().join("data/objects");
    let files = object_files(&objects);
    assert_eq!(files.len(), 1, "one object per upload: {files:?}");
    assert!(files[0].starts_with("releases/big-1.1.0/"), "{files:?}");
    let stored = std::fs::read(objects.join(&files[0])).unwrap();
    assert!(
        stored == release.payload,
        "the object is the payload byte for byte (chunk i at i * (chunk_size + 16))"
    );

    let (_, token, chunks, _session) = offer_and_download(&h, "dev-1", "big-1.1.0").await;
    let wire = wire_chunks(&release);
    assert!(chunks == wire);
    // A resume reads from the middle of a batch to the end.
    let resumed = download(&h.channel, Some(&token), "big-1.1.0", 1001)
        .await
        .unwrap();
    assert_eq!(resumed[0].index, 1001);
    assert!(
        resumed
            .iter()
            .map(|c| c.data.clone())
            .eq(wire[1001..].iter().cloned())
    );
    // Batches read once are served from memory to the next downloads (the
    // object could even be gone).
    std::fs::remove_file(objects.join(&files[0])).unwrap();
    let again = download(&h.channel, Some(&token), "big-1.1.0", 0)
        .await
        .unwrap();
    assert!(
        again
            .iter()
            .map(|c| c.data.clone())
            .eq(wire.iter().cloned()),
        "served from the hot cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_leaves_no_object() {
    let h = start(false).await;
    h.install_trust_root().await;
    let mut release = h.keys.release("bad-1.1.0", "1.1.0", 3000, now() + 3600);
    let last = release.payload.len() - 1;
    release.payload[last] ^= 1;
    let err = h.upload(&release, 1000).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(h.releases().await.is_empty());
    let objects = h.dir.path().join("data/objects");
    assert_eq!(object_files(&objects), Vec::<String>::new());
}

/// `aloft-server` as a child process on `data`, plaintext, with `args`.
fn spawn(data: &Path, args: &[&str], env: &[(&str, &str)]) -> (Child, std::net::SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aloft-server"));
    command
        .args(["--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .arg("--insecure-plaintext")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("aloft-server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

async fn release_ids(
    admin: &AdminServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Vec<String> {
    admin
        .clone()
        .list_releases(authed(pb::ListReleasesRequest {}, token))
        .await
        .unwrap()
        .into_inner()
        .releases
        .into_iter()
        .map(|r| r.release_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_object_and_release_leaves_an_orphan_the_sweep_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The server key exists before the first start, so the TrustRoot lists it.
    let server_key = aloft_server::keys::ServerKeys::load_or_create(&data)
        .unwrap()
        .directive_key()
        .public_key();
    let keys = Keys::new();
    let release = keys.release("crash-1.1.0", "1.1.0", 5000, now() + 3600);
    let objects = data.join("objects");

    // 1. The process aborts right after the object is complete, before the
    //    release row is written (ALOFT_FAILPOINT: no cleanup, no flush).
    let (mut child, addr) = spawn(&data, &[], &[("ALOFT_FAILPOINT", "upload-before-commit")]);
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let token = token.trim();
    let admin = AdminServiceClient::new(connect(addr, None).await);
    admin
        .clone()
        .set_trust_root(authed(
            pb::SetTrustRootRequest {
                trust_root: Some(keys.trust_root(&server_key, 1)),
            },
            token,
        ))
        .await
        .unwrap();
    let crashed = upload(&admin, token, &release, release.payload.len() as u64, 1000).await;
    assert!(crashed.is_err(), "the server died mid-upload");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        !status.success(),
        "the failpoint aborted the process: {status}"
    );
    let orphans = object_files(&objects);
    assert_eq!(orphans.len(), 1, "the object was written: {orphans:?}");
    assert_eq!(
        std::fs::read(objects.join(&orphans[0])).unwrap(),
        release.payload
    );

    // 2. Restarted with the default grace: no release (the row never
    //    came), and the orphan is kept for now (it could be another
    //    replica's upload between its object and its row).
    let (child, addr) = spawn(&data, &[], &[]);
    let admin = AdminServiceClient::new(connect(addr, None).await);
    assert_eq!(release_ids(&admin, token).await, Vec::<String>::new());
    assert_eq!(object_files(&objects), orphans);
    stop(child);

    // 3. Past the grace period, the start-up sweep deletes it.
    let (child, addr) = spawn(&data, &["--orphan-grace-secs", "0"], &[]);
    let admin = AdminServiceClient::new(connect(addr, None).await);
    assert_eq!(object_files(&objects), Vec::<String>::new(), "orphan swept");
    // The release uploads again; its row names its (new) object.
    upload(&admin, token, &release, release.payload.len() as u64, 1000)
        .await
        .unwrap();
    let published = object_files(&objects);
    assert_eq!(published.len(), 1);
    assert_ne!(published, orphans, "a fresh upload id per upload");
    stop(child);

    // 4. A release row always has its object: after kill -9 and a sweep
    //    with no grace, both are there.
    let (child, addr) = spawn(&data, &["--orphan-grace-secs", "0"], &[]);
    let admin = AdminServiceClient::new(connect(addr, None).await);
    assert_eq!(release_ids(&admin, token).await, vec!["crash-1.1.0"]);
    assert_eq!(object_files(&objects), published);
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_chunks_kept_in_sled_by_older_servers_move_into_objects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = Keys::new();
    let release = keys.release("old-1.1.0", "1.1.0", 3000, now() + 3600);
    {
        let mut config =
            aloft_server::ServerConfig::new(data.clone(), "127.0.0.1:0".parse().unwrap());
        config.limits.shutdown_grace = Duration::from_secs(1);
        let server = aloft_server::start(config).await.unwrap();
        let admin = AdminServiceClient::new(connect(server.local_addr(), None).await);
        let token = server.admin_token().to_owned();
        admin
            .clone()
            .set_trust_root(authed(
                pb::SetTrustRootRequest {
                    trust_root: Some(keys.trust_root(&server.server_public_key(), 1)),
                },
                &token,
            ))
            .await
            .unwrap();
        upload(&admin, &token, &release, release.payload.len() as u64, 1000)
            .await
            .unwrap();
        server.shutdown().await.unwrap();
    }
    // Turn the data directory into the old layout: the chunks in sled's
    // `chunks` tree (key: upload id, chunk index, big-endian), no object.
    let objects = data.join("objects");
    let files = object_files(&objects);
    let upload_id = u64::from_str_radix(files[0].rsplit('/').next().unwrap(), 16).unwrap();
    std::fs::remove_dir_all(&objects).unwrap();
    {
        let db = sled::open(data.join("db")).unwrap();
        let chunks = db.open_tree("chunks").unwrap();
        for (i, chunk) in wire_chunks(&release).iter().enumerate() {
            let mut key = [0u8; 12];
            key[..8].copy_from_slice(&upload_id.to_be_bytes());
            key[8..].copy_from_slice(&(i as u32).to_be_bytes());
            chunks.insert(key, chunk.as_slice()).unwrap();
        }
        // An orphan chunk of an upload no release names goes with the tree.
        chunks.insert([9u8; 12], b"orphan".as_slice()).unwrap();
        db.flush().unwrap();
    }

    let mut config = aloft_server::ServerConfig::new(data.clone(), "127.0.0.1:0".parse().unwrap());
    config.limits.shutdown_grace = Duration::from_secs(1);
    let server = aloft_server::start(config).await.unwrap();
    assert_eq!(
        object_files(&objects),
        files,
        "the same object name as before"
    );
    assert!(std::fs::read(objects.join(&files[0])).unwrap() == release.payload);
    let h = Harness {
        channel: connect(server.local_addr(), None).await,
        server,
        dir,
        keys,
        store: TestStore::sled(),
    };
    let (_, _, chunks, _) = offer_and_download(&h, "dev-1", "old-1.1.0").await;
    assert!(chunks == wire_chunks(&release));
    h.server.shutdown().await.unwrap();
    let db = sled::open(h.dir.path().join("data/db")).unwrap();
    assert!(
        !db.tree_names().iter().any(|n| n.as_ref() == b"chunks"),
        "the chunks tree is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_uploads_downloads_and_orphans_behave_the_same() {
    let s3 = s3s::S3s::start("aloft-payloads");
    let objects = s3.objects("fleet/eu");
    let h = start_with(false, |c| {
        c.payloads.objects = Some(objects.clone());
        c.payloads.orphan_grace = Duration::ZERO;
    })
    .await;
    h.install_trust_root().await;
    // Two multipart parts.
    let release = h
        .keys
        .release("s3-1.1.0", "1.1.0", (11 << 19) + 100, now() + 3600);
    h.upload(&release, 256 << 10).await.unwrap();
    let files = s3.files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with("fleet/eu/releases/s3-1.1.0/"),
        "{files:?}"
    );
    let stored = std::fs::read(s3.root.path().join(&s3.bucket).join(&files[0])).unwrap();
    assert!(stored == release.payload);
    let (_, _, chunks, _) = offer_and_download(&h, "dev-1", "s3-1.1.0").await;
    assert!(chunks == wire_chunks(&release));

    // An orphan (an object no release names) is swept at the next start.
    let config = PayloadConfig {
        objects: Some(objects.clone()),
        ..PayloadConfig::default()
    };
    let payloads = Payloads::open(&config, h.dir.path()).unwrap();
    let orphan_release = ReleaseId::new("never-published").unwrap();
    let mut writer = payloads.create(&orphan_release, UploadId(7)).await.unwrap();
    writer.write(b"not a release").await.unwrap();
    writer.finish().await.unwrap();
    assert_eq!(s3.files().len(), 2);
    let data = h.dir.path().join("data");
    h.server.shutdown().await.unwrap();
    let mut config = aloft_server::ServerConfig::new(data, "127.0.0.1:0".parse().unwrap());
    config.store = h.store.backend();
    config.payloads.objects = Some(objects);
    config.payloads.orphan_grace = Duration::ZERO;
    let server = aloft_server::start(config).await.unwrap();
    assert_eq!(s3.files(), files, "orphan swept, the release's object kept");
    server.shutdown().await.unwrap();
}

/// A GET of `url` with `range`: (status, Content-Range, body).
async fn get(url: &str, range: &str) -> (u16, String, Vec<u8>) {
    let response = reqwest::Client::new()
        .get(url)
        .header("range", range)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_range = response
        .headers()
        .get("content-range")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        content_range,
        response.bytes().await.unwrap().to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_serve_ranges_and_expire_on_a_real_s3_server() {
    let s3 = s3s::S3s::start("aloft-presign");
    let config = PayloadConfig {
        objects: Some(s3.objects("")),
        urls: PayloadUrls::Presigned,
        ..PayloadConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let payloads = Payloads::open(&config, dir.path()).unwrap();
    let id = ReleaseId::new("presigned-1.0.0").unwrap();
    let body: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = payloads.create(&id, UploadId(1)).await.unwrap();
    writer.write(&body).await.unwrap();
    writer.finish().await.unwrap();

    let url = payloads
        .direct_url(&id, UploadId(1), Duration::from_secs(600))
        .await
        .unwrap()
        .expect("a presigned URL");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert!(
        url.contains("X-Amz-Expires=600"),
        "valid for the directive's lifetime: {url}"
    );
    let (status, range, got) = get(&url, "bytes=1000-1999").await;
    assert_eq!((status, range.as_str()), (206, "bytes 1000-1999/70000"));
    assert_eq!(got, body[1000..2000]);

    // The server checks the signature ...
    let forged = url.replace("presigned-1.0.0", "presigned-1.0.1");
    assert_eq!(get(&forged, "bytes=0-9").await.0, 403);
    // ... and the expiry.
    let short = payloads
        .direct_url(&id, UploadId(1), Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(get(&short, "bytes=0-9").await.0, 206);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(&short, "bytes=0-9").await.0, 403, "expired");
}

#[test]
fn payload_flags_parse_and_refuse_what_cannot_work() {
    use aloft_server::payloads::{ObjectsConfig, UrlTemplate};
    assert_eq!(
        ObjectsConfig::parse("file:///srv/aloft/objects").unwrap(),
        ObjectsConfig::Local(PathBuf::from("/srv/aloft/objects"))
    );
    let ObjectsConfig::S3(s3) = ObjectsConfig::parse("s3://fleet-payloads/eu/prod/").unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (s3.bucket.as_str(), s3.prefix.as_str()),
        ("fleet-payloads", "eu/prod")
    );
    for bad in [
        "file://relative",
        "s3:///prefix",
        "gs://bucket",
        "/srv/objects",
    ] {
        let err = ObjectsConfig::parse(bad).unwrap_err().to_string();
        assert!(err.contains("file:///ABSOLUTE/DIR"), "{bad}: {err}");
    }
    assert!(UrlTemplate::parse("https://cdn.example.com/{object}").is_ok());
    for (bad, why) in [
        ("ftp://cdn.example.com/{object}", "https://"),
        ("https://cdn.example.com/fixed", "no placeholder"),
        (
            "https://cdn.example.com/{release}",
            "unknown placeholder {release}",
        ),
        ("https://cdn.example.com/{object", "not closed"),
    ] {
        let err = UrlTemplate::parse(bad).unwrap_err().to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
    // Presigning needs S3.
    let local = PayloadConfig {
        urls: PayloadUrls::Presigned,
        ..PayloadConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let err = Payloads::open(&local, dir.path()).unwrap_err().to_string();
    assert!(err.contains("--objects s3://"), "{err}");
}
