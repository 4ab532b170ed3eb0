//! Cursors (the audit log's, the access-request lists') are opaque to clients and
//! authenticated: the store's position and the query's filter are sealed with HMAC-SHA256
//! under a server key, so a client can neither forge a position nor reuse a cursor with another
//! filter (another user's log or list, say). A filter is any value that serializes; each
//! listing's filter has its own shape, so one listing's cursor never opens for another.

use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use super::ApiError;

/// The server-side key that seals cursors (32 random bytes).
pub struct CursorKey(hmac::Key);

#[derive(Serialize, Deserialize)]
struct Sealed {
    f: serde_json::Value,
    p: String,
}

impl CursorKey {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// A fresh random key (cursors from before a restart stop working with it).
    pub fn generate() -> Self {
        Self::from_bytes(&Self::random_bytes())
    }

    /// From the operating system's CSPRNG (`getrandom(2)`), not aws-lc's: aws-lc seeds its
    /// DRBG on first use from CPU jitter, tens of milliseconds of CPU, and a function that
    /// never pages makes its throwaway key in the set-up its first request waits for
    /// (`adapter_aws::lambda::services_from_env`); BENCHMARKS.md, "Cold start".
    pub fn random_bytes() -> [u8; Self::LEN] {
        let mut bytes = [0u8; Self::LEN];
        getrandom::fill(&mut bytes).expect("the system RNG is available");
        bytes
    }

    /// An opaque cursor for `position` under `filter`.
    pub fn seal<F: Serialize>(&self, filter: &F, position: String) -> String {
        let payload =
            serde_json::to_vec(&Sealed { f: serde_json::to_value(filter).expect("filter serializes"), p: position })
                .expect("a JSON value serializes");
        let tag = hmac::sign(&self.0, &payload);
        format!("{}.{}", B64.encode(&payload), B64.encode(tag.as_ref()))
    }

    /// The position inside `cursor`, if this key sealed it for this very `filter`.
    pub fn open<F: Serialize>(&self, cursor: &str, filter: &F) -> Result<String, ApiError> {
        let invalid = || ApiError::InvalidRequest("cursor is not valid for this query".into());
        let (payload_b64, tag_b64) = cursor.split_once('.').ok_or_else(invalid)?;
        let payload = B64.decode(payload_b64).map_err(|_| invalid())?;
        let tag = B64.decode(tag_b64).map_err(|_| invalid())?;
        hmac::verify(&self.0, &payload, &tag).map_err(|_| invalid())?;
        let sealed: Sealed = serde_json::from_slice(&payload).map_err(|_| invalid())?;
        if sealed.f != serde_json::to_value(filter).expect("filter serializes") {
            return Err(invalid());
        }
        Ok(sealed.p)
    }
}

/// Where a process's cursor key comes from: at hand from the start (local-api's `cursor.key`,
/// a function's throwaway key), or fetched beside the first request's own work (a Lambda
/// function's Secrets Manager secret), so that a request waits for the key only when it opens
/// or seals a cursor, and its query never waits for the fetch (BENCHMARKS.md, "First response").
#[async_trait]
pub trait CursorKeys: Send + Sync {
    /// The key, once it is had; `Unavailable` when it cannot be (the next call tries again).
    async fn key(&self) -> Result<&CursorKey, ApiError>;
}

#[async_trait]
impl CursorKeys for CursorKey {
    async fn key(&self) -> Result<&CursorKey, ApiError> {
        Ok(self)
    }
}

impl From<CursorKey> for Arc<dyn CursorKeys> {
    fn from(key: CursorKey) -> Self {
        Arc::new(key)
    }
}

impl dyn CursorKeys {
    /// The position inside `cursor` (none without one), if this key sealed it for this very
    /// `filter`. Waits for the key only when there is a cursor to open.
    pub async fn open_cursor<F: Serialize + Sync>(
        &self,
        cursor: Option<&str>,
        filter: &F,
    ) -> Result<Option<String>, ApiError> {
        match cursor {
            Some(cursor) => self.key().await?.open(cursor, filter).map(Some),
            None => Ok(None),
        }
    }

