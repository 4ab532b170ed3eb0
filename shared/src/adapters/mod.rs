//! Implementations of the ports. `embedded` (feature `embedded`) is the default for local runs
//! and tests: SQLite in a data directory and a local P-256 key. The DynamoDB and KMS adapters
//! join here for the AWS deployment; `streams` reads DynamoDB Streams records without the SDK.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "streams")]
pub mod streams;
