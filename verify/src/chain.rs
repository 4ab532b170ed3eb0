//! The audit log's per-user hash chains, in a form any language can recompute.
//!
//! Every audit event is a JSON object (as the API returns it and as exports carry it). Its
//! `hash` is the lowercase hex SHA-256 of its **canonical encoding**: the object without its
//! `hash` member, members sorted by key (by Unicode code point), no whitespace, strings in
//! JSON's minimal escaping (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control characters
//! as `\u00xx` in lowercase hex, everything else as literal UTF-8, `/` unescaped), integers in
//! plain decimal, `null`, `true` and `false` as such. For the values an event holds (strings,
//! integers, `null` and one nested object) this is exactly RFC 8785 (JCS). Each event also
//! carries `prev_hash`, the `hash` of the event before it in the same stream (the user's, or
//! the unattributed one), and [`GENESIS`] for the first; with the gapless `seq` this makes a
//! deleted, edited, reordered or spliced event visible. `tests/vectors/chain.json` holds
//! golden vectors.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The stream of the events no user can be trusted to own (a token whose signature failed
/// names nobody); `~` is outside the id alphabet, so no user id can be it.
pub const UNATTRIBUTED_STREAM: &str = "~unattributed";

/// The `prev_hash` of the first event of every stream.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The canonical encoding of `value` (see the module docs).
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(value, None, &mut out);
    String::from_utf8(out).expect("JSON text is UTF-8")
}

/// Writes `value` canonically into `out`, leaving out the member `skip` of an object at the
/// top. Into one buffer, with no string per member: the audit writers hash every event.
fn write_canonical(value: &Value, skip: Option<&str>, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().filter(|k| Some(k.as_str()) != skip).collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).expect("a string serializes");
                out.push(b':');
                write_canonical(&map[key], None, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, None, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("a scalar serializes"),
    }
}

/// The `hash` an event must carry: SHA-256 over the canonical encoding of the event without
/// its `hash` member. `event` must be a JSON object.
pub fn event_hash(event: &Value) -> String {
    let mut canonical = Vec::with_capacity(1024);
    write_canonical(event, Some("hash"), &mut canonical);
    canonical_hash(&canonical)
}

/// The `hash` of an event whose canonical encoding (without its `hash` member) is
/// `canonical`: for writers that encode their events canonically themselves, as
/// `AuditEvent::seal` does, where building a [`Value`] first cost more than the hash.
pub fn canonical_hash(canonical: &[u8]) -> String {
    hex(&Sha256::digest(canonical))
}

/// `bytes` as lowercase hex, the form of every digest this service writes (event hashes,
/// checkpoint links, receipts' digests), without a formatter per byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(2 * bytes.len());
    for b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

/// Why a sequence of events is not an intact chain. `index` is the position in the input of
/// the first event found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("event {index}: not an audit event object ({problem})")]
    Malformed { index: usize, problem: String },
    #[error("event {index} ({stream} #{seq}): its hash does not match its content")]
    Hash { index: usize, stream: String, seq: u64 },
    #[error("event {index} ({stream}): seq {seq} where {expected} was next (a gap, a reorder or a duplicate)")]
    Sequence { index: usize, stream: String, seq: u64, expected: u64 },
    #[error("event {index} ({stream} #{seq}): prev_hash does not link to the event before it")]
    Link { index: usize, stream: String, seq: u64 },
}

/// The stream an event belongs to: its `user_id`, or [`UNATTRIBUTED_STREAM`] when that is null.
pub fn stream_of(event: &Value) -> Option<String> {
    stream_name(event).map(str::to_owned)
}

