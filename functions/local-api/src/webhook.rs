//! local-api's notification publisher: each notification POSTed as CloudEvents JSON to the
//! app's webhook, signed so the app can tell it came from here. The scheme (documented in
//! docs/app-developers.md): `Support-Access-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`, the timestamp inside the MAC so a captured delivery cannot be replayed
//! later as new; `Support-Access-Event-Id` repeats the id to deduplicate by.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::hmac;
use shared::domain::Notification;
use shared::ports::{PublishError, Publisher};

pub const SIGNATURE_HEADER: &str = "support-access-signature";
pub const EVENT_ID_HEADER: &str = "support-access-event-id";

/// Shortest accepted secret: an HMAC key guessable by brute force signs nothing.
pub const MIN_SECRET_BYTES: usize = 16;

/// The environment variable that may hold the secret (readable only by the process's own
/// user, unlike a command-line argument, which every local user sees in the process list).
pub const SECRET_ENV: &str = "SUPPORT_ACCESS_WEBHOOK_SECRET";

/// The webhook secret, from `file` (`--webhook-secret-file`: mode 0600 or stricter, one line,
/// its line ending dropped) or else `from_env` (the value of [`SECRET_ENV`]); `None` when
/// neither is given. Both at once is refused: which one signs would be a guess.
pub fn secret(file: Option<&Path>, from_env: Option<String>) -> Result<Option<String>, String> {
    match (file, from_env) {
        (Some(_), Some(_)) => Err(format!("give the webhook secret once: --webhook-secret-file or {SECRET_ENV}")),
        (None, env) => Ok(env),
        (Some(path), None) => {
            let bytes = adapter_embedded::read_secret(path)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| adapter_embedded::secret_file_error(path, "the webhook secret must be text"))?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
        }
    }
}

pub struct Webhook {
    url: reqwest::Url,
    key: hmac::Key,
    http: reqwest::Client,
}

/// The signature header's value for `body` sent at `timestamp` (unix seconds).
fn sign(key: &hmac::Key, timestamp: i64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

impl Webhook {
    /// A publisher to `url` (http or https) signing with `secret`.
    pub fn new(url: &str, secret: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("--webhook-url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("--webhook-url: must be http or https".into());
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!("the webhook secret: at least {MIN_SECRET_BYTES} bytes"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        Ok(Self { url, key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), http })
    }
}

#[async_trait]
impl Publisher for Webhook {
    async fn publish(&self, notification: &Notification) -> Result<(), PublishError> {
        let body = serde_json::to_vec(notification).map_err(|e| PublishError(e.to_string()))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let response = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/cloudevents+json")
            .header(SIGNATURE_HEADER, sign(&self.key, now, &body))
            .header(EVENT_ID_HEADER, notification.id.as_str())
            .body(body)
            .send()
            .await
            .map_err(|e| PublishError(format!("POST {}: {e}", self.url)))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(PublishError(format!("POST {}: {}", self.url, response.status())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
        sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), timestamp, body)
    }

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        let s = signature(b"0123456789abcdef", 1_795_600_800, b"{}");
        assert!(s.starts_with("t=1795600800,v1=") && s.len() == "t=1795600800,v1=".len() + 64, "{s}");
        assert_ne!(s, signature(b"0123456789abcdef", 1_795_600_801, b"{}"));
        assert_ne!(s, signature(b"0123456789abcdef", 1_795_600_800, b"{ }"));
        assert_ne!(s, signature(b"0123456789abcdeX", 1_795_600_800, b"{}"));
    }

    #[test]
    fn a_short_secret_or_another_scheme_is_refused() {
        assert!(Webhook::new("http://127.0.0.1:9/hook", "short").is_err());
        assert!(Webhook::new("ftp://127.0.0.1/hook", "0123456789abcdef").is_err());
        assert!(Webhook::new("http://127.0.0.1:9/hook", "0123456789abcdef").is_ok());
    }

    #[test]
    fn the_secret_comes_from_a_private_file_or_the_environment_never_both() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhook.secret");
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(secret(Some(&path), None).unwrap_err().contains("chmod 600"), "a file others can read");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(secret(Some(&path), None).unwrap().as_deref(), Some("0123456789abcdef"));
        assert_eq!(secret(None, Some("from the env".into())).unwrap().as_deref(), Some("from the env"));
        assert!(secret(Some(&path), Some("x".into())).is_err());
        assert_eq!(secret(None, None).unwrap(), None);
    }
}
