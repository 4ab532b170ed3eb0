//! Audit cursors, sealed with HMAC under a server key. Any string opened under a key nobody
//! used never panics and is never accepted; a cursor sealed for a filter the HTTP layer can
//! build (ids and RFC 3339 times parsed as `GET /audit` parses them) and any position opens
//! to that position, and only under the same key and the very same filter; a cursor with any
//! one byte changed is refused.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shared::app::CursorKey;
use shared::domain::{AgentId, AuditEventType, AuditFilter, Timestamp, UserId};

const IDS: &[&str] = &["alice", "bob", "agent-7", "auditor-1"];

/// A key no input can know.
static SECRET: LazyLock<CursorKey> = LazyLock::new(CursorKey::generate);

#[derive(Arbitrary, Debug)]
enum Id {
    Known(u8),
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Time {
    /// An RFC 3339 time from its parts (out-of-range parts fail to parse, as in a query).
    Parts {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        offset_minutes: Option<i16>,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Filter {
    user_id: Option<Id>,
    actor: Option<Id>,
    event_type: Option<u8>,
    from: Option<Time>,
    to: Option<Time>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    forged: String,
    key: [u8; CursorKey::LEN],
    other_key: [u8; CursorKey::LEN],
    filter: Filter,
    other_filter: Filter,
    position: String,
    tamper_at: u16,
    tamper_byte: u8,
}

impl Id {
    fn text(&self) -> &str {
        match self {
            Id::Known(i) => IDS[usize::from(*i) % IDS.len()],
            Id::Any(s) => s,
        }
    }
}

impl Time {
    /// The time as `GET /audit` reads `from`/`to`: only what parses.
    fn parse(&self) -> Option<Timestamp> {
        let text = match self {
            Time::Parts { year, month, day, hour, minute, second, offset_minutes } => {
                let offset = match offset_minutes {
                    None => "Z".to_owned(),
                    Some(m) => {
                        let sign = if *m < 0 { '-' } else { '+' };
                        let m = m.unsigned_abs() % (24 * 60);
                        format!("{sign}{:02}:{:02}", m / 60, m % 60)
                    }
                };
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{offset}",
                    year % 10_000,
                    month % 12 + 1,
                    day % 31 + 1,
                    hour % 24,
                    minute % 60,
                    second % 60
                )
            }
            Time::Raw(raw) => raw.clone(),
        };
        Timestamp::parse_rfc3339(&text, "from").ok()
    }
}

impl Filter {
    fn build(&self) -> AuditFilter {
        AuditFilter {
            user_id: self.user_id.as_ref().and_then(|id| UserId::parse(id.text()).ok()),
            actor: self.actor.as_ref().and_then(|id| AgentId::parse(id.text()).ok()),
            event_type: self.event_type.map(|i| AuditEventType::ALL[usize::from(i) % AuditEventType::ALL.len()]),
            from: self.from.as_ref().and_then(Time::parse),
            to: self.to.as_ref().and_then(Time::parse),
        }
    }
}

fuzz_target!(|input: Input| {
    let filter = input.filter.build();
    assert!(SECRET.open(&input.forged, &filter).is_err(), "forged cursor accepted: {:?}", input.forged);

    let key = CursorKey::from_bytes(&input.key);
    let cursor = key.seal(&filter, input.position.clone());
    assert_eq!(key.open(&cursor, &filter).ok(), Some(input.position.clone()), "{filter:?} {cursor}");

    let other_filter = input.other_filter.build();
    if other_filter != filter {
        assert!(key.open(&cursor, &other_filter).is_err(), "{filter:?} opened as {other_filter:?}");
    }
    if input.other_key != input.key {
        assert!(CursorKey::from_bytes(&input.other_key).open(&cursor, &filter).is_err());
    }
    assert!(SECRET.open(&cursor, &filter).is_err());

    let mut tampered = cursor.clone().into_bytes();
    let at = usize::from(input.tamper_at) % tampered.len();
    tampered[at] = input.tamper_byte;
    if let Ok(tampered) = String::from_utf8(tampered)
        && tampered != cursor
    {
        assert!(key.open(&tampered, &filter).is_err(), "{cursor} edited to {tampered} still opens");
    }
});
