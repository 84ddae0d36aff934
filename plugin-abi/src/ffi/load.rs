//! Host side of loading: open a library, check its ABI version and layout, and get its
//! root module. Errors are one line naming what differs.

use std::fmt::Write as _;
use std::path::Path;

use abi_stable::{
    abi_stability::abi_checking::{check_layout_compatibility, AbiInstability, AbiInstabilityErrors},
    library::{lib_header_from_path, LibraryError, RootModule},
    sabi_types::VersionNumber,
    type_layout::{TLFieldOrFunction, TypeLayout},
    StableAbi,
};

use super::PluginModuleRef;
use crate::host::LoadError;

/// Opens the library at `path` (each path is its own copy, side by side with others),
/// refuses another major ABI version, and checks its root-module layout against this
/// build of plugin-abi. Returns the root module and the ABI version the plugin declares.
pub(crate) fn load_module(path: &Path) -> Result<(PluginModuleRef, String), LoadError> {
    let header = lib_header_from_path(path).map_err(|error| describe(path, error))?;
    let declared = header.version_strings();
    let version = VersionNumber::new(declared).map_err(|error| LoadError::IncompatibleAbi {
        path: path.to_path_buf(),
        summary: format!("its plugin-abi version is unreadable: {error}"),
        detail: String::new(),
    })?;
    let ours = VersionNumber::new(PluginModuleRef::VERSION_STRINGS).expect("our own version parses");
    if !same_major(ours, version) {
        return Err(LoadError::IncompatibleAbi {
            path: path.to_path_buf(),
            summary: version_mismatch(ours, version),
            detail: String::new(),
        });
    }
    // Checked against the declarations of the plugin's own minor version (see `v1_0`, `v1_1`, `v1_2`):
    // abi_stable's own check would refuse an older plugin's shorter prefix types. Run
    // here, it also keeps the structured errors the one-line summary is made from.
    // A library that does not carry its layout cannot be checked, so it is not opened.
    let Some(theirs) = header.layout() else {
        return Err(LoadError::IncompatibleAbi {
            path: path.to_path_buf(),
            summary: "the library does not export its root module's layout, so it cannot be checked".into(),
            detail: String::new(),
        });
    };
    if let Err(errors) = check_layout_compatibility(expected_layout(version), theirs) {
        return Err(LoadError::IncompatibleAbi {
            path: path.to_path_buf(),
            summary: first_difference(&errors),
            detail: errors.to_string(),
        });
    }
    // SAFETY: the root module's layout was just checked against the declarations of the
    // plugin's minor version, a prefix of the current ones; every field added since is
    // read through an accessor that consults the library's own field table and answers
    // `None` for a field the library lacks.
    let module = unsafe { header.init_root_module_with_unchecked_layout::<PluginModuleRef>() }
        .map_err(|error| describe(path, error))?;
    Ok((module, version.to_string()))
}

/// The root-module layout a plugin of `version` (same major) must have: the one of its
/// own minor version when it is older than ours, else ours (a newer plugin's prefix
/// types may have more fields, which abi_stable accepts).
fn expected_layout(version: VersionNumber) -> &'static TypeLayout {
    let ours = VersionNumber::new(PluginModuleRef::VERSION_STRINGS).expect("our own version parses");
    match version.minor {
        same_or_newer if same_or_newer >= ours.minor => <PluginModuleRef as StableAbi>::LAYOUT,
        0 => <super::v1_0::PluginModuleRef as StableAbi>::LAYOUT,
        1 => <super::v1_1::PluginModuleRef as StableAbi>::LAYOUT,
        2 => <super::v1_2::PluginModuleRef as StableAbi>::LAYOUT,
        3 => <super::v1_3::PluginModuleRef as StableAbi>::LAYOUT,
        _ => <PluginModuleRef as StableAbi>::LAYOUT,
    }
}

/// Plugins built against any minor version of our major load (docs/PLUGIN_ABI.md);
/// before 1.0 every minor version was its own major.
fn same_major(ours: VersionNumber, theirs: VersionNumber) -> bool {
    ours.major == theirs.major && (ours.major != 0 || ours.minor == theirs.minor)
}

fn version_mismatch(ours: VersionNumber, theirs: VersionNumber) -> String {
    let series = if ours.major == 0 { format!("0.{}", ours.minor) } else { ours.major.to_string() };
    format!(
        "the plugin was built against plugin-abi {theirs}; this host (plugin-abi {ours}) loads plugins built against plugin-abi {series}.x"
    )
}

