//! The host's leaf helpers, shared by every layer above them and importing nothing of
//! the host but the secret redactor: config errors, name checks, how an input is shown in
//! a message, and how a plugin's error becomes a gRPC status.

use std::fmt;
use std::path::PathBuf;

use plugin_abi::{ErrorCode, PluginError};
use tonic::{Code, Status};

/// Keys are UTF-8 (protobuf strings guarantee it), 1 to this many bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted key the problem is about, e.g. `namespaces[0].slots.store.plugin`.
    pub key: String,
    pub message: String,
    /// What the operator can change to fix it.
    pub fix: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        ConfigError { key: key.into(), message: message.into(), fix: fix.into() }
    }
}

/// Every problem found in one config file. Printed to operators; exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        writeln!(
            f,
            "error: {} is not a valid Prism config ({count} problem{})",
            self.file.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.errors {
            writeln!(f, "  {}: {}: {}", self.file.display(), error.key, error.message)?;
            writeln!(f, "    fix: {}", error.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Plugin and namespace names: 1–64 bytes of ASCII letters, digits, `-`, `_` and `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// An input as an error message may show it: escaped, and at most 32 characters, so a
/// huge or hostile value never turns into a huge error trailer.
pub fn shown(input: &str) -> String {
    const SHOWN: usize = 32;
    let mut out: String = input.chars().take(SHOWN).flat_map(char::escape_debug).collect();
    if input.chars().nth(SHOWN).is_some() {
        out.push('…');
    }
    format!("'{out}'")
}

/// The gRPC status code a plugin error code becomes.
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::FailedPrecondition => Code::FailedPrecondition,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorCode::Unimplemented => Code::Unimplemented,
        ErrorCode::Internal => Code::Internal,
        ErrorCode::Aborted => Code::Aborted,
    }
}

pub fn plugin_status(error: PluginError) -> Status {
    let code = grpc_code(error.code());
    // Drivers tend to echo connection strings, which may carry a password.
    let mut status = Status::new(code, crate::secrets::redact(error.message()).into_owned());
    // The plugin's word on whether the same call may succeed if repeated.
    if error.retryable() {
        status.metadata_mut().insert("prism-retryable", tonic::metadata::MetadataValue::from_static("true"));
    }
    status
}

/// gRPC's name for a status code number, as the `code` label shows it.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}
