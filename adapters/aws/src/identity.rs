//! The HTTP GET the identity verifier fetches the provider's discovery document and key set
//! with (`shared::identity::Discovery`): the SDKs' own connector (hyper 1, rustls on aws-lc,
//! the environment's proxy settings), the one HTTPS stack every function already links, with
//! short timeouts and a bounded body.

use std::time::Duration;

use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorSettings};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use shared::identity::{Discovery, HttpGet, IdentityVerifier, MAX_DOCUMENT_BYTES};

/// Connecting, reading, and the whole fetch.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const FETCH_TIMEOUT: Duration = Duration::from_secs(4);

/// GET over the SDKs' connector.
pub struct SdkHttpGet {
    connector: aws_smithy_http_client::Connector,
}

impl SdkHttpGet {
    pub fn new() -> Self {
        let mut builder =
            aws_smithy_http_client::ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
        builder.set_connector_settings(Some(
            HttpConnectorSettings::builder().connect_timeout(CONNECT_TIMEOUT).read_timeout(READ_TIMEOUT).build(),
        ));
        builder.set_sleep_impl(aws_smithy_async::rt::sleep::default_async_sleep());
        builder.set_proxy_config(Some(aws_smithy_http_client::proxy::ProxyConfig::from_env()));
        Self { connector: builder.build() }
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut request = aws_smithy_runtime_api::http::Request::new(SdkBody::empty());
        request.set_uri(url).map_err(|e| format!("{url}: {e}"))?;
        request.headers_mut().insert("accept", "application/json");
        let response = self.connector.call(request).await.map_err(|e| format!("GET {url}: {e:?}"))?;
        if response.status().as_u16() != 200 {
            return Err(format!("GET {url}: status {}", response.status().as_u16()));
        }
        let mut body = ByteStream::new(response.into_body());
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.map_err(|e| format!("GET {url}: {e}"))?);
            if out.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("GET {url}: over {MAX_DOCUMENT_BYTES} bytes"));
            }
        }
        Ok(out)
    }
}

impl Default for SdkHttpGet {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl HttpGet for SdkHttpGet {
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch(url)).await.map_err(|_| format!("GET {url}: timed out"))?
    }
}

/// The identity verifier the environment configures: `SUPPORT_ACCESS_IDENTITY_ISSUER` (the
/// identity provider's issuer, as its tokens' `iss` spell it) and
/// `SUPPORT_ACCESS_IDENTITY_AUDIENCE` (the app client id), both or neither; `None` when
/// neither is set. The keys are fetched on first use, not here.
pub fn identity_from_env() -> Result<Option<IdentityVerifier>, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (var("SUPPORT_ACCESS_IDENTITY_ISSUER"), var("SUPPORT_ACCESS_IDENTITY_AUDIENCE")) {
        (None, None) => Ok(None),
        (Some(issuer), Some(audience)) => {
            if !issuer.starts_with("https://") && !issuer.starts_with("http://") {
                return Err(format!("SUPPORT_ACCESS_IDENTITY_ISSUER: {issuer:?} is not an http(s) URL"));
            }
            let source = Discovery::new(issuer.clone(), std::sync::Arc::new(SdkHttpGet::new()));
            Ok(Some(IdentityVerifier::new(issuer, audience, std::sync::Arc::new(source))))
        }
        _ => Err("SUPPORT_ACCESS_IDENTITY_ISSUER and SUPPORT_ACCESS_IDENTITY_AUDIENCE: set both or neither".to_owned()),
    }
}
