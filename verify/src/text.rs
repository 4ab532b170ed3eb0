//! Free text a person types: the user's note on a consent and the agent's reason for a token.
//! Lengths count characters (not bytes); control characters other than a newline are refused,
//! and so are the bidirectional controls and the line and paragraph separators
//! ([`is_refused_in_text`]), so nothing typed can forge a log line, reorder what a reader sees
//! or hide text in the audit trail. Other format characters stay (the zero-width joiner and
//! non-joiner write Persian and emoji); every display escapes them ([`is_unprintable`]).

use serde::{Deserialize, Serialize};

use crate::ValidationError;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// The bidirectional controls (Unicode's Bidi_Control property, UAX #9): the Arabic letter
/// mark, the left-to-right and right-to-left marks, the embeddings and overrides (U+202A..=
/// U+202E, the "right-to-left override" that makes `txt.exe` of `exe.txt`) and the isolates.
/// A fixed list of the standard, not a table of a category: it is the property's whole set.
const BIDI_CONTROLS: [char; 12] = [
    '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}',
    '\u{2067}', '\u{2068}', '\u{2069}',
];

/// Whether free text (a note, a reason) may not contain `c`: a control character other than a
/// newline, a bidirectional control, or a line or paragraph separator (U+2028, U+2029: a
/// line break to whatever splits lines by Unicode's rules, not by `\n`).
pub fn is_refused_in_text(c: char) -> bool {
    (c.is_control() && c != '\n') || BIDI_CONTROLS.contains(&c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Whether `c` must be shown escaped wherever text from outside is displayed: a control
/// character (the newline too: one line per row), a format character (general category Cf:
/// the bidirectional controls, zero-width characters, the soft hyphen...) or a line or
/// paragraph separator. The one definition every display of this project escapes by.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
        )
}

fn parse_text(value: &str, field: &'static str, min: usize, max: usize) -> Result<String, ValidationError> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(ValidationError::Length { field, min, max });
    }
    if value.chars().any(is_refused_in_text) {
        return Err(ValidationError::Control { field });
    }
    Ok(value.to_owned())
}

/// The user's note on a consent ("ticket 4411, billing problem"): 0..=500 characters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
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
        // Written as the string it holds, without `into = "String"`'s copy of it (as the ids).
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
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
    fn bidirectional_controls_and_line_separators_are_refused() {
        for bad in [
            "\u{202E}txt.exe ticket 42",
            "ticket 42\u{202D}",
            "ticket\u{2066}42\u{2069}",
            "ticket 42\u{200F}",
            "ticket 42\u{061C}",
            "ticket 42\u{2028}fake line",
            "ticket 42\u{2029}fake paragraph",
        ] {
            assert!(matches!(Reason::parse(bad), Err(ValidationError::Control { .. })), "{bad:?}");
            assert!(matches!(Note::parse(bad), Err(ValidationError::Control { .. })), "{bad:?}");
        }
    }

    #[test]
    fn zero_width_joiners_stay_for_persian_and_emoji() {
        assert!(Reason::parse("می\u{200C}خواهم ticket").is_ok(), "ZWNJ writes Persian");
        assert!(Note::parse("family \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}").is_ok(), "ZWJ joins emoji");
    }

    #[test]
    fn what_a_display_escapes() {
        for c in [
            '\n', '\t', '\u{1b}', '\u{7f}', '\u{85}', '\u{202E}', '\u{200B}', '\u{200D}', '\u{AD}', '\u{2028}',
            '\u{FEFF}',
        ] {
            assert!(is_unprintable(c), "{c:?}");
        }
        for c in ['a', ' ', 'é', 'ی', '\u{1F600}', ':'] {
            assert!(!is_unprintable(c), "{c:?}");
        }
    }

    #[test]
    fn control_characters_are_refused_but_a_newline_is_not() {
        assert!(Reason::parse("ticket 42\nsecond line").is_ok());
        assert!(matches!(Reason::parse("ticket 42\u{1b}[31m"), Err(ValidationError::Control { .. })));
        assert!(matches!(Note::parse("a\rb"), Err(ValidationError::Control { .. })));
    }
}
