//! The audit log's chain: how records link and how a copy of the log is
//! checked (no I/O; the server appends, `aloft audit verify` checks).
//!
//! - Record `n` (`pb::AuditRecord`, seq from 1) holds `prev_hash`, the chain
//!   hash of record `n - 1` ([`GENESIS`] for the first). The chain hash of a
//!   record is `SHA-256("aloft/v1/audit-record\0" || bytes)` over its exact
//!   stored bytes: nothing is re-encoded to check it.
//! - At intervals the server signs an `AuditHead { seq, hash, time }` with
//!   its directive key in [`Domain::AuditHead`]. A head pins every record up
//!   to `seq`: altering, deleting or reordering any of them, or cutting the
//!   log short below it, is found.
//! - [`verify`] names what is wrong, record by record ([`Finding`]).
//!   Records after the newest head are protected by the links only: a
//!   deleted tail after it is not detectable from the log alone (compare
//!   with heads kept elsewhere).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use prost::Message as _;
use sha2::{Digest as _, Sha256};

use crate::envelope::verify_threshold;
use crate::keys::{Domain, PublicKey};
use crate::pb;

/// The domain tag of record chain hashes.
pub const RECORD_TAG: &[u8] = b"aloft/v1/audit-record\0";

/// A chain hash (SHA-256).
pub type ChainHash = [u8; 32];

/// The `prev_hash` of the first record.
pub const GENESIS: ChainHash = [0; 32];

/// The chain hash of a record's stored bytes.
pub fn chain_hash(record_bytes: &[u8]) -> ChainHash {
    let mut h = Sha256::new();
    h.update(RECORD_TAG);
    h.update(record_bytes);
    h.finalize().into()
}

/// Makes `record` the one after `(prev_seq, prev_hash)`: sets its seq and
/// link and returns its bytes (to store exactly) and its chain hash.
pub fn link(
    record: &mut pb::AuditRecord,
    prev_seq: u64,
    prev_hash: &ChainHash,
) -> (Vec<u8>, ChainHash) {
    record.seq = prev_seq + 1;
    record.prev_hash = prev_hash.to_vec();
    let bytes = record.encode_to_vec();
    let hash = chain_hash(&bytes);
    (bytes, hash)
}

/// One thing wrong with a copy of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// The bytes stored at this position are not an audit record.
    Undecodable {
        /// The position (store key).
        position: u64,
    },
    /// The record's content changed after it was written: the next record
    /// (or a signed head) links to other bytes.
    Altered {
        /// The record's seq.
        seq: u64,
        /// What showed it.
        by: AlteredBy,
    },
    /// Records `from..=to` are gone.
    Missing {
        /// First missing seq.
        from: u64,
        /// Last missing seq.
        to: u64,
    },
    /// The record stored at `position` says it is record `claims`: records
    /// were reordered or moved.
    Moved {
        /// The position (store key).
        position: u64,
        /// The seq the record holds.
        claims: u64,
    },
    /// A head does not verify under the server keys given, or does not decode.
    BadHead {
        /// Its index in the head list.
        index: usize,
    },
    /// The log ends before a signed head's seq: its tail was deleted.
    Truncated {
        /// The last seq present (0 = none).
        last: u64,
        /// The signed head's seq.
        head: u64,
    },
}

/// How an alteration was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlteredBy {
    /// The next record links to other bytes.
    NextLink,
    /// A signed head pins other bytes.
    SignedHead,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Undecodable { position } => {
                write!(
                    f,
                    "record {position} is not an audit record (its bytes were altered)"
                )
            }
            Self::Altered {
                seq,
                by: AlteredBy::NextLink,
            } => write!(
                f,
                "record {seq} was altered: record {} links to other content",
                seq + 1
            ),
            Self::Altered {
                seq,
                by: AlteredBy::SignedHead,
            } => write!(
                f,
                "record {seq} was altered: the server's signed head pins other content"
            ),
            Self::Missing { from, to } if from == to => write!(f, "record {from} was deleted"),
            Self::Missing { from, to } => write!(f, "records {from} to {to} were deleted"),
            Self::Moved { position, claims } => write!(
                f,
                "records were reordered: position {position} holds record {claims}"
            ),
            Self::BadHead { index } => write!(
                f,
                "signed head #{} does not verify under the server keys of the TrustRoot",
                index + 1
            ),
            Self::Truncated { last, head } => write!(
                f,
                "records {} to {head} were deleted: the log ends at {last} but a signed head covers {head}",
                last + 1
            ),
        }
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Records examined.
    pub records: u64,
    /// Heads whose signature verified.
    pub heads_verified: usize,
    /// The highest seq a verified head covers (0 = none).
    pub signed_through: u64,
    /// The highest seq present.
    pub last_seq: u64,
    /// Everything wrong, in log order; empty = the log is intact.
    pub findings: Vec<Finding>,
}

