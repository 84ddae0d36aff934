//! The live group members this instance created, by the id their ack ids carry: Kafka
//! takes a commit only from the member that owns the partition, so acks must find it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

pub(crate) struct Registry<T> {
    live: Mutex<HashMap<u64, Weak<T>>>,
    next: AtomicU64,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        // Ids start at a per-instance base, so an ack id from a replaced instance (before a
        // reload) never names a member of its successor.
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or_default();
        Registry { live: Mutex::default(), next: AtomicU64::new(base) }
    }
}

impl<T> Registry<T> {
    pub(crate) fn add(&self, member: &Arc<T>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, member| member.strong_count() > 0);
        live.insert(id, Arc::downgrade(member));
        id
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<T>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).get(&id).and_then(Weak::upgrade)
    }
}
