//! Benchmark 4, download throughput: aggregate bytes per second serving one
//! release to 100 concurrent devices from the real `aloft-server` binary
//! (TLS, 127.0.0.1), against nginx serving the same encrypted payload file
//! on loopback to 100 concurrent clients over HTTPS (TLS 1.3, AES-GCM, the
//! server's own certificate: the floor) and over plain HTTP with sendfile
//! (a second reference row), alternating rounds in the same run.
//!
//! Devices check in (challenge, signed hello), receive the rollout's offer,
//! then all start `Download` at once on their session's connection; the
//! figure is payload bytes received by all / time from the start to the
//! last byte. The nginx clients are tokio tasks sending a minimal HTTP/1.1
//! GET each on its own connection; neither side decrypts the payload.
//! nginx is installed from Debian's packages when missing.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::benches::device::{self, Signer};
use crate::benches::server::{self, DeviceCred, ServerProc};
use crate::benches::{Bench, ChildGuard, Ctx};
use crate::fixture;
use crate::measure::{median, mib_s};
use crate::report::{BenchResult, Status, Table};

/// The benchmark.
#[derive(Debug)]
pub struct DownloadThroughput;

/// Concurrent devices / clients.
const CLIENTS: usize = 100;

impl Bench for DownloadThroughput {
    fn name(&self) -> &'static str {
        "download-throughput"
    }

    fn title(&self) -> &'static str {
        "Download throughput vs nginx"
    }

    fn item(&self) -> u8 {
        4
    }

    fn run(&self, ctx: &Ctx) -> anyhow::Result<BenchResult> {
        server::runtime()?.block_on(run(ctx))
    }
}

/// Finds nginx, installing it with apt-get when missing.
fn nginx_binary() -> anyhow::Result<String> {
    let found = |p: &str| Path::new(p).is_file();
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if found(p) {
            return Ok(p.into());
        }
    }
    println!("  nginx is missing: installing it (apt-get update; apt-get install -y nginx)");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let apt = |args: &[&str]| -> anyhow::Result<bool> {
        let mut c = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        let status = c
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null())
            .status()
            .context("running apt-get")?;
        Ok(status.success())
    };
    apt(&["update", "-q"])?;
    if !apt(&["install", "-y", "-q", "--no-install-recommends", "nginx"])? {
        bail!("apt-get install nginx failed");
    }
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if found(p) {
            return Ok(p.into());
        }
    }
    bail!("nginx installed but not found in /usr/sbin")
}

/// nginx on 127.0.0.1:`port` (HTTP) and `tls_port` (HTTPS with `tls`'s
/// certificate, TLS 1.3 with AES-GCM only) serving `root`, with its own
/// config and temp directories in `dir`; stopped when the guard drops.
fn start_nginx(
    ctx: &Ctx,
    dir: &Path,
    root: &Path,
    port: u16,
    tls_port: u16,
    tls: &server::Tls,
) -> anyhow::Result<ChildGuard> {
    let bin = nginx_binary()?;
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    std::fs::write(
        &conf,
        format!(
            "user root;\nworker_processes {cores};\ndaemon off;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  \
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
             scgi_temp_path {d}/scgi;\n  \
                          server {{\n    listen 127.0.0.1:{port};\n    root {root};\n  }}\n  \
             server {{\n    listen 127.0.0.1:{tls_port} ssl;\n    root {root};\n    \
             ssl_certificate {cert};\n    ssl_certificate_key {key};\n    \
             ssl_protocols TLSv1.3;\n    \
             ssl_conf_command Ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256;\n  \
             }}\n}}\n",
            root = root.display(),
            cert = tls.cert.display(),
            key = tls.key.display(),
        ),
    )?;
    let guard = ctx.spawn(
        Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(std::process::Stdio::null()),
    )?;
    Ok(guard)
}

/// How an nginx client connects.
#[derive(Clone)]
enum Scheme {
    Http,
    Https(tokio_rustls::TlsConnector),
}