/// Checks a copy of the log: `entries` are `(position, stored bytes)` in
/// position order, `heads` the signed heads, `server_keys` the keys that may
/// sign them (the server keys of every TrustRoot the server held).
pub fn verify(
    entries: &[(u64, Vec<u8>)],
    heads: &[pb::SignedEnvelope],
    server_keys: &[PublicKey],
) -> Report {
    let mut report = Report {
        records: entries.len() as u64,
        ..Report::default()
    };
    let mut findings = Vec::new();
    // By the seq each record claims: (prev_hash, own chain hash).
    let mut by_seq: BTreeMap<u64, (Vec<u8>, ChainHash)> = BTreeMap::new();
    let mut expected = 1u64;
    for (position, bytes) in entries {
        let position = *position;
        if position > expected {
            findings.push(Finding::Missing {
                from: expected,
                to: position - 1,
            });
        }
        expected = expected.max(position + 1);
        let Ok(record) = pb::AuditRecord::decode(bytes.as_slice()) else {
            findings.push(Finding::Undecodable { position });
            continue;
        };
        if record.seq != position {
            findings.push(Finding::Moved {
                position,
                claims: record.seq,
            });
        }
        by_seq
            .entry(record.seq)
            .or_insert((record.prev_hash, chain_hash(bytes)));
    }
    report.last_seq = expected - 1;

    // A link s-1 -> s is broken when record s's prev_hash is not record
    // s-1's hash. One altered record s breaks s -> s+1 (its hash changed);
    // an altered prev_hash breaks s-1 -> s as well, so two broken links in
    // a row blame the record between them.
    let broken: Vec<u64> = by_seq
        .iter()
        .filter_map(|(&seq, (prev, _))| {
            let want = if seq == 1 {
                Some(GENESIS)
            } else {
                by_seq.get(&(seq - 1)).map(|(_, h)| *h)
            };
            match want {
                Some(want) if prev.as_slice() != want => Some(seq),
                _ => None,
            }
        })
        .collect();
    let mut i = 0;
    while i < broken.len() {
        let s = broken[i];
        if broken.get(i + 1) == Some(&(s + 1)) {
            findings.push(Finding::Altered {
                seq: s,
                by: AlteredBy::NextLink,
            });
            i += 2;
        } else {
            findings.push(Finding::Altered {
                seq: s - 1,
                by: AlteredBy::NextLink,
            });
            i += 1;
        }
    }

    for (index, envelope) in heads.iter().enumerate() {
        let head = verify_threshold(envelope, Domain::AuditHead, server_keys, 1)
            .ok()
            .and_then(|()| pb::AuditHead::decode(envelope.payload.as_slice()).ok());
        let Some(head) = head else {
            findings.push(Finding::BadHead { index });
            continue;
        };
        report.heads_verified += 1;
        report.signed_through = report.signed_through.max(head.seq);
        match by_seq.get(&head.seq) {
            Some((_, hash)) if hash.as_slice() != head.hash.as_slice() => {
                let finding = Finding::Altered {
                    seq: head.seq,
                    by: AlteredBy::SignedHead,
                };
                if !findings
                    .iter()
                    .any(|f| matches!(f, Finding::Altered { seq, .. } if *seq == head.seq))
                {
                    findings.push(finding);
                }
            }
            None if head.seq > report.last_seq => {
                let finding = Finding::Truncated {
                    last: report.last_seq,
                    head: head.seq,
                };
                if !findings.contains(&finding) {
                    findings.push(finding);
                }
            }
            _ => {}
        }
    }
    findings.sort_by_key(|f| match f {
        Finding::Undecodable { position } | Finding::Moved { position, .. } => *position,
        Finding::Altered { seq, .. } => *seq,
        Finding::Missing { from, .. } => *from,
        Finding::Truncated { last, .. } => *last + 1,
        Finding::BadHead { .. } => u64::MAX,
    });
    report.findings = findings;
    report
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::SecretKey;
    use crate::envelope;

    fn log(n: u64) -> Vec<(u64, Vec<u8>)> {
        let mut prev = (0, GENESIS);
        (1..=n)
            .map(|i| {
                let mut r = pb::AuditRecord {
                    method: alloc::format!("Call{i}"),
                    ..Default::default()
                };
                let (bytes, hash) = link(&mut r, prev.0, &prev.1);
                prev = (r.seq, hash);
                (r.seq, bytes)
            })
            .collect()
    }

    fn head(key: &SecretKey, entries: &[(u64, Vec<u8>)], seq: u64) -> pb::SignedEnvelope {
        let bytes = &entries.iter().find(|(s, _)| *s == seq).unwrap().1;
        let head = pb::AuditHead {
            seq,
            hash: chain_hash(bytes).to_vec(),
            time: 1,
        };
        envelope::seal(&head, Domain::AuditHead, &[key])
    }

    fn alter(bytes: &[u8]) -> Vec<u8> {
        let mut r = pb::AuditRecord::decode(bytes).unwrap();
        r.message = "nothing to see".into();
        r.encode_to_vec()
    }

    #[test]
    fn an_intact_log_with_heads_verifies() {
        let key = SecretKey::generate();
        let entries = log(5);
        let heads = [head(&key, &entries, 3), head(&key, &entries, 5)];
        let report = verify(&entries, &heads, &[key.public_key()]);
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!((report.heads_verified, report.signed_through), (2, 5));
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let key = SecretKey::generate();
        let clean = log(12);
        let heads = [head(&key, &clean, 12)];
        let mut entries = clean.clone();
        entries[2].1 = alter(&entries[2].1); // record 3
        entries.remove(5); // record 6 (index 5)
        // Records 9 and 10 swap places (indices 7 and 8 after the removal).
        let (a, b) = (entries[7].1.clone(), entries[8].1.clone());
        entries[7].1 = b;
        entries[8].1 = a;
        let report = verify(&entries, &heads, &[key.public_key()]);
        let text: Vec<_> = report
            .findings
            .iter()
            .map(|f| alloc::format!("{f}"))
            .collect();
        assert_eq!(
            report.findings,
            [
                Finding::Altered {
                    seq: 3,
                    by: AlteredBy::NextLink
                },
                Finding::Missing { from: 6, to: 6 },
                Finding::Moved {
                    position: 9,
                    claims: 10
                },
                Finding::Moved {
                    position: 10,
                    claims: 9
                },
            ],
            "{text:?}"
        );
        assert!(text[0].contains("record 3 was altered"), "{text:?}");
        assert!(text[1].contains("record 6 was deleted"), "{text:?}");
    }

    #[test]
    fn the_last_record_and_a_cut_tail_are_caught_by_a_head() {
        let key = SecretKey::generate();
        let clean = log(4);
        let heads = [head(&key, &clean, 4)];
        let mut entries = clean.clone();
        entries[3].1 = alter(&entries[3].1);
        let report = verify(&entries, &heads, &[key.public_key()]);
        assert_eq!(
            report.findings,
            [Finding::Altered {
                seq: 4,
                by: AlteredBy::SignedHead
            }]
        );
        let report = verify(&clean[..2], &heads, &[key.public_key()]);
        assert_eq!(report.findings, [Finding::Truncated { last: 2, head: 4 }]);
    }

    #[test]
    fn a_head_by_another_key_or_domain_is_refused() {
        let key = SecretKey::generate();
        let entries = log(2);
        let forged = head(&SecretKey::generate(), &entries, 2);
        let mut wrong_domain = head(&key, &entries, 2);
        wrong_domain = envelope::seal(
            &pb::AuditHead::decode(wrong_domain.payload.as_slice()).unwrap(),
            Domain::Directive,
            &[&key],
        );
        let report = verify(&entries, &[forged, wrong_domain], &[key.public_key()]);
        assert_eq!(
            report.findings,
            [Finding::BadHead { index: 0 }, Finding::BadHead { index: 1 }]
        );
        assert_eq!(report.heads_verified, 0);
    }

    #[test]
    fn an_altered_link_blames_its_own_record() {
        let entries = {
            let mut e = log(5);
            let mut r = pb::AuditRecord::decode(e[2].1.as_slice()).unwrap();
            r.prev_hash = alloc::vec![7; 32];
            e[2].1 = r.encode_to_vec();
            e
        };
        let report = verify(&entries, &[], &[]);
        assert_eq!(
            report.findings,
            [Finding::Altered {
                seq: 3,
                by: AlteredBy::NextLink
            }]
        );
    }
}
