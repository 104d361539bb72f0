//! The server's one lock-poisoning policy: a poisoned lock is recovered,
//! never propagated as a panic.
//!
//! Every critical section in the server is short and leaves its data
//! consistent at every point where it could panic (maps are updated by one
//! insert or remove, counters by one store), so the data behind a lock
//! whose holder panicked is still valid. Recovering keeps one failed request
//! from turning every later request that touches the same lock into a
//! panic. Take locks as `mutex.lock().recover()`.

use std::sync::{LockResult, PoisonError};

/// Recovers the guard of a poisoned lock (see the module docs).
pub(crate) trait Recover<G> {
    /// The guard, whether or not a previous holder panicked.
    fn recover(self) -> G;
}

impl<G> Recover<G> for LockResult<G> {
    fn recover(self) -> G {
        self.unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::Recover as _;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_poisoned_lock_still_serves_its_data() {
        let m = Arc::new(Mutex::new(vec![1]));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = m2.lock().recover();
            panic!("a request fails while holding the lock");
        })
        .join();
        assert!(m.is_poisoned());
        m.lock().recover().push(2);
        assert_eq!(*m.lock().recover(), [1, 2]);
    }
}
