//! The transaction ids clients see. A plugin's own ids are only unique within one
//! instance (the postgres plugin counts from 1), so two gateways over one database hand
//! out the same ids, and so does one gateway after a restart or a reload. The gateway
//! therefore never shows them: it hands out its own id — this gateway's 16-bit tag, then
//! 48 random bits — and keeps which namespace, instance and plugin transaction it
//! stands for. An id this gateway did not hand out is refused, naming the gateway whose
//! tag it carries, so a call that lands on the wrong gateway can never reach another
//! client's transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use plugin_abi::host::Instance;
use plugin_abi::TransactionId;
use tonic::Status;

/// How long past its timeout an open transaction is remembered (the plugin ends it).
const GRACE: Duration = Duration::from_secs(5);

struct Open {
    namespace: String,
    /// The principal that began it (with auth on): no other may use it.
    owner: Option<String>,
    instance: Weak<Instance>,
    plugin_id: TransactionId,
    expires: Instant,
}

/// How often `begin` drops the entries of transactions that timed out.
const PURGE_EVERY: Duration = Duration::from_secs(1);

/// The open transactions this gateway handed out.
pub struct Transactions {
    tag: u16,
    gateway: String,
    open: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    open: HashMap<u64, Open>,
    purged_at: Option<Instant>,
}

impl Default for Transactions {
    fn default() -> Self {
        Transactions::new(fastrand::u16(..), gateway_name())
    }
}

/// `{hostname}-{pid}`: what an operator can find in `ps` on the right machine.
fn gateway_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{}-{}", if host.is_empty() { "gateway" } else { host }, std::process::id())
}

impl Transactions {
    pub fn new(tag: u16, gateway: String) -> Transactions {
        Transactions { tag, gateway, open: Mutex::default() }
    }

    /// This gateway as errors and BeginTransaction's metadata name it.
    pub fn gateway(&self) -> String {
        format!("{} (transaction tag {:04x})", self.gateway, self.tag)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new client id for the plugin transaction `plugin_id` of `instance`, begun by
    /// `owner`.
    pub fn begin(
        &self,
        namespace: &str,
        instance: &Arc<Instance>,
        plugin_id: TransactionId,
        timeout: Duration,
        owner: Option<String>,
    ) -> u64 {
        let now = Instant::now();
        let mut table = self.lock();
        // At most once a second, not on every begin: the table can hold many.
        if table.purged_at.is_none_or(|at| now.duration_since(at) >= PURGE_EVERY) {
            table.open.retain(|_, transaction| transaction.expires > now);
            table.purged_at = Some(now);
        }
        let open = &mut table.open;
        let id = loop {
            // From the OS's random source, not a fast generator whose next values can be
            // worked out from ids seen: an id is all it takes to act in a transaction.
            let random = getrandom::u64().unwrap_or_else(|_| fastrand::u64(..)) & ((1 << 48) - 1);
            let id = (u64::from(self.tag) << 48) | random;
            if random != 0 && !open.contains_key(&id) {
                break id;
            }
        };
        let transaction = Open {
            namespace: namespace.to_owned(),
            owner,
            instance: Arc::downgrade(instance),
            plugin_id,
            expires: now + timeout + GRACE,
        };
        open.insert(id, transaction);
        id
    }

    /// The plugin transaction a client id stands for, in this namespace and instance,
    /// when `caller` began it. Another caller learns nothing: to it, the id is not open.
    pub fn find(
        &self,
        id: u64,
        namespace: &str,
        instance: &Arc<Instance>,
        caller: Option<&str>,
    ) -> Result<TransactionId, Status> {
        let tag = (id >> 48) as u16;
        if tag != self.tag {
            return Err(Status::failed_precondition(format!(
                "transaction {id:x} was begun on another gateway (transaction tag {tag:04x}), or on this one before it \
                 restarted; this is {}. Send all of a transaction's calls to the gateway that began it",
                self.gateway()
            )));
        }
        let table = self.lock();
        let open = |transaction: &&Open| {
            transaction.expires > Instant::now() && transaction.owner.as_deref() == caller
        };
        let Some(transaction) = table.open.get(&id).filter(open) else {
            return Err(Status::not_found(format!(
                "transaction {id:x} is not open on {}: it was committed, rolled back or timed out, or never begun here",
                self.gateway()
            )));
        };
        if transaction.namespace != namespace {
            return Err(Status::failed_precondition(format!(
                "transaction {id:x} belongs to namespace '{}', not '{namespace}'",
                transaction.namespace
            )));
        }
        if !Weak::ptr_eq(&transaction.instance, &Arc::downgrade(instance)) {
            return Err(Status::failed_precondition(format!(
                "transaction {id:x} was begun before namespace '{namespace}' was reloaded, and ended with it; begin a new one"
            )));
        }
        Ok(transaction.plugin_id)
    }

    /// Forgets a transaction the plugin has ended (committed, rolled back, or refused).
    pub fn end(&self, id: u64) {
        self.lock().open.remove(&id);
    }
}

/// Whether a failed commit or rollback left the plugin's transaction over: after a
/// timeout or an outage it may still be open, and the client may try again.
pub fn ended_by(status: &Status) -> bool {
    !matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Internal)
}
