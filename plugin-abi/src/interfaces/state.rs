//! State handed from an instance to its successor on reload. Declaration only;
//! `#[interface]` generates the rest.

use crate::{interface, Driver, PluginResult};

/// `state_transfer`: hand an instance's state to its successor when the host reloads the
/// plugin (a new build of the library) or recreates an unhealthy instance. The format is
/// the plugin's own; it must read what the previous build of the plugin wrote, or refuse
/// it with `InvalidArgument`.
#[interface]
pub trait StateTransfer: Driver {
    /// Everything the instance holds, as one snapshot.
    async fn export_state(&self) -> PluginResult<Vec<u8>>;
    /// Replaces everything the instance holds with an exported snapshot.
    async fn import_state(&self, state: Vec<u8>) -> PluginResult<()>;
}
