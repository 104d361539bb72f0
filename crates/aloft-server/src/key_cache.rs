//! Device keys prepared for ring, by their stored SEC1 bytes.
//!
//! A device's key is stored SEC1-compressed; ring verifies against the
//! uncompressed point, and decompressing (a square root in the field, with
//! p256) cost about 4% of the server's CPU per check-in (BENCHMARKS.md,
//! benchmark 3). The cache is keyed by the stored bytes themselves, so an
//! entry can never stand for another key: a re-keyed device's new bytes
//! simply miss. It is bounded; when full it starts again empty.

use std::collections::HashMap;
use std::sync::Mutex;

use aloft_protocol::PublicKey;
use aloft_protocol::ring_verify::RingPublicKey;

use crate::sync::Recover as _;

/// Length of a SEC1-compressed P-256 key.
const COMPRESSED_LEN: usize = 33;

/// Entries kept at most (about 100 bytes each).
pub(crate) const DEFAULT_CAPACITY: usize = 65_536;

/// Parsed device keys (see the module docs).
pub(crate) struct KeyCache {
    keys: Mutex<HashMap<[u8; COMPRESSED_LEN], RingPublicKey>>,
    capacity: usize,
}

impl KeyCache {
    /// An empty cache holding at most `capacity` keys.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The ring form of the key stored as `sec1`. Errors: the bytes are not
    /// a valid P-256 key.
    pub(crate) fn get(&self, sec1: &[u8]) -> Result<RingPublicKey, aloft_protocol::Error> {
        let Ok(compressed) = <[u8; COMPRESSED_LEN]>::try_from(sec1) else {
            // Not the stored form (an uncompressed key): parse every time.
            return PublicKey::from_sec1(sec1).map(|k| RingPublicKey::new(&k));
        };
        if let Some(key) = self.keys.lock().recover().get(&compressed) {
            return Ok(*key);
        }
        let key = RingPublicKey::new(&PublicKey::from_sec1(sec1)?);
        let mut keys = self.keys.lock().recover();
        if keys.len() >= self.capacity {
            keys.clear();
        }
        keys.insert(compressed, key);
        Ok(key)
    }

    /// Keys held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.lock().recover().len()
    }
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_protocol::SecretKey;
    use aloft_protocol::keys::Domain;

    #[test]
    fn a_cached_key_verifies_what_its_own_key_signs_and_nothing_else() {
        let cache = KeyCache::new(8);
        let a = SecretKey::generate();
        let b = SecretKey::generate();
        let a_bytes = a.public_key().to_sec1_compressed();
        let sig = a.sign(Domain::DeviceMessage, b"hello");
        for _ in 0..2 {
            // A miss, then a hit: the same answers.
            let key = cache.get(&a_bytes).unwrap();
            key.verify(Domain::DeviceMessage, b"hello", &sig).unwrap();
            assert!(key.verify(Domain::DeviceMessage, b"hellO", &sig).is_err());
        }
        let other = cache.get(&b.public_key().to_sec1_compressed()).unwrap();
        assert!(other.verify(Domain::DeviceMessage, b"hello", &sig).is_err());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn bytes_that_are_no_key_are_refused_and_not_cached() {
        let cache = KeyCache::new(8);
        // An x coordinate beyond the field's prime.
        let mut bad = [0xffu8; COMPRESSED_LEN];
        bad[0] = 0x02;
        assert!(cache.get(&bad).is_err());
        assert!(cache.get(&[1, 2, 3]).is_err());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_full_cache_starts_again_and_stays_bounded() {
        let cache = KeyCache::new(3);
        let keys: Vec<_> = (0..7).map(|_| SecretKey::generate()).collect();
        for k in &keys {
            cache.get(&k.public_key().to_sec1_compressed()).unwrap();
            assert!(cache.len() <= 3);
        }
        // Still right after it was cleared.
        let sig = keys[0].sign(Domain::DeviceMessage, b"m");
        let again = cache
            .get(&keys[0].public_key().to_sec1_compressed())
            .unwrap();
        again.verify(Domain::DeviceMessage, b"m", &sig).unwrap();
    }
}
