//! The pattern registry: each pattern's slots and the interfaces a slot's plugin must
//! (and may) implement. Config validation and `prism patterns` both read this table.

/// One slot of a pattern.
#[derive(Debug)]
pub struct Slot {
    pub name: &'static str,
    /// An optional slot may be left unbound.
    pub optional: bool,
    pub required: &'static [&'static str],
    /// Interfaces some operations use when the bound plugin has them.
    pub optional_interfaces: &'static [&'static str],
}

#[derive(Debug)]
pub struct Pattern {
    pub name: &'static str,
    pub description: &'static str,
    pub slots: &'static [Slot],
    /// Whether this gateway serves the pattern's gRPC API yet.
    pub served: bool,
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

pub static PATTERNS: &[Pattern] = &[
    Pattern {
        name: KEYVALUE,
        description: "Get/set/delete keys, with scan, TTL, batch and compare-and-swap where the plugin has them",
        slots: &[Slot {
            name: "store",
            optional: false,
            required: &["keyvalue_basic"],
            optional_interfaces: &[
                "keyvalue_scan",
                "keyvalue_ttl",
                "keyvalue_batch",
                "keyvalue_cas",
                "keyvalue_transactional",
            ],
        }],
        served: true,
    },
    Pattern {
        name: LIST,
        description: "Lists pushed and popped at either end, with range and trim where the plugin has them",
        slots: &[Slot { name: "store", optional: false, required: &["list_basic"], optional_interfaces: &["list_range"] }],
        served: true,
    },
    Pattern {
        name: PUBSUB,
        description: "Publish to topics and subscribe, with wildcards and durable subscriptions where the plugin has them",
        slots: &[Slot {
            name: "broker",
            optional: false,
            required: &["pubsub_basic"],
            optional_interfaces: &["pubsub_wildcards", "pubsub_persistent"],
        }],
        served: true,
    },
    Pattern {
        name: STREAM,
        description: "Append-only logs read from an offset, with consumer groups and replay where the plugin has them",
        slots: &[Slot {
            name: "log",
            optional: false,
            required: &["stream_basic"],
            optional_interfaces: &["stream_consumer_groups", "stream_replay", "stream_partitioning"],
        }],
        served: true,
    },
    Pattern {
        name: QUEUE,
        description: "Work queues: enqueue, dequeue with visibility timeout, ack/nack, dead letters",
        slots: &[Slot {
            name: "queue",
            optional: false,
            required: &["queue_basic"],
            optional_interfaces: &["queue_visibility", "queue_dead_letter", "queue_delayed"],
        }],
        served: true,
    },
    Pattern {
        name: MULTICAST_REGISTRY,
        description: "Register identities with metadata, enumerate them by filter, multicast to the matches",
        slots: &[
            Slot {
                name: "registry",
                optional: false,
                required: &["keyvalue_basic", "keyvalue_scan"],
                optional_interfaces: &["keyvalue_ttl"],
            },
            Slot { name: "messaging", optional: false, required: &["pubsub_basic"], optional_interfaces: &[] },
            Slot {
                name: "durability",
                optional: true,
                required: &["queue_basic", "queue_visibility", "queue_dead_letter"],
                optional_interfaces: &[],
            },
        ],
        served: true,
    },
];

pub fn find(name: &str) -> Option<&'static Pattern> {
    PATTERNS.iter().find(|pattern| pattern.name == name)
}

pub fn names() -> Vec<&'static str> {
    PATTERNS.iter().map(|pattern| pattern.name).collect()
}
