//! Products and their capability profiles: what a product's devices
//! install (encrypted or signature-only payloads) and whether its data is
//! sensitive.
//!
//! A product never declared is encrypted and not sensitive (what every
//! release was before profiles existed). A sensitive product is always
//! encrypted: its data needs a processor that decrypts, so declaring it
//! sensitive and signature-only is refused. A release must match its
//! product: the server refuses to store a signature-only release for a
//! product that is encrypted (with its own message when it is sensitive),
//! and an encrypted one for a signature-only product (its devices could not
//! decrypt it); creating a rollout re-checks against the declaration of the
//! moment, so a product declared sensitive after a signature-only upload
//! gets no rollout of it.

use aloft_protocol::pb;
use tonic::Status;

use crate::Shared;
use crate::registration::encoding_word;

/// The declaration of `product` (the default when never declared).
pub(crate) fn declaration(shared: &Shared, product: &str) -> Result<pb::ProductInfo, Status> {
    Ok(shared
        .store
        .product(product)?
        .unwrap_or_else(|| pb::ProductInfo {
            product: product.to_owned(),
            ..Default::default()
        }))
}

fn encoding_of(raw: i32) -> pb::PayloadEncoding {
    pb::PayloadEncoding::try_from(raw).unwrap_or(pb::PayloadEncoding::Encrypted)
}

/// `SetProduct`: validates and stores a declaration; the caller flushes.
pub(crate) fn set(shared: &Shared, req: pb::SetProductRequest) -> Result<pb::ProductInfo, Status> {
    let name = req.product.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "product name must be 1 to 64 bytes without control characters",
        ));
    }
    let payloads = pb::PayloadEncoding::try_from(req.payloads)
        .map_err(|_| Status::invalid_argument("payloads must be encrypted or signature-only"))?;
    if req.sensitive && payloads == pb::PayloadEncoding::SignatureOnly {
        return Err(Status::invalid_argument(format!(
            "product {name} cannot be sensitive and signature-only: sensitive data needs devices that decrypt, so its releases must be encrypted (declare it with --payloads encrypted)"
        )));
    }
    let info = pb::ProductInfo {
        product: name.to_owned(),
        payloads: payloads as i32,
        sensitive: req.sensitive,
        updated_at: shared.now().0,
    };
    shared.store.put_product(&info)?;
    Ok(info)
}

/// Refuses a release of `encoding` for `product` when the product's
/// declaration does not allow it (see the module docs).
pub(crate) fn check_release(
    shared: &Shared,
    product: &str,
    encoding: pb::PayloadEncoding,
) -> Result<(), Status> {
    let declared = declaration(shared, product)?;
    let payloads = encoding_of(declared.payloads);
    if encoding == payloads {
        return Ok(());
    }
    Err(Status::failed_precondition(match encoding {
        pb::PayloadEncoding::SignatureOnly if declared.sensitive => format!(
            "product {product} is marked sensitive: its data must be encrypted, so a signature-only release is refused; build the release encrypted"
        ),
        pb::PayloadEncoding::SignatureOnly => format!(
            "product {product} releases {} payloads: a signature-only release is refused; if its devices cannot decrypt, declare it first with `aloft product set {product} --payloads signature-only`",
            encoding_word(payloads)
        ),
        pb::PayloadEncoding::Encrypted => format!(
            "product {product} is declared signature-only: its devices cannot decrypt, so an encrypted release is refused; build the release with --signature-only"
        ),
    }))
}
