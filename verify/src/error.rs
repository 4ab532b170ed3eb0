//! Why a value from outside was refused: shared by the validated types of this crate and the
//! service's domain, so a bad id reads the same wherever it is caught.

use thiserror::Error;

/// Why a value from outside was refused. The message is safe to show to the caller: it
/// names the field and the rule, never echoes a secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    #[error("{field} must be {min}..={max} characters long")]
    Length { field: &'static str, min: usize, max: usize },
    #[error("{field} may only contain letters, digits and . _ @ : + -")]
    Charset { field: &'static str },
    #[error("{field} must not contain control characters (a newline aside), bidirectional controls or line separators")]
    Control { field: &'static str },
    #[error("{field} must be between {min} and {max}")]
    Range { field: &'static str, min: i64, max: i64 },
    #[error("{field} must be one of: {allowed}")]
    OneOf { field: &'static str, allowed: &'static str },
    #[error("{field} is not a valid RFC 3339 time")]
    Time { field: &'static str },
}
