//! The pattern registry: each pattern's slots and the interfaces a slot's plugin must
//! (and may) implement. Config validation and `prism patterns` both read this table.

use plugin_abi::Interface;

/// One slot of a pattern.
#[derive(Debug)]
pub struct Slot {
    pub name: &'static str,
    /// An optional slot may be left unbound.
    pub optional: bool,
    pub required: &'static [Interface],
    /// Interfaces some operations use when the bound plugin has them.
    pub optional_interfaces: &'static [Interface],
}

#[derive(Debug)]
pub struct Pattern {
    pub name: &'static str,
    pub description: &'static str,
    pub slots: &'static [Slot],
}

/// `keyvalue_basic + keyvalue_scan`: interface names joined for messages.
pub fn interface_names(interfaces: &[Interface], separator: &str) -> String {
    interfaces.iter().map(|interface| interface.name()).collect::<Vec<_>>().join(separator)
}

impl Pattern {
    pub fn slot(&self, name: &str) -> Option<&'static Slot> {
        self.slots.iter().find(|slot| slot.name == name)
    }
}

pub const KEYVALUE: &str = "keyvalue";
pub const LIST: &str = "list";
pub const QUEUE: &str = "queue";
pub const PUBSUB: &str = "pubsub";
pub const STREAM: &str = "stream";
pub const MULTICAST_REGISTRY: &str = "multicast-registry";

/// The optional slot where a pattern with idempotent writes keeps its token records
/// (crate::store::idempotency); unbound, they are kept in this process's memory.
pub const IDEMPOTENCY: &str = "idempotency";
const IDEMPOTENCY_SLOT: Slot = Slot {
    name: IDEMPOTENCY,
    optional: true,
    required: &[Interface::KeyValueBasic, Interface::KeyValueCas],
    optional_interfaces: &[],
};

/// The optional slot where a pattern keeps values and payloads above
/// `server.claim_check_threshold_bytes` (crate::store::claim_check).
pub const CLAIM_CHECK: &str = "claim_check";
const CLAIM_CHECK_SLOT: Slot = Slot {
    name: CLAIM_CHECK,
    optional: true,
    required: &[Interface::ObjectStoreBasic],
    optional_interfaces: &[],
};

pub static PATTERNS: &[Pattern] = &[
    Pattern {
        name: KEYVALUE,
        description: "Get/set/delete keys, with scan, TTL, batch and compare-and-swap where the plugin has them",
        slots: &[
            Slot {
                name: "store",
                optional: false,
                required: &[Interface::KeyValueBasic],
                optional_interfaces: &[
                    Interface::KeyValueScan,
                    Interface::KeyValueTtl,
                    Interface::KeyValueBatch,
                    Interface::KeyValueCas,
                    Interface::KeyValueTransactional,
                ],
            },
            IDEMPOTENCY_SLOT,
            CLAIM_CHECK_SLOT,
        ],
    },
    Pattern {
        name: LIST,
        description: "Lists pushed and popped at either end, with range and trim where the plugin has them",
        slots: &[Slot { name: "store", optional: false, required: &[Interface::ListBasic], optional_interfaces: &[Interface::ListRange] }],
    },
    Pattern {
        name: PUBSUB,
        description: "Publish to topics and subscribe, with wildcards and durable subscriptions where the plugin has them",
        slots: &[
            Slot {
                name: "broker",
                optional: false,
                required: &[Interface::PubSubBasic],
                optional_interfaces: &[Interface::PubSubWildcards, Interface::PubSubPersistent],
            },
            IDEMPOTENCY_SLOT,
            CLAIM_CHECK_SLOT,
        ],
    },
    Pattern {
        name: STREAM,
        description: "Append-only logs read from an offset, with consumer groups and replay where the plugin has them",
        slots: &[
            Slot {
                name: "log",
                optional: false,
                required: &[Interface::StreamBasic],
                optional_interfaces: &[
                    Interface::StreamConsumerGroups,
                    Interface::StreamReplay,
                    Interface::StreamPartitioning,
                ],
            },
            IDEMPOTENCY_SLOT,
        ],
    },
    Pattern {
        name: QUEUE,
        description: "Work queues: enqueue, dequeue with visibility timeout, ack/nack, dead letters",
        slots: &[
            Slot {
                name: "queue",
                optional: false,
                required: &[Interface::QueueBasic],
                optional_interfaces: &[Interface::QueueVisibility, Interface::QueueDeadLetter, Interface::QueueDelayed],
            },
            IDEMPOTENCY_SLOT,
            CLAIM_CHECK_SLOT,
        ],
    },
    Pattern {
        name: MULTICAST_REGISTRY,
        description: "Register identities with metadata, enumerate them by filter, multicast to the matches",
        slots: &[
            Slot {
                name: "registry",
                optional: false,
                required: &[Interface::KeyValueBasic, Interface::KeyValueScan],
                optional_interfaces: &[Interface::KeyValueTtl],
            },
            Slot { name: "messaging", optional: false, required: &[Interface::PubSubBasic], optional_interfaces: &[] },
            Slot {
                name: "durability",
                optional: true,
                required: &[Interface::QueueBasic, Interface::QueueVisibility, Interface::QueueDeadLetter],
                optional_interfaces: &[],
            },
        ],
    },
];

pub fn find(name: &str) -> Option<&'static Pattern> {
    PATTERNS.iter().find(|pattern| pattern.name == name)
}

pub fn names() -> Vec<&'static str> {
    PATTERNS.iter().map(|pattern| pattern.name).collect()
}
