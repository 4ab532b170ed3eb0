//! What a token may do, checked against the request method: the same rule on every entry
//! point and in every backend that verifies tokens itself.

use http::Method;
use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// What an impersonation token may do. `read` is the default a user grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    Read,
    Full,
}

impl Scope {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        match value {
            "read" => Ok(Self::Read),
            "full" => Ok(Self::Full),
            _ => Err(ValidationError::OneOf { field: "scope", allowed: "read, full" }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Full => "full",
        }
    }

    /// Whether a request with this method may pass: `read` lets only safe methods through
    /// (GET, HEAD, OPTIONS); `full` lets everything through.
    pub fn allows(self, method: &Method) -> bool {
        match self {
            Self::Full => true,
            Self::Read => matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_scope_passes_only_safe_methods() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(Scope::Read.allows(&m), "{m}");
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::TRACE] {
            assert!(!Scope::Read.allows(&m), "{m}");
        }
    }

    #[test]
    fn full_scope_passes_every_method() {
        for m in [Method::GET, Method::POST, Method::DELETE, Method::from_bytes(b"PURGE").unwrap()] {
            assert!(Scope::Full.allows(&m));
        }
    }

    #[test]
    fn only_read_and_full_parse() {
        assert_eq!(Scope::parse("read").unwrap(), Scope::Read);
        assert_eq!(Scope::parse("full").unwrap(), Scope::Full);
        assert!(Scope::parse("admin").is_err());
        assert!(Scope::parse("READ").is_err());
        assert_eq!(Scope::default(), Scope::Read);
    }
}
