//! Which permission each RPC needs (docs/SECURITY.md prints this table).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    Read,
    Write,
    Publish,
    Subscribe,
    Consume,
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Permission::Read,
        Permission::Write,
        Permission::Publish,
        Permission::Subscribe,
        Permission::Consume,
        Permission::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Publish => "publish",
            Permission::Subscribe => "subscribe",
            Permission::Consume => "consume",
            Permission::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|permission| permission.name() == name)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

use Permission::*;

/// `(service, method, permission)` for every RPC of `prism.v1`. AdminService methods
/// need `admin` on every namespace (a rule naming `*`).
pub const METHODS: &[(&str, &str, Permission)] = &[
    ("AdminService", "ListPlugins", Admin),
    ("AdminService", "ListNamespaces", Admin),
    ("AdminService", "ListPatterns", Admin),
    ("AdminService", "Reload", Admin),
    ("AdminService", "GetReloadStatus", Admin),
    ("AdminService", "SweepClaimChecks", Admin),
    ("KeyValueService", "Get", Read),
    ("KeyValueService", "Exists", Read),
    ("KeyValueService", "Scan", Read),
    ("KeyValueService", "ScanStream", Read),
    ("KeyValueService", "GetStream", Read),
    ("KeyValueService", "SetStream", Write),
    ("KeyValueService", "Count", Read),
    ("KeyValueService", "GetTtl", Read),
    ("KeyValueService", "BatchGet", Read),
    ("KeyValueService", "Set", Write),
    ("KeyValueService", "Delete", Write),
    ("KeyValueService", "Expire", Write),
    ("KeyValueService", "Persist", Write),
    ("KeyValueService", "BatchSet", Write),
    ("KeyValueService", "BatchDelete", Write),
    ("KeyValueService", "CompareAndSwap", Write),
    ("KeyValueService", "Mutate", Write),
    ("KeyValueService", "BeginTransaction", Write),
    ("KeyValueService", "CommitTransaction", Write),
    ("KeyValueService", "RollbackTransaction", Write),
    ("ListService", "Length", Read),
    ("ListService", "Range", Read),
    ("ListService", "Push", Write),
    ("ListService", "Pop", Write),
    ("ListService", "Trim", Write),
    ("QueueService", "Enqueue", Publish),
    ("QueueService", "Dequeue", Consume),
    ("QueueService", "Ack", Consume),
    ("QueueService", "Nack", Consume),
    ("QueueService", "ExtendVisibility", Consume),
    ("QueueService", "ListDeadLetters", Consume),
    ("QueueService", "ReplayDeadLetters", Admin),
    ("PubSubService", "Publish", Publish),
    ("PubSubService", "PublishStream", Publish),
    ("PubSubService", "Subscribe", Subscribe),
    ("PubSubService", "Ack", Subscribe),
    ("StreamService", "Append", Publish),
    ("StreamService", "Read", Subscribe),
    ("StreamService", "GetOffsets", Subscribe),
    ("StreamService", "JoinGroup", Consume),
    ("StreamService", "Commit", Consume),
    ("MulticastRegistryService", "Register", Write),
    ("MulticastRegistryService", "Deregister", Write),
    ("MulticastRegistryService", "Enumerate", Read),
    ("MulticastRegistryService", "Multicast", Publish),
    ("MulticastRegistryService", "Subscribe", Subscribe),
];

/// One RPC: its service, method and the permission it needs.
pub type Rpc = (&'static str, &'static str, Permission);

/// Reflection, when it is closed to anonymous callers: any authenticated caller may use it.
pub const REFLECTION: Rpc = ("ServerReflection", "ServerReflectionInfo", Permission::Read);

/// The row of a gRPC path (`/prism.v1.KeyValueService/Get`), if it is a Prism RPC: one
/// hash lookup, since the auth and observe layers both ask on every call.
pub fn rpc_of(path: &str) -> Option<&'static Rpc> {
    static BY_PATH: std::sync::LazyLock<std::collections::HashMap<String, &'static Rpc>> =
        std::sync::LazyLock::new(|| {
            METHODS.iter().map(|rpc| (format!("/prism.v1.{}/{}", rpc.0, rpc.1), rpc)).collect()
        });
    BY_PATH.get(path).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every RPC in the API's descriptors has a row, and every row is an RPC: a method
    /// added to a proto without a permission would otherwise be refused to everyone.
    #[test]
    fn the_table_covers_exactly_the_rpcs_of_the_api() {
        let descriptors = prost_types::FileDescriptorSet::decode(crate::api::FILE_DESCRIPTOR_SET).unwrap();
        let mut in_protos: Vec<(String, String)> = descriptors
            .file
            .iter()
            .filter(|file| file.package() == "prism.v1")
            .flat_map(|file| &file.service)
            .flat_map(|service| {
                service.method.iter().map(|method| (service.name().to_owned(), method.name().to_owned()))
            })
            .collect();
        let mut in_table: Vec<(String, String)> =
            METHODS.iter().map(|(s, m, _)| (s.to_string(), m.to_string())).collect();
        in_protos.sort();
        in_table.sort();
        assert_eq!(in_table, in_protos);
    }

    #[test]
    fn paths_map_to_permissions() {
        assert_eq!(rpc_of("/prism.v1.KeyValueService/Get"), Some(&("KeyValueService", "Get", Read)));
        assert_eq!(rpc_of("/prism.v1.QueueService/Enqueue"), Some(&("QueueService", "Enqueue", Publish)));
        assert_eq!(rpc_of("/prism.v1.KeyValueService/Nope"), None);
        assert_eq!(rpc_of("/grpc.health.v1.Health/Check"), None);
    }
}
