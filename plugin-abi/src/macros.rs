/// Exports a driver as a Prism plugin. The listed interfaces become the metadata
/// table, and each must be implemented by the driver or the plugin does not compile.
///
/// ```ignore
/// plugin_abi::export_plugin! {
///     driver: Memstore,
///     name: "memstore",
///     description: "In-process store",
///     connection_format: "none (in-process)",
///     interfaces: [KeyValueBasic, KeyValueTtl],
/// }
/// ```
///
/// A plugin whose instances must never run side by side (it owns files, an embedded
/// engine, an exclusive lock) adds `exclusive: true` after `interfaces`.
#[macro_export]
macro_rules! export_plugin {
    (
        driver: $driver:ty,
        name: $name:literal,
        description: $description:literal,
        connection_format: $connection_format:literal,
        interfaces: [$($interface:ident),* $(,)?]
        $(, exclusive: $exclusive:literal)? $(,)?
    ) => {
        impl $crate::ffi::export::Exported for $driver {
            const METADATA: $crate::ffi::export::StaticMetadata = $crate::ffi::export::StaticMetadata {
                name: $name,
                version: env!("CARGO_PKG_VERSION"),
                description: $description,
                connection_format: $connection_format,
                interfaces: &[$(
                    <$crate::ffi::export::markers::$interface as $crate::ffi::export::InterfaceName>::NAME
                ),*],
                exclusive: false $(|| $exclusive)?,
            };

            fn register(parts: &mut $crate::ffi::export::InstanceParts<Self>) {
                $(
                    <$crate::ffi::export::markers::$interface as $crate::ffi::export::Register<Self>>::register(parts);
                )*
            }
        }

        // The symbol abi_stable looks up; see `ffi::export_header::ROOT_MODULE_SYMBOL`.
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::LibHeader = {
            extern "C" fn load_root_module() -> $crate::__private::RootModuleResult {
                $crate::__private::__call_root_module_loader($crate::__private::build_root_module::<$driver>)
            }
            // SAFETY: the constructor returns the erased `PluginModuleRef` it is declared with.
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::__private::PluginModuleRef>(
                    load_root_module,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };
    };
}
