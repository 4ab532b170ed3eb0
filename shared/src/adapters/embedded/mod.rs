//! The embedded default: everything local-api needs with no AWS account. A data directory
//! holds the SQLite database, the token-signing key, the dev identity provider's key and the
//! cursor key; files holding secrets are created with mode 0600.

mod dev_idp;
mod files;
mod signer;
mod store;

use std::path::Path;
use std::sync::Arc;

pub use dev_idp::{DEV_AUDIENCE, DEV_ISSUER, DevIdentityProvider, IdentityError, stringify_claims};
pub use files::{read_or_create_secret, secret_file_error};
pub use signer::LocalSigner;
pub use store::SqliteStore;

use crate::app::CursorKey;
use crate::domain::Policy;
use crate::ports::{Clock, Ports};

/// What local-api runs on: the ports, the store (for the expiry sweep) and the dev IdP.
pub struct EmbeddedRuntime {
    pub ports: Ports,
    pub store: Arc<SqliteStore>,
    pub identity: DevIdentityProvider,
}

impl EmbeddedRuntime {
    /// Opens (or creates) everything in `data_dir`.
    pub async fn open(data_dir: &Path, policy: Policy, clock: Arc<dyn Clock>) -> Result<Self, String> {
        std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let store = Arc::new(SqliteStore::open(&data_dir.join("support-access.db")).map_err(|e| e.to_string())?);
        let signer = Arc::new(LocalSigner::load_or_create(&data_dir.join("signing-key.p8"))?);
        let identity = DevIdentityProvider::load_or_create(&data_dir.join("dev-idp-key.p8"))?;
        let cursor_key =
            CursorKey::from_bytes(&read_or_create_secret(&data_dir.join("cursor.key"), &CursorKey::random_bytes())?);
        let ports = Ports::new(store.clone(), signer, clock, policy, cursor_key).await.map_err(|e| e.to_string())?;
        Ok(Self { ports, store, identity })
    }

    /// Everything in memory, nothing on disk: for tests.
    pub async fn in_memory(policy: Policy, clock: Arc<dyn Clock>) -> Self {
        let store = Arc::new(SqliteStore::in_memory().expect("an in-memory database opens"));
        let signer = Arc::new(LocalSigner::generate());
        let ports = Ports::new(store.clone(), signer, clock, policy, CursorKey::generate())
            .await
            .expect("a local key always makes a JWK Set");
        Self { ports, store, identity: DevIdentityProvider::generate() }
    }
}