/// One HTTP/1.1 GET over a new connection; returns body bytes.
async fn http_get(
    addr: SocketAddr,
    scheme: &Scheme,
    path: &str,
    expect: u64,
) -> anyhow::Result<u64> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    match scheme {
        Scheme::Http => get_over(tcp, path, expect).await,
        Scheme::Https(connector) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost")?;
            get_over(connector.connect(name, tcp).await?, path, expect).await
        }
    }
}

async fn get_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    path: &str,
    expect: u64,
) -> anyhow::Result<u64> {
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let mut body = 0u64;
    loop {
        let n = match s.read(&mut buf).await {
            Ok(n) => n,
            // nginx closes without a TLS close_notify after the body.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && body == expect => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        if body == 0 && head.windows(4).all(|w| w != b"\r\n\r\n") {
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                if !head.starts_with(b"HTTP/1.1 200") {
                    bail!("nginx said {}", String::from_utf8_lossy(&head[..end]));
                }
                body = (head.len() - end - 4) as u64;
            }
        } else {
            body += n as u64;
        }
    }
    if body != expect {
        bail!("nginx sent {body} body bytes, {expect} expected");
    }
    Ok(body)
}

/// Releases the tasks waiting on `barrier` together and returns the bytes
/// per second they moved between then and the last one finishing.
async fn released_rate(
    barrier: &Barrier,
    mut tasks: JoinSet<anyhow::Result<u64>>,
) -> anyhow::Result<f64> {
    barrier.wait().await;
    let t = Instant::now();
    let mut total = 0;
    while let Some(j) = tasks.join_next().await {
        total += j??;
    }
    Ok(total as f64 / t.elapsed().as_secs_f64())
}

async fn nginx_round(addr: SocketAddr, scheme: &Scheme, len: u64) -> anyhow::Result<f64> {
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let mut tasks = JoinSet::new();
    for _ in 0..CLIENTS {
        let (b, scheme) = (barrier.clone(), scheme.clone());
        tasks.spawn(async move {
            b.wait().await;
            http_get(addr, &scheme, "/payload.bin", len).await
        });
    }
    released_rate(&barrier, tasks).await
}

async fn aloft_round(
    srv: &ServerProc,
    creds: &[DeviceCred],
    release: &str,
    len: u64,
) -> anyhow::Result<f64> {
    let endpoint = server::endpoint(srv.addr, &srv.tls.ca_pem)?;
    let barrier = Arc::new(Barrier::new(creds.len() + 1));
    let mut tasks = JoinSet::new();
    for (i, cred) in creds.iter().enumerate() {
        let signer = Signer::new(cred)?;
        let (b, endpoint, release) = (barrier.clone(), endpoint.clone(), release.to_owned());
        tasks.spawn(async move {
            let local = Some(std::net::IpAddr::V4(Ctx::loopback(i as u32 + 1)));
            let prepared = async {
                let channel = device::connect(&endpoint, local).await?;
                let mut session = device::check_in(&channel, &signer).await?;
                let offered = session.offer().await?;
                if offered != release {
                    bail!("offered {offered}, expected {release}");
                }
                Ok::<_, anyhow::Error>((channel, session))
            }
            .await;
            b.wait().await;
            let (channel, session) = prepared?;
            let got = device::download(&channel, &session.token, &release).await?;
            drop(session);
            if got != len {
                bail!("downloaded {got} bytes of {len}");
            }
            Ok(got)
        });
    }
    released_rate(&barrier, tasks).await
}

/// `pid` and its child processes (nginx's master and workers).
fn with_children(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}

/// CPU seconds used so far by `pids` together.
fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|&p| server::cpu_seconds(p).unwrap_or(0.0))
        .sum()
}

