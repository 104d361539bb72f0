//! `aloft product ...`: capability profiles. A product declares what its
//! devices install (encrypted payloads, the default, or signature-only for
//! processors that cannot decrypt) and whether its data is sensitive (then
//! only encrypted releases). The server checks releases, rollouts and
//! registrations against the declaration.

use aloft_protocol::pb;
use clap::{Subcommand, ValueEnum};
use serde::Serialize;

use crate::Ctx;
use crate::client::status_error;
use crate::duration::{age, now_unix};
use crate::output::{self, Table};

/// How a product's releases travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Payloads {
    /// Encrypted (AES-256-GCM) and signed: the default.
    Encrypted,
    /// Signed, not encrypted: for devices that cannot decrypt; never for
    /// sensitive data.
    SignatureOnly,
}

impl From<Payloads> for pb::PayloadEncoding {
    fn from(p: Payloads) -> Self {
        match p {
            Payloads::Encrypted => Self::Encrypted,
            Payloads::SignatureOnly => Self::SignatureOnly,
        }
    }
}

/// `aloft product` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProductCommand {
    /// Declare a product's payloads and sensitivity (operator).
    ///
    /// A sensitive product is encrypted: `--sensitive --payloads
    /// signature-only` is refused, and so is a signature-only release upload
    /// for a product marked sensitive.
    Set {
        /// Product name, as in the devices' `product` attribute.
        name: String,
        /// What its devices install.
        #[arg(long, value_enum, default_value = "encrypted")]
        payloads: Payloads,
        /// Its data is sensitive: only encrypted releases.
        #[arg(long)]
        sensitive: bool,
    },
    /// List declared products (a product never declared is encrypted, not
    /// sensitive).
    List,
}

/// Runs one `aloft product` command.
pub async fn run(ctx: &mut Ctx, cmd: ProductCommand) -> anyhow::Result<()> {
    match cmd {
        ProductCommand::Set {
            name,
            payloads,
            sensitive,
        } => {
            let p = ctx
                .client
                .set_product(pb::SetProductRequest {
                    product: name.clone(),
                    payloads: pb::PayloadEncoding::from(payloads) as i32,
                    sensitive,
                })
                .await
                .map_err(|s| status_error(&format!("declaring product {name}"), &s))?
                .into_inner();
            if ctx.json() {
                return output::print_json(&product_json(&p));
            }
            output::print_fields(&[
                ("product", p.product.clone()),
                ("payloads", encoding_word(p.payloads).into()),
                ("sensitive", if p.sensitive { "yes" } else { "no" }.into()),
            ])
        }
        ProductCommand::List => {
            let products = ctx
                .client
                .list_products(pb::ListProductsRequest {})
                .await
                .map_err(|s| status_error("listing products", &s))?
                .into_inner()
                .products;
            if ctx.json() {
                return output::print_json(&products.iter().map(product_json).collect::<Vec<_>>());
            }
            let now = now_unix();
            let mut table = Table::new(&["PRODUCT", "PAYLOADS", "SENSITIVE", "UPDATED"]);
            for p in &products {
                table.row(vec![
                    p.product.clone(),
                    encoding_word(p.payloads).into(),
                    if p.sensitive { "yes" } else { "no" }.into(),
                    age(now, p.updated_at),
                ]);
            }
            table.print()
        }
    }
}

/// `encrypted` or `signature-only`.
pub fn encoding_word(e: i32) -> &'static str {
    match pb::PayloadEncoding::try_from(e) {
        Ok(pb::PayloadEncoding::SignatureOnly) => "signature-only",
        _ => "encrypted",
    }
}

/// A product as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct ProductJson {
    product: String,
    payloads: &'static str,
    sensitive: bool,
    updated_at: u64,
}

fn product_json(p: &pb::ProductInfo) -> ProductJson {
    ProductJson {
        product: p.product.clone(),
        payloads: encoding_word(p.payloads),
        sensitive: p.sensitive,
        updated_at: p.updated_at,
    }
}
