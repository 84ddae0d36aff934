//! The interfaces: each family's module declares its interfaces once (a safe trait
//! under `#[interface]`, which generates the rest), and this table lists them.

#![allow(non_local_definitions)] // `#[sabi_trait]` expands impls inside a const block

use std::fmt;

mod keyvalue;
mod list;
mod object;
mod pubsub;
mod queue;
mod state;
mod stream;

pub use keyvalue::*;
pub use list::*;
pub use object::*;
pub use pubsub::*;
pub use queue::*;
pub use state::*;
pub use stream::*;

/// The one list of interfaces. Each row names one interface: its `Interface` variant
/// (also the name of its trait and of its `export_plugin!` marker), its snake_case name
/// (the wire name, the `FfiInstance` accessor, the host's `Instance` accessor and the
/// acceptance suite's module), then the names its declaration generated (box, object,
/// handle, remote call, FFI trait object), which follow from the trait's name.
///
/// Adding an interface: declare it in its family's module, add a row here (rows are in
/// `FfiInstance`'s order, so a new one goes last), an accessor at the end of
/// `FfiInstance`, and its acceptance suite (docs/PLUGIN_ABI.md has the whole recipe).
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_interface {
    ($callback:path) => {
        $callback! {
            KeyValueBasic          keyvalue_basic          KeyValueBasicBox KeyValueBasicObject KeyValueBasicHandle KeyValueBasicCall FfiKeyValueBasic_TO;
            KeyValueTtl            keyvalue_ttl            KeyValueTtlBox KeyValueTtlObject KeyValueTtlHandle KeyValueTtlCall FfiKeyValueTtl_TO;
            KeyValueScan           keyvalue_scan           KeyValueScanBox KeyValueScanObject KeyValueScanHandle KeyValueScanCall FfiKeyValueScan_TO;
            KeyValueBatch          keyvalue_batch          KeyValueBatchBox KeyValueBatchObject KeyValueBatchHandle KeyValueBatchCall FfiKeyValueBatch_TO;
            KeyValueCas            keyvalue_cas            KeyValueCasBox KeyValueCasObject KeyValueCasHandle KeyValueCasCall FfiKeyValueCas_TO;
            KeyValueTransactional  keyvalue_transactional  KeyValueTransactionalBox KeyValueTransactionalObject KeyValueTransactionalHandle KeyValueTransactionalCall FfiKeyValueTransactional_TO;
            ListBasic              list_basic              ListBasicBox ListBasicObject ListBasicHandle ListBasicCall FfiListBasic_TO;
            ListRange              list_range              ListRangeBox ListRangeObject ListRangeHandle ListRangeCall FfiListRange_TO;
            QueueBasic             queue_basic             QueueBasicBox QueueBasicObject QueueBasicHandle QueueBasicCall FfiQueueBasic_TO;
            QueueVisibility        queue_visibility        QueueVisibilityBox QueueVisibilityObject QueueVisibilityHandle QueueVisibilityCall FfiQueueVisibility_TO;
            QueueDeadLetter        queue_dead_letter       QueueDeadLetterBox QueueDeadLetterObject QueueDeadLetterHandle QueueDeadLetterCall FfiQueueDeadLetter_TO;
            QueueDelayed           queue_delayed           QueueDelayedBox QueueDelayedObject QueueDelayedHandle QueueDelayedCall FfiQueueDelayed_TO;
            PubSubBasic            pubsub_basic            PubSubBasicBox PubSubBasicObject PubSubBasicHandle PubSubBasicCall FfiPubSubBasic_TO;
            PubSubWildcards        pubsub_wildcards        PubSubWildcardsBox PubSubWildcardsObject PubSubWildcardsHandle PubSubWildcardsCall FfiPubSubWildcards_TO;
            PubSubPersistent       pubsub_persistent       PubSubPersistentBox PubSubPersistentObject PubSubPersistentHandle PubSubPersistentCall FfiPubSubPersistent_TO;
            StreamBasic            stream_basic            StreamBasicBox StreamBasicObject StreamBasicHandle StreamBasicCall FfiStreamBasic_TO;
            StreamConsumerGroups   stream_consumer_groups  StreamConsumerGroupsBox StreamConsumerGroupsObject StreamConsumerGroupsHandle StreamConsumerGroupsCall FfiStreamConsumerGroups_TO;
            StreamReplay           stream_replay           StreamReplayBox StreamReplayObject StreamReplayHandle StreamReplayCall FfiStreamReplay_TO;
            StreamPartitioning     stream_partitioning     StreamPartitioningBox StreamPartitioningObject StreamPartitioningHandle StreamPartitioningCall FfiStreamPartitioning_TO;
            StateTransfer          state_transfer          StateTransferBox StateTransferObject StateTransferHandle StateTransferCall FfiStateTransfer_TO;
            ObjectStoreBasic       object_store_basic      ObjectStoreBasicBox ObjectStoreBasicObject ObjectStoreBasicHandle ObjectStoreBasicCall FfiObjectStoreBasic_TO;
        }
    };
}

macro_rules! declare_interfaces {
    ($($variant:ident $name:ident $box:ident $object:ident $handle:ident $call:ident $to:ident;)*) => {
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
    }
}
