//! Free text a person types: the user's note on a consent and the agent's reason for a token.
//! Lengths count characters (not bytes); control characters other than a newline are refused,
//! so nothing typed can forge a log line or hide text in the audit trail.

use serde::{Deserialize, Serialize};

use crate::ValidationError;

fn parse_text(value: &str, field: &'static str, min: usize, max: usize) -> Result<String, ValidationError> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(ValidationError::Length { field, min, max });
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ValidationError::Control { field });
    }
    Ok(value.to_owned())
}

/// The user's note on a consent ("ticket 4411, billing problem"): 0..=500 characters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Note(String);

impl Note {
    pub const MAX_CHARS: usize = 500;

    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        parse_text(value, "note", 0, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why an agent acts as a user (a ticket reference and a sentence): 8..=500 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Reason(String);

impl Reason {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 500;

    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        parse_text(value, "reason", Self::MIN_CHARS, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_conversions {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}
string_conversions!(Note);
string_conversions!(Reason);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_note_is_fine_and_501_characters_are_not() {
        assert!(Note::parse("").is_ok());
        assert!(Note::parse(&"é".repeat(500)).is_ok(), "500 two-byte characters still fit");
        assert!(matches!(Note::parse(&"x".repeat(501)), Err(ValidationError::Length { .. })));
    }

    #[test]
    fn a_reason_needs_eight_to_five_hundred_characters() {
        assert!(matches!(Reason::parse("short"), Err(ValidationError::Length { .. })));
        assert!(matches!(Reason::parse("1234567"), Err(ValidationError::Length { .. })));
        assert!(Reason::parse("12345678").is_ok());
        assert!(Reason::parse(&"r".repeat(500)).is_ok());
        assert!(matches!(Reason::parse(&"r".repeat(501)), Err(ValidationError::Length { .. })));
    }

    #[test]
    fn control_characters_are_refused_but_a_newline_is_not() {
        assert!(Reason::parse("ticket 42\nsecond line").is_ok());
        assert!(matches!(Reason::parse("ticket 42\u{1b}[31m"), Err(ValidationError::Control { .. })));
        assert!(matches!(Note::parse("a\rb"), Err(ValidationError::Control { .. })));
    }
}
