//! `aloft trust-root set | show | history` and `aloft server info`.

use std::path::{Path, PathBuf};

use aloft_protocol::envelope::decode_envelope;
use aloft_protocol::prost::Message as _;
use aloft_protocol::{PublicKey, pb};
use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use serde::Serialize;

use crate::Ctx;
use crate::client::status_error;
use crate::duration::{age, now_unix};
use crate::output;

/// `aloft trust-root` subcommands.
#[derive(Debug, Subcommand)]
pub enum TrustRootCommand {
    /// Install the first TrustRoot or rotate to the next (admin only): a
    /// rotation is made with `aloft-release keys rotate` and must be the
    /// newest version + 1, signed by the newest root's keys and its own.
    Set {
        /// A SignedEnvelope protobuf file holding the root-signed TrustRoot.
        file: PathBuf,
    },
    /// Show the newest TrustRoot: its keys by role, thresholds and expiry.
    Show,
    /// Every TrustRoot the server accepted, oldest first (devices that lag
    /// are sent the ones they lack).
    History,
}

/// `aloft server` subcommands.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Show the server's version, directive key and TrustRoot.
    Info,
}

/// Runs one `aloft trust-root` command.
pub async fn run_trust_root(ctx: &mut Ctx, cmd: TrustRootCommand) -> anyhow::Result<()> {
    match cmd {
        TrustRootCommand::Set { file } => set(ctx, &file).await,
        TrustRootCommand::Show => show(ctx).await,
        TrustRootCommand::History => history(ctx).await,
    }
}

async fn show(ctx: &mut Ctx) -> anyhow::Result<()> {
    let info = ctx
        .client
        .get_server_info(pb::GetServerInfoRequest {})
        .await
        .map_err(|s| status_error("reading the server's TrustRoot", &s))?
        .into_inner();
    let Some(env) = &info.trust_root else {
        if ctx.json() {
            return output::print_json(&serde_json::Value::Null);
        }
        anyhow::bail!(
            "the server has no TrustRoot yet: install one with `aloft trust-root set FILE`"
        );
    };
    let t = root_json(env, &info.server_public_key)
        .ok_or_else(|| anyhow!("the server's TrustRoot does not decode"))?;
    if ctx.json() {
        return output::print_json(&t);
    }
    let now = now_unix();
    let ids = |keys: &[String]| {
        keys.iter()
            .map(|k| key_id_of(k))
            .collect::<Vec<_>>()
            .join(", ")
    };
    output::print_fields(&[
        ("version", t.version.to_string()),
        (
            "expires",
            format!(
                "{} ({})",
                crate::duration::utc_text(t.expires_at),
                age(now, t.expires_at)
            ),
        ),
        (
            "root keys",
            format!(
                "{} of {}: {}",
                t.root_threshold,
                t.root_keys.len(),
                ids(&t.root_keys)
            ),
        ),
        (
            "release keys",
            format!(
                "{} of {}: {}",
                t.release_threshold,
                t.release_keys.len(),
                ids(&t.release_keys)
            ),
        ),
        (
            "server keys",
            format!(
                "{}{}",
                ids(&t.server_keys),
                if t.lists_server_key {
                    " (lists this server's key)"
                } else {
                    " (does NOT list this server's key)"
                }
            ),
        ),
    ])
}

/// One root of `aloft trust-root history --json`.
#[derive(Debug, Serialize)]
struct HistoryJson {
    #[serde(flatten)]
    root: TrustRootJson,
    /// Unix seconds the server accepted it (0: unknown).
    installed_at: u64,
}

