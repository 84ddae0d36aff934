use std::fmt;

use abi_stable::{std_types::RString, StableAbi};

/// What went wrong, in terms that map 1:1 onto gRPC status codes.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorCode {
    NotFound = 1,
    InvalidArgument = 2,
    AlreadyExists = 3,
    FailedPrecondition = 4,
    ResourceExhausted = 5,
    Unavailable = 6,
    DeadlineExceeded = 7,
    Unimplemented = 8,
    Internal = 9,
    Aborted = 10,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not found",
            ErrorCode::InvalidArgument => "invalid argument",
            ErrorCode::AlreadyExists => "already exists",
            ErrorCode::FailedPrecondition => "failed precondition",
            ErrorCode::ResourceExhausted => "resource exhausted",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::DeadlineExceeded => "deadline exceeded",
            ErrorCode::Unimplemented => "unimplemented",
            ErrorCode::Internal => "internal",
            ErrorCode::Aborted => "aborted",
        }
    }
}

/// The error every plugin operation returns. It crosses the ABI as is.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    code: ErrorCode,
    message: RString,
    retryable: bool,
}

impl PluginError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let retryable = matches!(code, ErrorCode::Unavailable | ErrorCode::DeadlineExceeded);
        PluginError { code, message: RString::from(message.into()), retryable }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }
    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceExhausted, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unimplemented, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    /// Overrides the default retryability (Unavailable and DeadlineExceeded are retryable).
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }
    pub fn code(&self) -> ErrorCode {
        self.code
    }
    pub fn message(&self) -> &str {
        self.message.as_str()
    }
    pub fn retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for PluginError {}

/// The error's plain form, for hosts that carry it over a process boundary.
#[derive(serde::Serialize, serde::Deserialize)]
struct PlainError {
    code: ErrorCode,
    message: String,
    retryable: bool,
}

impl serde::Serialize for PluginError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        PlainError { code: self.code, message: self.message.to_string(), retryable: self.retryable }
            .serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for PluginError {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let plain = PlainError::deserialize(deserializer)?;
        Ok(PluginError::new(plain.code, plain.message).with_retryable(plain.retryable))
    }
}
