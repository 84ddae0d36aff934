use std::fmt;

/// The interfaces a plugin can declare. Each travels across the ABI by its
/// snake_case name, so a host can report (and skip) names it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interface {
    KeyValueBasic,
    KeyValueScan,
    KeyValueTtl,
    KeyValueBatch,
    KeyValueCas,
    KeyValueTransactional,
    ListBasic,
    ListRange,
    QueueBasic,
    QueueVisibility,
    QueueDeadLetter,
    QueueDelayed,
    PubSubBasic,
    PubSubWildcards,
    PubSubPersistent,
    StreamBasic,
    StreamConsumerGroups,
    StreamReplay,
    StreamPartitioning,
    StateTransfer,
}

impl Interface {
    pub const ALL: [Interface; 20] = [
        Interface::KeyValueBasic,
        Interface::KeyValueScan,
        Interface::KeyValueTtl,
        Interface::KeyValueBatch,
        Interface::KeyValueCas,
        Interface::KeyValueTransactional,
        Interface::ListBasic,
        Interface::ListRange,
        Interface::QueueBasic,
        Interface::QueueVisibility,
        Interface::QueueDeadLetter,
        Interface::QueueDelayed,
        Interface::PubSubBasic,
        Interface::PubSubWildcards,
        Interface::PubSubPersistent,
        Interface::StreamBasic,
        Interface::StreamConsumerGroups,
        Interface::StreamReplay,
        Interface::StreamPartitioning,
        Interface::StateTransfer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Interface::KeyValueBasic => "keyvalue_basic",
            Interface::KeyValueScan => "keyvalue_scan",
            Interface::KeyValueTtl => "keyvalue_ttl",
            Interface::KeyValueBatch => "keyvalue_batch",
            Interface::KeyValueCas => "keyvalue_cas",
            Interface::KeyValueTransactional => "keyvalue_transactional",
            Interface::ListBasic => "list_basic",
            Interface::ListRange => "list_range",
            Interface::QueueBasic => "queue_basic",
            Interface::QueueVisibility => "queue_visibility",
            Interface::QueueDeadLetter => "queue_dead_letter",
            Interface::QueueDelayed => "queue_delayed",
            Interface::PubSubBasic => "pubsub_basic",
            Interface::PubSubWildcards => "pubsub_wildcards",
            Interface::PubSubPersistent => "pubsub_persistent",
            Interface::StreamBasic => "stream_basic",
            Interface::StreamConsumerGroups => "stream_consumer_groups",
            Interface::StreamReplay => "stream_replay",
            Interface::StreamPartitioning => "stream_partitioning",
            Interface::StateTransfer => "state_transfer",
        }
    }

    pub fn from_name(name: &str) -> Option<Interface> {
        Interface::ALL.into_iter().find(|i| i.name() == name)
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for interface in Interface::ALL {
            assert_eq!(Interface::from_name(interface.name()), Some(interface));
        }
        assert_eq!(Interface::from_name("keyvalue_teleport"), None);
    }
}
