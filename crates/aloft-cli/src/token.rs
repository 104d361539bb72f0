//! `aloft token ...`: create, list and revoke operator tokens.

use aloft_protocol::pb;
use clap::{Subcommand, ValueEnum};
use serde::Serialize;

use crate::Ctx;
use crate::client::status_error;
use crate::duration::{age, now_unix};
use crate::output::{self, Table, role_word};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Read only.
    Viewer,
    /// Read, and change devices, releases and rollouts.
    Operator,
    /// Everything, including tokens and the TrustRoot.
    Admin,
    /// A factory station: registers devices from their own registration
    /// requests and reads the devices it registered and the server info;
    /// nothing else (no device list, releases, rollouts or tokens).
    Factory,
}

impl From<Role> for pb::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::Viewer => Self::Viewer,
            Role::Operator => Self::Operator,
            Role::Admin => Self::Admin,
            Role::Factory => Self::Factory,
        }
    }
}

/// `aloft token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once and never again.
    Create {
        /// A name to recognise the token by, e.g. "ci" or "alice" (1-64 bytes).
        #[arg(long, value_parser = crate::args::token_name)]
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: Role,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token: it stops working at once.
    Revoke {
        /// Token id (from `aloft token list`).
        #[arg(value_parser = crate::args::token_id)]
        id: String,
    },
}

/// Runs one `aloft token` command.
pub async fn run(ctx: &mut Ctx, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { name, role } => create(ctx, name, role).await,
        TokenCommand::List => list(ctx).await,
        TokenCommand::Revoke { id } => revoke(ctx, &id).await,
    }
}

/// A token as `--json` prints it (without its secret).
#[derive(Debug, Serialize)]
pub struct TokenJson {
    id: String,
    name: String,
    role: &'static str,
    created_at: u64,
    revoked: bool,
}

/// Converts a token to its JSON form.
pub fn token_json(t: &pb::TokenInfo) -> TokenJson {
    TokenJson {
        id: t.token_id.clone(),
        name: t.name.clone(),
        role: role_word(t.role),
        created_at: t.created_at,
        revoked: t.revoked,
    }
}

#[derive(Serialize)]
struct CreatedJson {
    #[serde(flatten)]
    info: TokenJson,
    token: String,
}

async fn create(ctx: &mut Ctx, name: String, role: Role) -> anyhow::Result<()> {
    let created = ctx
        .client
        .create_token(pb::CreateTokenRequest {
            name: name.clone(),
            role: pb::Role::from(role) as i32,
        })
        .await
        .map_err(|s| status_error(&format!("creating token {name:?}"), &s))?
        .into_inner();
    let info = created.info.unwrap_or_default();
    if ctx.json() {
        return output::print_json(&CreatedJson {
            info: token_json(&info),
            token: created.token,
        });
    }
    // The secret alone on stdout, so `TOKEN=$(aloft token create ...)` works;
    // the explanation goes to stderr.
    println!("{}", created.token);
    eprintln!(
        "created token {} ({}, {}); the secret above is shown only this once: store it now",
        info.token_id,
        info.name,
        role_word(info.role)
    );
    Ok(())
}

async fn list(ctx: &mut Ctx) -> anyhow::Result<()> {
    let tokens = ctx
        .client
        .list_tokens(pb::ListTokensRequest {})
        .await
        .map_err(|s| status_error("listing tokens", &s))?
        .into_inner()
        .tokens;
    if ctx.json() {
        return output::print_json(&tokens.iter().map(token_json).collect::<Vec<_>>());
    }
    let now = now_unix();
    let mut table = Table::new(&["ID", "NAME", "ROLE", "CREATED", "REVOKED"]);
    for t in &tokens {
        table.row(vec![
            t.token_id.clone(),
            t.name.clone(),
            role_word(t.role).into(),
            age(now, t.created_at),
            if t.revoked { "yes" } else { "no" }.into(),
        ]);
    }
    table.print()
}

async fn revoke(ctx: &mut Ctx, id: &str) -> anyhow::Result<()> {
    let t = ctx
        .client
        .revoke_token(pb::RevokeTokenRequest {
            token_id: id.to_owned(),
        })
        .await
        .map_err(|s| status_error(&format!("revoking token {id}"), &s))?
        .into_inner();
    if ctx.json() {
        return output::print_json(&token_json(&t));
    }
    output::print_fields(&[("revoked", t.token_id.clone()), ("name", t.name.clone())])
}
