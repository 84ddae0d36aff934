//! What `export_plugin!` expands to in a plugin crate, so that crate needs no
//! `abi_stable` dependency of its own.

pub use abi_stable::library::{__call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult};

/// The symbol abi_stable looks up in a library: `abi_stable::library::ROOT_MODULE_LOADER_NAME`.
/// `export_plugin!` spells it literally because a `macro_rules!` macro cannot compute
/// an identifier; a test keeps the two in step.
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

#[cfg(test)]
mod tests {
    #[test]
    fn symbol_matches_abi_stable() {
        assert_eq!(super::ROOT_MODULE_SYMBOL, abi_stable::library::ROOT_MODULE_LOADER_NAME);
    }
}