fn describe(path: &Path, error: LibraryError) -> LoadError {
    let path = path.to_path_buf();
    match error {
        LibraryError::OpenError { err, .. } => open_error(path, err.to_string()),
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin { path },
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => {
            LoadError::IncompatibleAbi {
                path,
                summary: version_mismatch(expected_version, actual_version),
                detail: String::new(),
            }
        }
        LibraryError::AbiInstability(report) => LoadError::IncompatibleAbi {
            path,
            summary: "its root-module layout differs from this host's plugin-abi".to_owned(),
            detail: report.to_string(),
        },
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => LoadError::IncompatibleAbi {
            path,
            summary: "the library was built with an incompatible abi_stable or compiler ABI".into(),
            detail: error.to_string(),
        },
        other => LoadError::IncompatibleAbi {
            path,
            summary: "the library could not be initialised as a Prism plugin".into(),
            detail: other.to_string(),
        },
    }
}

/// The dynamic loader's message, with the fix for the one cause operators hit most: a
/// library the plugin links against is missing or older than the one it was built with.
fn open_error(path: std::path::PathBuf, reason: String) -> LoadError {
    if let Some(symbol) = undefined_symbol(&reason) {
        return LoadError::MissingDependency { symbol: symbol.to_owned(), path };
    }
    LoadError::Open { path, reason }
}

fn undefined_symbol(reason: &str) -> Option<&str> {
    let at = reason.find("undefined symbol: ")? + "undefined symbol: ".len();
    let symbol = reason[at..].split(|c: char| c.is_whitespace() || c == ',').next()?;
    (!symbol.is_empty()).then_some(symbol)
}

/// abi_stable's layout report runs to hundreds of lines; operators get one: where the
/// first difference is (the path of fields from the root module down), the type there,
/// and what was expected and found.
fn first_difference(errors: &AbiInstabilityErrors) -> String {
    let Some(error) = errors.errors.iter().find(|error| !error.errs.is_empty()) else {
        return "its root-module layout differs from this host's plugin-abi".to_owned();
    };
    let mut path = String::from("PluginModule");
    let mut type_name = None;
    for step in error.stack_trace.iter() {
        match &step.expected {
            TLFieldOrFunction::Field(field) => {
                // Tuple fields (a prefix reference's pointer) add a number, not a name.
                if !field.name().chars().all(|c| c.is_ascii_digit()) {
                    let _ = write!(path, ".{}", field.name());
                }
                type_name = Some(field.layout().full_type().to_string());
            }
            TLFieldOrFunction::Function(function) => {
                let _ = write!(path, ".{}()", function.name);
            }
        }
    }
    let reasons: Vec<String> = error.errs.iter().take(2).map(reason).collect();
    let at = match type_name {
        Some(type_name) if !path.ends_with(&type_name) => format!("at {path} (type {type_name})"),
        _ => format!("at {path}"),
    };
    format!("layout differs {at}: {}", reasons.join("; "))
}

fn reason(instability: &AbiInstability) -> String {
    match instability {
        AbiInstability::Size(ef) => format!("size {} bytes expected, {} found", ef.expected, ef.found),
        AbiInstability::Alignment(ef) => format!("alignment {} expected, {} found", ef.expected, ef.found),
        AbiInstability::Name(ef) => format!("type {} expected, {} found", ef.expected, ef.found),
        AbiInstability::Package(ef) => format!("package {} expected, {} found", ef.expected, ef.found),
        AbiInstability::PackageVersion(ef) => {
            format!("package version {} expected, {} found", ef.expected, ef.found)
        }
        AbiInstability::FieldCountMismatch(ef) => {
            format!("{} fields expected, {} found", ef.expected, ef.found)
        }
        AbiInstability::UnexpectedField(ef) => {
            format!("field `{}` expected, `{}` found", ef.expected.name(), ef.found.name())
        }
        AbiInstability::TooManyVariants(ef) => {
            format!("{} variants expected, {} found (an enum gained variants)", ef.expected, ef.found)
        }
        AbiInstability::UnexpectedVariant(ef) => {
            format!("variant `{}` expected, `{}` found", ef.expected, ef.found)
        }
        AbiInstability::MismatchedPrefixSize(ef) => {
            format!("{} prefix fields expected, {} found (last_prefix_field moved)", ef.expected, ef.found)
        }
        other => {
            let text = format!("{other:?}");
            text.chars().take(160).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_missing_symbol() {
        let reason = "/tmp/x.so: undefined symbol: sqlite3_set_clientdata";
        assert_eq!(undefined_symbol(reason), Some("sqlite3_set_clientdata"));
        assert_eq!(undefined_symbol("file too short"), None);
    }

    #[test]
    fn majors_decide_and_zero_minors_are_majors() {
        let v = |major, minor| VersionNumber { major, minor, patch: 0 };
        assert!(same_major(v(1, 0), v(1, 4)));
        assert!(same_major(v(1, 4), v(1, 0)));
        assert!(!same_major(v(1, 0), v(2, 0)));
        assert!(!same_major(v(0, 1), v(0, 2)));
        let message = version_mismatch(v(1, 2), v(2, 0));
        assert!(message.contains("plugin-abi 2.0.0") && message.contains("plugin-abi 1.2.0"), "{message}");
    }
}
