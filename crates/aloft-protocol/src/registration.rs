//! Registration requests: how a device whose key pair was born on it asks
//! to be registered, proving it holds the private key.
//!
//! At its first factory boot a device generates its key pair, keeps the
//! private key in its identity store and emits a
//! [`pb::SignedRegistration`]: a [`pb::DeviceRegistration`] (its id, public
//! key, attributes, factory firmware version, creation time, a random nonce,
//! its [`pb::PayloadSupport`]) signed by that very key in the
//! [`Domain::DeviceRegistration`] domain. The signature is the proof of
//! possession: only the holder of the private key can make a request that
//! names the public key and verifies under it, and it covers the id and
//! every attribute, so none of them can be changed on the way.
//!
//! [`verify`] checks, in order: the size ([`MAX_REGISTRATION_LEN`], before
//! any parsing), the encoding, the public key (33 bytes, SEC1 compressed),
//! the signature under that key, then the fields. Freshness (the creation
//! time against the server's clock) and uniqueness are the server's rules.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use prost::Message as _;

use crate::Error;
use crate::keys::{Domain, PublicKey, Signature, SignatureVerifier};
use crate::limits::MAX_NAME_LEN;
use crate::pb;
use crate::types::{DeviceId, Digest, UnixTime, Version};

/// Largest encoded [`pb::DeviceRegistration`] accepted (a request is a few
/// hundred bytes).
pub const MAX_REGISTRATION_LEN: usize = 2048;
/// Bytes of a registration request's nonce.
pub const NONCE_LEN: usize = 16;
/// Most tags a device may carry.
pub const MAX_TAGS: usize = 32;

/// Attribute naming the device's product.
pub const ATTR_PRODUCT: &str = "product";
/// Attribute naming the device's hardware revision.
pub const ATTR_HARDWARE: &str = "hardware";
/// Attribute naming the device's region.
pub const ATTR_REGION: &str = "region";
/// Attribute naming the device's IANA time zone.
pub const ATTR_TIME_ZONE: &str = "time_zone";
/// Attribute holding the device's tags, comma-separated.
pub const ATTR_TAGS: &str = "tags";
/// Attribute marking a test device (`true` or `false`).
pub const ATTR_TEST: &str = "test";

/// A registration request whose proof-of-possession signature and fields
/// were checked ([`verify`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRegistration {
    device_id: DeviceId,
    public_key: PublicKey,
    attributes: pb::DeviceAttributes,
    factory_version: Version,
    created_at: UnixTime,
    payloads: pb::PayloadSupport,
    digest: Digest,
}

impl VerifiedRegistration {
    /// The device asking to be registered.
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// Its public key (the request verified under it).
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// Its attributes, checked (product and hardware present).
    pub fn attributes(&self) -> &pb::DeviceAttributes {
        &self.attributes
    }

    /// The firmware version in its slot A when it made the request.
    pub fn factory_version(&self) -> Version {
        self.factory_version
    }

    /// When the device made the request (its clock).
    pub fn created_at(&self) -> UnixTime {
        self.created_at
    }

    /// What payloads it installs.
    pub fn payloads(&self) -> pb::PayloadSupport {
        self.payloads
    }

    /// SHA-256 of the signed payload: identifies this request exactly.
    pub fn digest(&self) -> Digest {
        self.digest
    }
}

/// Encodes and signs a registration request with the key it names.
///
/// `registration.public_key` must be `key`'s public key (SEC1 compressed),
/// or no server will accept the result.
#[cfg(feature = "sign")]
pub fn seal(
    registration: &pb::DeviceRegistration,
    key: &crate::keys::SecretKey,
) -> pb::SignedRegistration {
    let payload = registration.encode_to_vec();
    let signature = key.sign(Domain::DeviceRegistration, &payload);
    pb::SignedRegistration {
        payload,
        signature: signature.as_bytes().to_vec(),
    }
}

/// Verifies a registration request with the `p256` verifier (see the module
/// docs for the order of checks).
pub fn verify(signed: &pb::SignedRegistration) -> Result<VerifiedRegistration, Error> {
    verify_with(signed, |key| *key)
}

