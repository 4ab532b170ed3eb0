//! The AWS adapters: DynamoDB for consents and the audit log, KMS for signing, and the
//! DynamoDB Streams records that become `consent.expired`. No SDK type leaves this module:
//! everything crosses the ports as domain values and `StoreError`/`SignerError`.

mod der;
mod dynamodb;
mod items;
mod kms;
mod provision;
mod stream;

use std::time::Duration;

pub use der::{der_signature_to_raw, spki_to_uncompressed_point};
pub use dynamodb::{DynamoStore, Tables};
pub use kms::KmsSigner;
pub use provision::{create_signing_key, create_tables};
pub use stream::{ExpiryRecord, expiries_from_stream};

/// The SDK configuration every function builds once per cold start: the standard AWS
/// environment (region, credentials, `AWS_ENDPOINT_URL`), with explicit timeouts and a
/// bounded retry budget so no call can hang a Lambda to its own timeout.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}

/// 1 s to connect, 2 s per attempt, 5 s per operation (retries included).
pub fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build()
}