    /// `position` sealed for `filter` (none without one). Waits for the key only when there
    /// is a position to seal.
    pub async fn seal_cursor<F: Serialize + Sync>(
        &self,
        filter: &F,
        position: Option<String>,
    ) -> Result<Option<String>, ApiError> {
        match position {
            Some(position) => Ok(Some(self.key().await?.seal(filter, position))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AuditFilter, UserId};

    fn alice() -> AuditFilter {
        AuditFilter { user_id: Some(UserId::parse("alice").unwrap()), ..Default::default() }
    }

    #[test]
    fn a_sealed_cursor_opens_with_the_same_filter() {
        let key = CursorKey::generate();
        let c = key.seal(&alice(), "42".into());
        assert_eq!(key.open(&c, &alice()).unwrap(), "42");
    }

    #[test]
    fn a_cursor_for_another_filter_is_refused() {
        let key = CursorKey::generate();
        let c = key.seal(&alice(), "42".into());
        let bob = AuditFilter { user_id: Some(UserId::parse("bob").unwrap()), ..Default::default() };
        assert!(matches!(key.open(&c, &bob), Err(ApiError::InvalidRequest(_))));
    }

    #[test]
    fn an_edited_cursor_is_refused() {
        let key = CursorKey::generate();
        let c = key.seal(&alice(), "42".into());
        let (payload, tag) = c.split_once('.').unwrap();
        let mut bytes = B64.decode(payload).unwrap();
        let at = bytes.iter().position(|b| *b == b'4').unwrap();
        bytes[at] = b'1';
        let forged = format!("{}.{}", B64.encode(&bytes), tag);
        assert!(key.open(&forged, &alice()).is_err());
        for garbage in ["", ".", "abc", "a.b.c", "!!!.???"] {
            assert!(key.open(garbage, &alice()).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn a_cursor_sealed_for_the_first_and_last_times_a_query_accepts_opens_again() {
        let key = CursorKey::generate();
        let filter = AuditFilter {
            from: Some(crate::domain::Timestamp::parse_rfc3339("0000-01-01T00:00:00Z", "from").unwrap()),
            to: Some(crate::domain::Timestamp::parse_rfc3339("9999-12-31T23:59:59Z", "to").unwrap()),
            ..alice()
        };
        let c = key.seal(&filter, "42".into());
        assert_eq!(key.open(&c, &filter).unwrap(), "42");
    }

    #[test]
    fn a_cursor_from_another_key_is_refused() {
        let c = CursorKey::generate().seal(&alice(), "42".into());
        assert!(CursorKey::generate().open(&c, &alice()).is_err());
    }

    /// A key that cannot be had (a secret that cannot be read).
    struct Unreadable;

    #[async_trait]
    impl CursorKeys for Unreadable {
        async fn key(&self) -> Result<&CursorKey, ApiError> {
            Err(ApiError::Unavailable("no secret".into()))
        }
    }

    #[tokio::test]
    async fn a_page_without_a_cursor_to_open_or_seal_never_waits_for_the_key() {
        let keys: Arc<dyn CursorKeys> = Arc::new(Unreadable);
        assert_eq!(keys.open_cursor(None, &alice()).await.unwrap(), None);
        assert_eq!(keys.seal_cursor(&alice(), None).await.unwrap(), None);
        assert!(matches!(keys.open_cursor(Some("a.b"), &alice()).await, Err(ApiError::Unavailable(_))));
        assert!(matches!(keys.seal_cursor(&alice(), Some("42".into())).await, Err(ApiError::Unavailable(_))));
        let ready: Arc<dyn CursorKeys> = CursorKey::generate().into();
        let sealed = ready.seal_cursor(&alice(), Some("42".into())).await.unwrap();
        assert_eq!(ready.open_cursor(sealed.as_deref(), &alice()).await.unwrap().as_deref(), Some("42"));
    }
}