/// [`verify`] with the verifier `prepare` makes from the request's public
/// key (e.g. `aloft_protocol::ring_verify::RingPublicKey::new` on a server).
///
/// Errors: [`Error::TooLarge`], [`Error::Malformed`], [`Error::InvalidKey`],
/// [`Error::BadSignature`] (the request was not signed by the key it names:
/// no proof of possession, or a field was changed after signing), then
/// [`Error::InvalidField`] naming the field.
pub fn verify_with<V: SignatureVerifier>(
    signed: &pb::SignedRegistration,
    prepare: impl FnOnce(&PublicKey) -> V,
) -> Result<VerifiedRegistration, Error> {
    if signed.payload.len() > MAX_REGISTRATION_LEN {
        return Err(Error::TooLarge("registration request"));
    }
    let r = pb::DeviceRegistration::decode(signed.payload.as_slice())
        .map_err(|_| Error::Malformed("registration request"))?;
    if r.public_key.len() != PublicKey::COMPRESSED_LEN {
        return Err(Error::InvalidKey);
    }
    let public_key = PublicKey::from_sec1(&r.public_key)?;
    let signature = Signature::from_slice(&signed.signature)?;
    prepare(&public_key).verify_in(Domain::DeviceRegistration, &signed.payload, &signature)?;
    let device_id = DeviceId::new(&r.device_id)?;
    let attributes = attributes_from_map(&r.attributes)?;
    let factory_version = Version::parse(&r.factory_version)
        .map_err(|_| Error::InvalidField("factory version (MAJOR.MINOR.PATCH)"))?;
    if r.nonce.len() != NONCE_LEN {
        return Err(Error::InvalidField("registration nonce (16 bytes)"));
    }
    let payloads = pb::PayloadSupport::try_from(r.payloads)
        .map_err(|_| Error::InvalidField("payload support"))?;
    Ok(VerifiedRegistration {
        device_id,
        public_key,
        attributes,
        factory_version,
        created_at: UnixTime(r.created_at),
        payloads,
        digest: Digest::of(&signed.payload),
    })
}

/// A name-like value: 1..=[`MAX_NAME_LEN`] bytes, no control characters.
fn name(value: &str, what: &'static str) -> Result<String, Error> {
    if value.is_empty() || value.len() > MAX_NAME_LEN || value.chars().any(char::is_control) {
        Err(Error::InvalidField(what))
    } else {
        Ok(value.to_string())
    }
}

/// A syntactic check of an IANA zone name (`UTC`, `Europe/Berlin`,
/// `America/Argentina/Buenos_Aires`, `Etc/GMT+5`).
pub fn is_iana_zone_name(zone: &str) -> bool {
    zone.len() <= MAX_NAME_LEN
        && zone.split('/').all(|part| {
            part.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
        })
}

/// Reads the attribute map of an identity bundle or registration request:
/// `product` and `hardware` (required), `region`, `time_zone` (an IANA
/// name), `tags` (comma list, at most [`MAX_TAGS`], no whitespace), `test`
/// (`true` or `false`). Any other key is refused, so a typo is not silently
/// dropped.
pub fn attributes_from_map(map: &BTreeMap<String, String>) -> Result<pb::DeviceAttributes, Error> {
    let mut out = pb::DeviceAttributes::default();
    for (key, value) in map {
        match key.as_str() {
            ATTR_PRODUCT => out.product = name(value, "attribute product")?,
            ATTR_HARDWARE => out.hardware = name(value, "attribute hardware")?,
            ATTR_REGION => out.region = name(value, "attribute region")?,
            ATTR_TIME_ZONE => {
                if !is_iana_zone_name(value) {
                    return Err(Error::InvalidField(
                        "attribute time_zone (not an IANA name such as Europe/Berlin)",
                    ));
                }
                out.time_zone = value.clone();
            }
            ATTR_TAGS => {
                let tags: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| name(t, "attribute tags"))
                    .collect::<Result<_, _>>()?;
                if tags.len() > MAX_TAGS {
                    return Err(Error::TooLarge("tag list"));
                }
                if tags.iter().any(|t| t.chars().any(char::is_whitespace)) {
                    return Err(Error::InvalidField("attribute tags (whitespace in a tag)"));
                }
                out.tags = tags;
            }
            ATTR_TEST => {
                out.test_device = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(Error::InvalidField("attribute test (true or false)")),
                }
            }
            _ => {
                return Err(Error::InvalidField(
                    "attribute key (use product, hardware, region, time_zone, tags or test)",
                ));
            }
        }
    }
    if out.product.is_empty() {
        return Err(Error::InvalidField("attribute product (missing)"));
    }
    if out.hardware.is_empty() {
        return Err(Error::InvalidField("attribute hardware (missing)"));
    }
    Ok(out)
}

/// The attribute map of `attrs` (inverse of [`attributes_from_map`]; empty
/// values and `test=false` are left out).
pub fn attributes_to_map(attrs: &pb::DeviceAttributes) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (key, value) in [
        (ATTR_PRODUCT, &attrs.product),
        (ATTR_HARDWARE, &attrs.hardware),
        (ATTR_REGION, &attrs.region),
        (ATTR_TIME_ZONE, &attrs.time_zone),
    ] {
        if !value.is_empty() {
            map.insert(key.to_string(), value.clone());
        }
    }
    if !attrs.tags.is_empty() {
        map.insert(ATTR_TAGS.to_string(), attrs.tags.join(","));
    }
    if attrs.test_device {
        map.insert(ATTR_TEST.to_string(), "true".to_string());
    }
    map
}

#[cfg(all(test, feature = "sign"))]
mod tests {
    use alloc::vec;

