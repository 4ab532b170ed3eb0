use thiserror::Error;

/// Why a storage port failed. The `String`s are for logs only: the HTTP layer answers
/// `unavailable` and never shows them to a client.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The condition of a write did not hold: the consent is no longer the one read.
    #[error("the consent changed since it was read")]
    ConsentChanged,
    /// Another writer took the place this write was conditioned on (a checkpoint's `seq`).
    #[error("another writer got there first: {0}")]
    Conflict(String),
    /// Storage could not be reached or refused the work (throttling, timeout, I/O).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A use recorded through the intake would land past its [`super::Deadline`] (or a hold
    /// after its decision): refused before any write, answered as storage unavailable (503),
    /// and told apart from an outage in logs and benchmarks.
    #[error("storage unavailable: the use's deadline passed before it was recorded")]
    DeadlinePassed,
    /// Storage holds something that does not parse into the domain.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Why the signer failed. Like [`StoreError`], the text is for logs only.
#[derive(Debug, Error)]
pub enum SignerError {
    #[error("signer unavailable: {0}")]
    Unavailable(String),
    #[error("signer answered something unusable: {0}")]
    Invalid(String),
}

impl From<support_access_verify::KeyError> for SignerError {
    fn from(e: support_access_verify::KeyError) -> Self {
        Self::Invalid(e.to_string())
    }
}
