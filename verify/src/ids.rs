//! Identifiers: 1..=128 characters of `[A-Za-z0-9._@:+-]` (docs/design.md), so any of them can
//! be a DynamoDB key, a path segment or a claim without escaping.

use serde::{Deserialize, Serialize};

use crate::ValidationError;

const MAX_ID_LEN: usize = 128;

fn parse_id(value: &str, field: &'static str) -> Result<String, ValidationError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(ValidationError::Length { field, min: 1, max: MAX_ID_LEN });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._@:+-".contains(c);
    if !value.chars().all(allowed) {
        return Err(ValidationError::Charset { field });
    }
    Ok(value.to_owned())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        // Written as the string it holds, without `into = "String"`'s copy of it: every audit
        // event is serialized with its ids on every append (BENCHMARKS.md, "Load on local-api").
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl $name {
            /// Parses an untrusted string; fails on length or a forbidden character.
            pub fn parse(value: &str) -> Result<Self, ValidationError> {
                parse_id(value, $field).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

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

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// The end user whose account support may enter: the `sub` of the app's identity token.
    UserId, "user_id"
);
identifier!(
    /// The support agent (or any other actor): the `sub` of their identity token.
    AgentId, "actor"
);
identifier!(
    /// One grant of consent; a new grant gets a new id, which kills tokens of the old one.
    ConsentId, "consent_id"
);
identifier!(
    /// The unique id of one impersonation token.
    Jti, "jti"
);
identifier!(
    /// The unique id of one audit event.
    EventId, "event_id"
);

impl ConsentId {
    /// A fresh random id (UUID v4).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

impl Jti {
    /// A fresh random id (UUID v4).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

impl EventId {
    /// A fresh id: a UUID v7 (its creation millisecond, then 74 random bits), so the ids of
    /// one store's events grow with time and its unique index on them grows at its end: on
    /// the embedded store a random v4 id dirtied a page of that index per event, 18% of the
    /// writer's CPU per use (BENCHMARKS.md, bench-load). Nothing reads meaning into an event
    /// id (the event's `at` is its time); ids made before are v4, and stay valid.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

impl From<UserId> for AgentId {
    /// A user acting on their own consent is the actor of that event.
    fn from(user: UserId) -> Self {
        Self(user.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_ids_grow_with_time() {
        let first = EventId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = EventId::generate();
        assert!(first < second, "{first} then {second}");
        assert_eq!(uuid::Uuid::parse_str(second.as_str()).unwrap().get_version_num(), 7);
    }

    use super::*;

    #[test]
    fn a_plain_id_is_accepted() {
        assert_eq!(UserId::parse("alice@example.com").unwrap().as_str(), "alice@example.com");
        assert!(UserId::parse("auth0|abc").is_err(), "| is not in the allowed set");
        assert!(UserId::parse("a.b_c@d:e+f-1").is_ok());
    }

    #[test]
    fn an_empty_id_is_rejected() {
        assert!(matches!(UserId::parse(""), Err(ValidationError::Length { .. })));
    }

    #[test]
    fn an_id_of_128_characters_is_accepted_and_129_rejected() {
        assert!(AgentId::parse(&"a".repeat(128)).is_ok());
        assert!(matches!(AgentId::parse(&"a".repeat(129)), Err(ValidationError::Length { .. })));
    }

    #[test]
    fn ids_with_forbidden_characters_are_rejected() {
        for bad in ["a b", "a/b", "a#b", "ä", "a\u{0}", "a\nb", "a%20", "<script>", "a'b", "a\"b"] {
            assert!(matches!(UserId::parse(bad), Err(ValidationError::Charset { .. })), "{bad:?} must be refused");
        }
    }

    #[test]
    fn deserializing_validates() {
        let ok: Result<UserId, _> = serde_json::from_str("\"bob\"");
        assert!(ok.is_ok());
        let bad: Result<UserId, _> = serde_json::from_str("\"bo b\"");
        assert!(bad.is_err());
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = ConsentId::generate();
        let b = ConsentId::generate();
        assert_ne!(a, b);
        assert!(ConsentId::parse(a.as_str()).is_ok());
    }
}