    use super::*;
    use crate::keys::SecretKey;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_slice(&[n; 32]).unwrap()
    }

    fn request(key: &SecretKey) -> pb::DeviceRegistration {
        let mut attributes = BTreeMap::new();
        attributes.insert("product".into(), "sensor".into());
        attributes.insert("hardware".into(), "rev-b".into());
        attributes.insert("tags".into(), "line-3,night".into());
        pb::DeviceRegistration {
            device_id: "dev-1".into(),
            public_key: key.public_key().to_sec1_compressed().to_vec(),
            attributes,
            factory_version: "1.0.0".into(),
            created_at: 1_700_000_000,
            nonce: vec![7; NONCE_LEN],
            payloads: pb::PayloadSupport::EncryptedOnly as i32,
        }
    }

    #[test]
    fn a_sealed_request_verifies_with_its_fields() {
        let k = key(3);
        let signed = seal(&request(&k), &k);
        let v = verify(&signed).unwrap();
        assert_eq!(v.device_id().as_str(), "dev-1");
        assert_eq!(*v.public_key(), k.public_key());
        assert_eq!(v.attributes().product, "sensor");
        assert_eq!(v.attributes().tags, ["line-3", "night"]);
        assert_eq!(v.factory_version().to_string(), "1.0.0");
        assert_eq!(v.created_at(), UnixTime(1_700_000_000));
        assert_eq!(v.digest(), Digest::of(&signed.payload));
    }

    #[test]
    fn a_request_signed_by_another_key_is_no_proof_of_possession() {
        let k = key(3);
        // Names k's public key but is signed by key 4.
        let forged = seal(&request(&k), &key(4));
        assert_eq!(verify(&forged), Err(Error::BadSignature));
    }

    #[test]
    fn every_field_is_covered_by_the_signature() {
        let k = key(3);
        let signed = seal(&request(&k), &k);
        let mut other_id = request(&k);
        other_id.device_id = "dev-2".into();
        let swapped = pb::SignedRegistration {
            payload: other_id.encode_to_vec(),
            signature: signed.signature.clone(),
        };
        assert_eq!(verify(&swapped), Err(Error::BadSignature));
        let mut bad = signed.clone();
        bad.signature[10] ^= 1;
        assert_eq!(verify(&bad), Err(Error::BadSignature));
    }

    #[test]
    fn oversized_and_malformed_requests_are_refused_before_crypto() {
        let huge = pb::SignedRegistration {
            payload: vec![0; MAX_REGISTRATION_LEN + 1],
            signature: vec![0; 64],
        };
        assert_eq!(verify(&huge), Err(Error::TooLarge("registration request")));
        let garbage = pb::SignedRegistration {
            payload: vec![0xff; 40],
            signature: vec![0; 64],
        };
        assert_eq!(
            verify(&garbage),
            Err(Error::Malformed("registration request"))
        );
        let k = key(3);
        let mut uncompressed = request(&k);
        uncompressed.public_key = vec![4; 65];
        assert_eq!(verify(&seal(&uncompressed, &k)), Err(Error::InvalidKey));
    }

    #[test]
    fn bad_fields_are_named() {
        let k = key(3);
        let check = |edit: &dyn Fn(&mut pb::DeviceRegistration), want: Error| {
            let mut r = request(&k);
            edit(&mut r);
            assert_eq!(verify(&seal(&r, &k)), Err(want));
        };
        check(
            &|r| r.device_id = "../x".into(),
            Error::InvalidField("device id"),
        );
        check(
            &|r| {
                r.attributes.remove("product");
            },
            Error::InvalidField("attribute product (missing)"),
        );
        check(
            &|r| {
                r.attributes.insert("colour".into(), "red".into());
            },
            Error::InvalidField(
                "attribute key (use product, hardware, region, time_zone, tags or test)",
            ),
        );
        check(
            &|r| {
                r.attributes
                    .insert("time_zone".into(), "Berlin time".into());
            },
            Error::InvalidField("attribute time_zone (not an IANA name such as Europe/Berlin)"),
        );
        check(
            &|r| {
                r.attributes.insert("test".into(), "yes".into());
            },
            Error::InvalidField("attribute test (true or false)"),
        );
        check(
            &|r| r.factory_version = "1.0".into(),
            Error::InvalidField("factory version (MAJOR.MINOR.PATCH)"),
        );
        check(
            &|r| r.nonce = vec![1; 8],
            Error::InvalidField("registration nonce (16 bytes)"),
        );
        check(&|r| r.payloads = 9, Error::InvalidField("payload support"));
    }

    #[test]
    fn attribute_maps_round_trip() {
        let attrs = pb::DeviceAttributes {
            product: "p".into(),
            hardware: "h".into(),
            region: "eu".into(),
            time_zone: "Europe/Berlin".into(),
            tags: vec!["a".into(), "b".into()],
            test_device: true,
        };
        assert_eq!(
            attributes_from_map(&attributes_to_map(&attrs)).unwrap(),
            attrs
        );
    }
}
