use std::fmt;

/// The one list of interfaces. Each row names, for one interface: its `Interface`
/// variant (also the name of its safe trait and of its `export_plugin!` marker), its
/// snake_case name (the wire name, the `FfiInstance` accessor, the host's `Instance`
/// accessor and the acceptance suite's module), its FFI box and trait-object types, and
/// its host handle. `Interface`, the markers, the plugin's instance object, the host's
/// interface table and the suite lookup are generated from it.
///
/// Adding an interface: its trait (traits.rs), its `#[sabi_trait]` object and adapter
/// (ffi/), a default accessor at the end of `FfiInstance`, a row here, its host handle
/// (ffi/host.rs) and its acceptance suite. Rows are in `FfiInstance`'s order.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_interface {
    ($callback:path) => {
        $callback! {
            KeyValueBasic          keyvalue_basic          KeyValueBasicBox, FfiKeyValueBasic_TO, KeyValueBasicHandle;
            KeyValueTtl            keyvalue_ttl            KeyValueTtlBox, FfiKeyValueTtl_TO, KeyValueTtlHandle;
            KeyValueScan           keyvalue_scan           KeyValueScanBox, FfiKeyValueScan_TO, KeyValueScanHandle;
            KeyValueBatch          keyvalue_batch          KeyValueBatchBox, FfiKeyValueBatch_TO, KeyValueBatchHandle;
            KeyValueCas            keyvalue_cas            KeyValueCasBox, FfiKeyValueCas_TO, KeyValueCasHandle;
            KeyValueTransactional  keyvalue_transactional  KeyValueTransactionalBox, FfiKeyValueTransactional_TO, KeyValueTransactionalHandle;
            ListBasic              list_basic              ListBasicBox, FfiListBasic_TO, ListBasicHandle;
            ListRange              list_range              ListRangeBox, FfiListRange_TO, ListRangeHandle;
            QueueBasic             queue_basic             QueueBasicBox, FfiQueueBasic_TO, QueueBasicHandle;
            QueueVisibility        queue_visibility        QueueVisibilityBox, FfiQueueVisibility_TO, QueueVisibilityHandle;
            QueueDeadLetter        queue_dead_letter       QueueDeadLetterBox, FfiQueueDeadLetter_TO, QueueDeadLetterHandle;
            QueueDelayed           queue_delayed           QueueDelayedBox, FfiQueueDelayed_TO, QueueDelayedHandle;
            PubSubBasic            pubsub_basic            PubSubBasicBox, FfiPubSubBasic_TO, PubSubBasicHandle;
            PubSubWildcards        pubsub_wildcards        PubSubWildcardsBox, FfiPubSubWildcards_TO, PubSubWildcardsHandle;
            PubSubPersistent       pubsub_persistent       PubSubPersistentBox, FfiPubSubPersistent_TO, PubSubPersistentHandle;
            StreamBasic            stream_basic            StreamBasicBox, FfiStreamBasic_TO, StreamBasicHandle;
            StreamConsumerGroups   stream_consumer_groups  StreamConsumerGroupsBox, FfiStreamConsumerGroups_TO, StreamConsumerGroupsHandle;
            StreamReplay           stream_replay           StreamReplayBox, FfiStreamReplay_TO, StreamReplayHandle;
            StreamPartitioning     stream_partitioning     StreamPartitioningBox, FfiStreamPartitioning_TO, StreamPartitioningHandle;
            StateTransfer          state_transfer          StateTransferBox, FfiStateTransfer_TO, StateTransferHandle;
            ObjectStoreBasic       object_store_basic      ObjectStoreBasicBox, FfiObjectStoreBasic_TO, ObjectStoreBasicHandle;
        }
    };
}

macro_rules! declare_interfaces {
    ($($variant:ident $name:ident $box:ident, $object:ident, $handle:ident;)*) => {
        /// The interfaces a plugin can declare. Each travels across the ABI by its
        /// snake_case name, so a host can report (and skip) names it does not know.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Interface {
            $($variant,)*
        }

        impl Interface {
            pub const ALL: &'static [Interface] = &[$(Interface::$variant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Interface::$variant => stringify!($name),)*
                }
            }
        }
    };
}

for_each_interface!(declare_interfaces);

impl Interface {
    pub fn from_name(name: &str) -> Option<Interface> {
        Interface::ALL.iter().copied().find(|i| i.name() == name)
    }
}

/// By its wire name, so a reader that does not know an interface fails on its name.
impl serde::Serialize for Interface {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Interface {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Interface::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown interface '{name}'")))
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
            assert_eq!(Interface::from_name(interface.name()), Some(*interface));
        }
        assert_eq!(Interface::from_name("keyvalue_teleport"), None);
        assert_eq!(Interface::ALL.len(), 21);
    }
}
