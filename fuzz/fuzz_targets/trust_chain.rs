//! A TrustRoot chain from arbitrary bytes (a `TrustRootUpdate`): the first
//! envelope is the holder's stored root (`reload_stored`), the rest the
//! successors (`update_chain`); the whole list is also a server's stored
//! chain (`TrustChain::reload_stored`).
//!
//! Properties: no panic; an accepted chain ends at the first root's version
//! plus its length, unexpired; whatever `update_chain` accepts,
//! `TrustChain::reload_stored` accepts too (it skips only expiry), with the
//! same newest root, versions one apart and `successors_of` agreeing; a
//! refused chain names the failing link; at most 32 links are walked.
#![no_main]

use aloft_fuzz::fixtures::NOW;
use aloft_protocol::limits::MAX_TRUST_CHAIN;
use aloft_protocol::pb;
use aloft_protocol::prost::Message as _;
use aloft_protocol::trust::{TrustChain, VerifiedTrustRoot};
use aloft_protocol::{Error, UnixTime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(update) = pb::TrustRootUpdate::decode(data) else {
        return;
    };
    let now = UnixTime(NOW);
    let chain = update.chain;
    let stored = TrustChain::reload_stored(&chain);
    if let Ok(stored) = &stored {
        let roots = stored.roots();
        assert_eq!(roots.len(), chain.len());
        for pair in roots.windows(2) {
            assert_eq!(pair[0].version().checked_add(1), Some(pair[1].version()));
        }
        let first = roots[0].version();
        let behind = stored.successors_of(first);
        assert_eq!(behind.len(), (roots.len() - 1).min(MAX_TRUST_CHAIN));
        assert_eq!(behind, &roots[1..1 + behind.len()]);
        assert!(stored.successors_of(stored.latest().version()).is_empty());
    } else if chain.is_empty() {
        assert_eq!(stored, Err(Error::EmptyChain));
    } else {
        assert!(matches!(stored, Err(Error::ChainLink { .. })), "{stored:?}");
    }

    let Some((first, successors)) = chain.split_first() else {
        return;
    };
    let Ok(current) = VerifiedTrustRoot::reload_stored(first) else {
        assert!(stored.is_err());
        return;
    };
    match current.update_chain(successors, now) {
        Ok(newest) => {
            assert!(successors.len() <= MAX_TRUST_CHAIN);
            assert_eq!(
                u64::from(newest.version()),
                u64::from(current.version()) + successors.len() as u64
            );
            assert!(!newest.is_expired(now));
            let stored = stored.expect("a chain update_chain accepts also reloads");
            assert_eq!(stored.latest(), &newest);
        }
        Err(Error::EmptyChain) => assert!(successors.is_empty()),
        Err(Error::TooLarge(_)) => assert!(successors.len() > MAX_TRUST_CHAIN),
        Err(Error::ChainLink { index, .. }) => {
            assert!((index as usize) < successors.len());
        }
        Err(other) => panic!("update_chain failed without naming a link: {other:?}"),
    }
});
