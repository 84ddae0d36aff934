//! Host side of loading: open a library, check its ABI, and get its root module.

use std::path::Path;

use abi_stable::library::{lib_header_from_path, LibraryError};

use super::PluginModuleRef;
use crate::host::LoadError;

/// Opens the library at `path` (each path is its own copy, side by side with others)
/// and checks its root-module layout against this build of plugin-abi.
pub(crate) fn load_module(path: &Path) -> Result<PluginModuleRef, LoadError> {
    let header = lib_header_from_path(path).map_err(|error| describe(path, error))?;
    header.init_root_module::<PluginModuleRef>().map_err(|error| describe(path, error))
}

fn describe(path: &Path, error: LibraryError) -> LoadError {
    let path = path.to_path_buf();
    match error {
        LibraryError::OpenError { err, .. } => LoadError::Open { path, reason: err.to_string() },
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin { path },
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => {
            LoadError::IncompatibleAbi {
                path,
                summary: format!(
                    "plugin-abi version mismatch: this host speaks {expected_version}, the plugin was built against {actual_version}"
                ),
                detail: String::new(),
            }
        }
        LibraryError::AbiInstability(report) => {
            let detail = report.to_string();
            LoadError::IncompatibleAbi { path, summary: first_difference(&detail), detail }
        }
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

/// abi_stable's layout report runs to hundreds of lines; operators get one: the first
/// error it names, with what was expected and what was found.
fn first_difference(report: &str) -> String {
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    let Some(at) = lines.iter().position(|line| line.starts_with("Error:")) else {
        return "root-module layout differs from this host's plugin-abi".to_owned();
    };
    let reason = lines[at].trim_start_matches("Error:").trim();
    let after = |label: &str| {
        lines[at..].iter().position(|line| *line == label).and_then(|i| lines.get(at + i + 1)).copied()
    };
    match (after("Expected:"), after("Found:")) {
        (Some(expected), Some(found)) => {
            format!("root-module layout differs: {reason} (expected {expected}, found {found})")
        }
        _ => format!("root-module layout differs: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::first_difference;

    #[test]
    fn summarises_a_layout_report_in_one_line() {
        let report = "Compared <this>:\n  lots\n  of layout\nError:mismatched package\nExpected:\n    plugin-abi\nFound:\n    other-abi\nError:second";
        assert_eq!(
            first_difference(report),
            "root-module layout differs: mismatched package (expected plugin-abi, found other-abi)"
        );
        assert_eq!(
            first_difference("no errors named"),
            "root-module layout differs from this host's plugin-abi"
        );
    }
}
