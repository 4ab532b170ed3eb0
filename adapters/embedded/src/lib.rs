//! The embedded default: everything local-api needs with no AWS account. A data directory
//! holds the SQLite database, the token-signing key, the dev identity provider's key and the
//! cursor key; files holding secrets are created with mode 0600.

mod archive;
mod controls;
mod dev_idp;
mod files;
mod group_commit;
mod intake;
mod outbox;
mod readers;
mod requests;
mod signer;
mod store;

pub use dev_idp::{DEV_AUDIENCE, DEV_ISSUER, DevIdentityProvider, IdentityError, stringify_claims};
pub use files::{prepare_data_dir, read_or_create_secret, read_secret, secret_file_error};
pub use signer::LocalSigner;
pub use store::SqliteStore;