async fn run(ctx: &Ctx) -> anyhow::Result<BenchResult> {
    let mut r = BenchResult::new(
        "download-throughput",
        "Download throughput vs nginx",
        4,
        Status::Measured,
    );
    let image_len: usize = if ctx.quick { 1 << 20 } else { 8 << 20 };
    let chunk: u32 = 16 * 1024;
    let rounds = ctx.reps(3, 1);
    server::raise_nofile(16_384);
    let dir = ctx.scratch.join("download");
    let srv = ServerProc::start(ctx, &dir.join("server")).await?;
    let release = srv
        .keys
        .release("2.0.0", 2, fixture::image(image_len, 9), chunk)?;
    srv.upload(&release).await?;
    srv.rollout("bench-download", &release.id).await?;
    let len = release.payload.len() as u64;

    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("payload.bin"), &release.payload)?;
    let port = server::free_port()?;
    let tls_port = server::free_port()?;
    let nginx_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let nginx_tls_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, tls_port));
    let https = Scheme::Https(crate::benches::floor::connector(&srv.tls.ca_pem)?);
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let mut nginx = start_nginx(ctx, &nginx_dir, &www, port, tls_port, &srv.tls)?;
    let up = server::wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(nginx_addr).is_ok()
            && std::net::TcpStream::connect(nginx_tls_addr).is_ok()
    })
    .await;
    if !up {
        let log = std::fs::read_to_string(nginx_dir.join("error.log")).unwrap_or_default();
        bail!("nginx did not start listening; error.log:\n{log}");
    }
    let version = Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();

    let nginx_pids = with_children(nginx.0.id());
    let mut aloft = Vec::new();
    let mut ng = Vec::new();
    let mut aloft_cpu = Vec::new();
    let mut ng_cpu = Vec::new();
    let mut tls = Vec::new();
    let mut tls_cpu = Vec::new();
    for round in 0..rounds {
        // A fresh set of devices each round (each downloads once).
        let creds = srv.register(&format!("dl{round}-"), CLIENTS).await?;
        let c0 = srv.cpu_seconds()?;
        let a = aloft_round(&srv, &creds, &release.id, len)
            .await
            .context("aloft round")?;
        // Bytes per server CPU-second (the check-ins before the download
        // included: a few milliseconds).
        aloft_cpu.push((CLIENTS as u64 * len) as f64 / (srv.cpu_seconds()? - c0).max(1e-9));
        let c0 = cpu_of(&nginx_pids);
        let t = nginx_round(nginx_tls_addr, &https, len)
            .await
            .context("nginx HTTPS round")?;
        tls_cpu.push((CLIENTS as u64 * len) as f64 / (cpu_of(&nginx_pids) - c0).max(1e-9));
        let c0 = cpu_of(&nginx_pids);
        let n = nginx_round(nginx_addr, &Scheme::Http, len)
            .await
            .context("nginx round")?;
        ng_cpu.push((CLIENTS as u64 * len) as f64 / (cpu_of(&nginx_pids) - c0).max(1e-9));
        println!(
            "  round {round}: aloft-server {} ({} per CPU-second), nginx HTTPS {} ({} per \
             CPU-second), nginx HTTP {} ({} per CPU-second)",
            mib_s(a),
            mib_s(aloft_cpu[round]),
            mib_s(t),
            mib_s(tls_cpu[round]),
            mib_s(n),
            mib_s(ng_cpu[round])
        );
        aloft.push(a);
        tls.push(t);
        ng.push(n);
    }
    if let Ok(Some(status)) = nginx.0.try_wait() {
        bail!("nginx exited early: {status}");
    }
    // Stop nginx (its master takes the workers down) and the server.
    let _ = Command::new("kill")
        .args(["-QUIT", &nginx.0.id().to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(None) = nginx.0.try_wait() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    drop(nginx);
    drop(srv);

    let a = median(&aloft);
    let n = median(&ng);
    let t_rate = median(&tls);
    let ratio = a / t_rate;
    let plain_ratio = a / n;
    let (a_cpu, n_cpu, t_cpu) = (median(&aloft_cpu), median(&ng_cpu), median(&tls_cpu));
    r.samples("nginx_tls_bytes_per_s", &tls);
    r.samples("nginx_tls_bytes_per_cpu_s", &tls_cpu);
    r.figure("nginx_tls_bytes_per_s", t_rate);
    r.figure("nginx_tls_bytes_per_cpu_s", t_cpu);
    r.figure("ratio_plaintext", plain_ratio);
    r.samples("aloft_bytes_per_cpu_s", &aloft_cpu);
    r.samples("nginx_bytes_per_cpu_s", &ng_cpu);
    r.figure("aloft_bytes_per_cpu_s", a_cpu);
    r.figure("nginx_bytes_per_cpu_s", n_cpu);
    r.samples("aloft_bytes_per_s", &aloft);
    r.samples("nginx_bytes_per_s", &ng);
    r.figure("aloft_bytes_per_s", a);
    r.figure("nginx_bytes_per_s", n);
    r.figure("ratio", ratio);
    r.figure("payload_bytes", len as f64);
    let mut table = Table::new(
        &format!(
            "{CLIENTS} concurrent downloads of one {:.1} MiB encrypted payload ({} KiB chunks) \
             on loopback (median of {rounds} alternating rounds)",
            len as f64 / 1048576.0,
            chunk / 1024
        ),
        &[
            "server",
            "aggregate",
            "per client",
            "vs nginx HTTPS",
            "per server CPU-second",
            "vs nginx HTTPS",
        ],
    );
    table.row(&[
        "aloft-server (gRPC Download over TLS 1.3, session-token authorised)".to_string(),
        mib_s(a),
        mib_s(a / CLIENTS as f64),
        format!("{ratio:.2}"),
        mib_s(a_cpu),
        format!("{:.2}", a_cpu / t_cpu),
    ]);
    table.row(&[
        format!("{version} (HTTP/1.1 over TLS 1.3, AES-GCM, same certificate)"),
        mib_s(t_rate),
        mib_s(t_rate / CLIENTS as f64),
        "1.00".into(),
        mib_s(t_cpu),
        "1.00".into(),
    ]);
    table.row(&[
        format!("{version} (HTTP/1.1, plaintext, sendfile)"),
        mib_s(n),
        mib_s(n / CLIENTS as f64),
        format!("{:.2}", n / t_rate),
        mib_s(n_cpu),
        format!("{:.2}", n_cpu / t_cpu),
    ]);
    r.tables.push(table);
    r.goal(
        "aloft-server / nginx over HTTPS (TLS 1.3, AES-GCM), aggregate download throughput, \
         100 clients",
        ">= 0.70",
        format!("{ratio:.2} ({} vs {})", mib_s(a), mib_s(t_rate)),
        Some(ratio >= 0.7),
    );
    r.goal(
        "same, bytes served per server CPU-second (independent of the clients' share)",
        "(reference)",
        format!(
            "{:.2} ({} vs {})",
            a_cpu / t_cpu,
            mib_s(a_cpu),
            mib_s(t_cpu)
        ),
        None,
    );
    r.goal(
        "aloft-server / nginx plaintext with sendfile (the earlier floor)",
        "(reference)",
        format!("{plain_ratio:.2} ({} vs {})", mib_s(a), mib_s(n)),
        None,
    );
    r.note(
        "Both servers and all clients share this machine's cores. The floor is nginx over \
         HTTPS with the server's own certificate, TLS 1.3 and AES-GCM only (the clients are \
         rustls with ring, as the devices' TLS), so both sides pay for the same encryption; \
         plaintext nginx with sendfile (no copy through user space) stays as a second row.",
    );
    r.note(
        "The path: per 256 KiB batch of chunks one read from the object store, shared by every \
         concurrent download through the hot-payload cache (later downloads read nothing); \
         each 16 KiB chunk is then copied into its protobuf message, framed by HTTP/2 and \
         copied into a TLS record (AES-GCM). What is left: encoding chunk messages straight \
         from the shared buffer (no copy into the message) and larger TLS writes per HTTP/2 \
         flush. Rounds vary by tens of percent (both servers and the 100 clients share the \
         2 cores), so the ratio is a median over alternating rounds.",
    );
    Ok(r)
}