fn stream_name(event: &Value) -> Option<&str> {
    match event.get("user_id")? {
        Value::Null => Some(UNATTRIBUTED_STREAM),
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// Checks events given oldest first (several streams may interleave): in each stream `seq`
/// runs 1, 2, 3, … without a gap, each `prev_hash` is the previous event's `hash` (the first
/// one's is [`GENESIS`]), and each `hash` matches its event. Returns the head (last `seq` and
/// `hash`) of every stream.
pub fn verify_chains<'a>(
    events: impl IntoIterator<Item = &'a Value>,
) -> Result<std::collections::BTreeMap<String, (u64, String)>, ChainError> {
    let mut chains = Chains::default();
    for event in events {
        chains.push(event)?;
    }
    Ok(chains.into_heads())
}

/// [`verify_chains`] one event at a time, for an export read as a stream: it keeps only each
/// stream's head (last `seq` and `hash`), so its memory grows with the streams, not the events.
#[derive(Debug, Clone, Default)]
pub struct Chains {
    heads: std::collections::BTreeMap<String, (u64, String)>,
    pushed: usize,
}

/// An event that [`Chains::push`] linked: its stream, `seq` and `hash`, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linked<'a> {
    pub stream: &'a str,
    pub seq: u64,
    pub hash: &'a str,
}

impl Chains {
    /// Checks the next event (the errors' `index` counts the events pushed before it).
    pub fn push<'a>(&mut self, event: &'a Value) -> Result<Linked<'a>, ChainError> {
        let index = self.pushed;
        let malformed = |problem: &str| ChainError::Malformed { index, problem: problem.to_owned() };
        let stream = stream_name(event).ok_or_else(|| malformed("user_id missing or not a string"))?;
        let seq = event.get("seq").and_then(Value::as_u64).ok_or_else(|| malformed("seq missing"))?;
        let hash = event.get("hash").and_then(Value::as_str).ok_or_else(|| malformed("hash missing"))?;
        let prev = event.get("prev_hash").and_then(Value::as_str).ok_or_else(|| malformed("prev_hash missing"))?;
        if event_hash(event) != hash {
            return Err(ChainError::Hash { index, stream: stream.to_owned(), seq });
        }
        let head = self.heads.get_mut(stream);
        let (last_seq, last_hash) = head.as_ref().map_or((0, GENESIS), |(s, h)| (*s, h.as_str()));
        if seq != last_seq + 1 {
            return Err(ChainError::Sequence { index, stream: stream.to_owned(), seq, expected: last_seq + 1 });
        }
        if prev != last_hash {
            return Err(ChainError::Link { index, stream: stream.to_owned(), seq });
        }
        match head {
            Some(head) => {
                head.0 = seq;
                head.1.clear();
                head.1.push_str(hash);
            }
            None => {
                self.heads.insert(stream.to_owned(), (seq, hash.to_owned()));
            }
        }
        self.pushed += 1;
        Ok(Linked { stream, seq, hash })
    }

    /// How many events were pushed and held.
    pub fn len(&self) -> usize {
        self.pushed
    }

    pub fn is_empty(&self) -> bool {
        self.pushed == 0
    }

    /// Every stream's head: last `seq` and `hash`.
    pub fn into_heads(self) -> std::collections::BTreeMap<String, (u64, String)> {
        self.heads
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_sorted_and_nothing_is_spaced() {
        let v = json!({"b": 1, "a": {"d": null, "c": "x"}, "é": "ü", "A": [2, 1]});
        assert_eq!(canonical_json(&v), r#"{"A":[2,1],"a":{"c":"x","d":null},"b":1,"é":"ü"}"#);
    }

    #[test]
    fn strings_use_minimal_escaping() {
        let v = json!({"s": "q\"b\\n\n t\t\u{1} /"});
        assert_eq!(canonical_json(&v), "{\"s\":\"q\\\"b\\\\n\\n t\\t\\u0001 /\"}");
    }

    #[test]
    fn the_hash_ignores_the_hash_member_only() {
        let a = json!({"seq": 1, "hash": "whatever"});
        let b = json!({"seq": 1});
        assert_eq!(event_hash(&a), event_hash(&b));
        assert_ne!(event_hash(&b), event_hash(&json!({"seq": 2})));
        assert_eq!(event_hash(&b).len(), 64);
    }
}