async fn history(ctx: &mut Ctx) -> anyhow::Result<()> {
    let info = ctx
        .client
        .get_server_info(pb::GetServerInfoRequest {})
        .await
        .map_err(|s| status_error("reading server info", &s))?
        .into_inner();
    let roots = ctx
        .client
        .get_trust_root_history(pb::GetTrustRootHistoryRequest {})
        .await
        .map_err(|s| status_error("reading the TrustRoot history", &s))?
        .into_inner()
        .roots;
    let rows: Vec<HistoryJson> = roots
        .iter()
        .filter_map(|r| {
            let root = root_json(r.trust_root.as_ref()?, &info.server_public_key)?;
            Some(HistoryJson {
                root,
                installed_at: r.installed_at,
            })
        })
        .collect();
    if ctx.json() {
        return output::print_json(&rows);
    }
    if rows.is_empty() {
        println!("no TrustRoot installed: install one with `aloft trust-root set FILE`");
        return Ok(());
    }
    let now = now_unix();
    let mut table = output::Table::new(&[
        "VERSION",
        "INSTALLED",
        "EXPIRES",
        "ROOT",
        "RELEASE KEYS",
        "SERVER KEYS",
    ]);
    let short = |keys: &[String]| {
        keys.iter()
            .map(|k| key_id_of(k).chars().take(8).collect::<String>())
            .collect::<Vec<_>>()
            .join(",")
    };
    for r in &rows {
        let t = &r.root;
        table.row(vec![
            t.version.to_string(),
            if r.installed_at == 0 {
                "-".into()
            } else {
                crate::duration::utc_text(r.installed_at)
            },
            age(now, t.expires_at),
            format!("{}/{}", t.root_threshold, t.root_keys.len()),
            format!(
                "{}/{} {}",
                t.release_threshold,
                t.release_keys.len(),
                short(&t.release_keys)
            ),
            short(&t.server_keys),
        ]);
    }
    table.print()
}

/// The key id (hex) of a hex SEC1 public key, or the hex itself if it does
/// not parse.
fn key_id_of(hex_key: &str) -> String {
    hex::decode(hex_key)
        .ok()
        .and_then(|b| PublicKey::from_sec1(&b).ok())
        .map_or_else(|| hex_key.to_owned(), |k| k.key_id().to_string())
}

/// Runs one `aloft server` command.
pub async fn run_server(ctx: &mut Ctx, cmd: ServerCommand) -> anyhow::Result<()> {
    match cmd {
        ServerCommand::Info => {
            let info = ctx
                .client
                .get_server_info(pb::GetServerInfoRequest {})
                .await
                .map_err(|s| status_error("reading server info", &s))?
                .into_inner();
            print_info(ctx, &info)
        }
    }
}

/// Reads a SignedEnvelope file whose payload is a TrustRoot.
pub fn read_trust_root(path: &Path) -> anyhow::Result<pb::SignedEnvelope> {
    let bytes =
        std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
    let envelope = decode_envelope(&bytes)
        .map_err(|e| anyhow!("{} is not a signed envelope ({e})", path.display()))?;
    pb::TrustRoot::decode(envelope.payload.as_slice())
        .map_err(|e| anyhow!("{} does not hold a TrustRoot ({e})", path.display()))?;
    if envelope.signatures.is_empty() {
        return Err(anyhow!(
            "{} holds an unsigned TrustRoot; sign it with the root keys first",
            path.display()
        ));
    }
    Ok(envelope)
}

async fn set(ctx: &mut Ctx, path: &Path) -> anyhow::Result<()> {
    let envelope = read_trust_root(path)?;
    let info = ctx
        .client
        .set_trust_root(pb::SetTrustRootRequest {
            trust_root: Some(envelope),
        })
        .await
        .map_err(|s| {
            status_error(
                &format!("installing the TrustRoot from {}", path.display()),
                &s,
            )
        })?
        .into_inner();
    let summary = info_json(&info);
    if summary
        .trust_root
        .as_ref()
        .is_some_and(|t| !t.lists_server_key)
    {
        eprintln!(
            "warning: the installed TrustRoot does not list this server's key {}; devices will refuse its directives",
            summary.server_key_id
        );
    }
    print_info(ctx, &info)
}

/// Server info as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct InfoJson {
    version: String,
    server_public_key: String,
    server_key_id: String,
    server_time: u64,
    trust_root: Option<TrustRootJson>,
    /// The next directive key (made, not yet listed or not yet switched to).
    next_server_public_key: Option<String>,
}

/// A TrustRoot summary (public keys as hex SEC1).
#[derive(Debug, Serialize)]
pub struct TrustRootJson {
    version: u32,
    expires_at: u64,
    root_keys: Vec<String>,
    root_threshold: u32,
    release_keys: Vec<String>,
    release_threshold: u32,
    server_keys: Vec<String>,
    lists_server_key: bool,
}

/// Converts server info to its JSON form.
pub fn info_json(info: &pb::ServerInfo) -> InfoJson {
    let key_id = PublicKey::from_sec1(&info.server_public_key)
        .map_or_else(|_| String::new(), |k| k.key_id().to_string());
    let trust_root = info
        .trust_root
        .as_ref()
        .and_then(|env| root_json(env, &info.server_public_key));
    InfoJson {
        version: info.version.clone(),
        server_public_key: hex::encode(&info.server_public_key),
        server_key_id: key_id,
        server_time: info.server_time,
        trust_root,
        next_server_public_key: crate::output::non_empty(&hex::encode(
            &info.next_server_public_key,
        )),
    }
}

/// A TrustRoot envelope's summary; `server_key` is this server's key.
fn root_json(env: &pb::SignedEnvelope, server_key: &[u8]) -> Option<TrustRootJson> {
    let t = pb::TrustRoot::decode(env.payload.as_slice()).ok()?;
    Some(TrustRootJson {
        version: t.version,
        expires_at: t.expires_at,
        root_keys: t.root_keys.iter().map(hex::encode).collect(),
        root_threshold: t.root_threshold,
        release_keys: t.release_keys.iter().map(hex::encode).collect(),
        release_threshold: t.release_threshold,
        lists_server_key: lists_key(&t.server_keys, server_key),
        server_keys: t.server_keys.iter().map(hex::encode).collect(),
    })
}

/// True if `keys` holds `key` (compared as points, whatever the encoding).
fn lists_key(keys: &[Vec<u8>], key: &[u8]) -> bool {
    let Ok(key) = PublicKey::from_sec1(key) else {
        return false;
    };
    keys.iter()
        .any(|k| PublicKey::from_sec1(k).is_ok_and(|k| k == key))
}

fn print_info(ctx: &Ctx, info: &pb::ServerInfo) -> anyhow::Result<()> {
    let summary = info_json(info);
    if ctx.json() {
        return output::print_json(&summary);
    }
    let now = now_unix();
    let mut fields = vec![
        ("server", ctx.target.url.clone()),
        ("version", summary.version.clone()),
        ("server key", summary.server_public_key.clone()),
        ("server key id", summary.server_key_id.clone()),
        (
            "server time",
            format!(
                "{} (clock skew {}s)",
                summary.server_time,
                summary.server_time as i64 - now as i64
            ),
        ),
    ];
    match &summary.trust_root {
        None => fields.push((
            "trust root",
            "none: install one with `aloft trust-root set FILE`".into(),
        )),
        Some(t) => {
            fields.push((
                "trust root",
                format!("version {}, expires {}", t.version, age(now, t.expires_at)),
            ));
            fields.push((
                "root keys",
                format!("{} of {}", t.root_threshold, t.root_keys.len()),
            ));
            fields.push((
                "release keys",
                format!("{} of {}", t.release_threshold, t.release_keys.len()),
            ));
            fields.push((
                "server keys",
                format!(
                    "{} (this server's key {})",
                    t.server_keys.len(),
                    if t.lists_server_key {
                        "is listed"
                    } else {
                        "is NOT listed"
                    }
                ),
            ));
        }
    }
    if let Some(next) = &summary.next_server_public_key {
        fields.push((
            "next server key",
            format!(
                "{next} (list it in the next TrustRoot; the server switches once that root is installed)"
            ),
        ));
    }
    output::print_fields(&fields)
}

#[cfg(test)]
mod tests {
    use aloft_protocol::SecretKey;
    use aloft_protocol::envelope::seal;
    use aloft_protocol::keys::Domain;

    use super::*;

    #[test]
    fn trust_root_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.pb");
        let root = SecretKey::generate();
        let trust = pb::TrustRoot {
            version: 1,
            root_keys: vec![root.public_key().to_sec1_compressed().to_vec()],
            root_threshold: 1,
            ..Default::default()
        };
        std::fs::write(
            &path,
            seal(&trust, Domain::TrustRoot, &[&root]).encode_to_vec(),
        )
        .unwrap();
        assert!(read_trust_root(&path).is_ok());

        std::fs::write(&path, seal(&trust, Domain::TrustRoot, &[]).encode_to_vec()).unwrap();
        assert!(
            read_trust_root(&path)
                .unwrap_err()
                .to_string()
                .contains("unsigned")
        );

        std::fs::write(&path, b"\xff\xff\xff").unwrap();
        assert!(
            read_trust_root(&path)
                .unwrap_err()
                .to_string()
                .contains("not a signed envelope")
        );
    }

    #[test]
    fn server_key_listing_compares_points() {
        let server = SecretKey::generate().public_key();
        let other = SecretKey::generate().public_key();
        let listed = vec![
            other.to_sec1_compressed().to_vec(),
            server.to_sec1_compressed().to_vec(),
        ];
        assert!(lists_key(&listed, &server.to_sec1_compressed()));
        assert!(!lists_key(&listed[..1], &server.to_sec1_compressed()));
        assert!(!lists_key(&listed, b"junk"));
    }
}
