use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// A fresh P-256 private key as PKCS#8 DER.
pub fn new_p256_pkcs8() -> Vec<u8> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .and_then(|k| k.to_pkcs8v1())
        .expect("the system RNG and aws-lc can make a P-256 key")
        .as_ref()
        .to_vec()
}

/// The P-256 key (PKCS#8 DER) in `path`, created there on first use.
pub fn p256_key_file(path: &Path) -> Result<Vec<u8>, String> {
    read_or_create_secret(path, &new_p256_pkcs8())
}

/// A message for a secret file that cannot be used, naming it.
pub fn secret_file_error(path: &Path, problem: impl std::fmt::Display) -> String {
    format!("{}: {problem}", path.display())
}

/// The secret in `path`, or `fresh` written there (mode 0600, never overwriting) when the
/// file does not exist. A secret readable by group or others is refused rather than used.
pub fn read_or_create_secret(path: &Path, fresh: &[u8]) -> Result<Vec<u8>, String> {
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut file) => {
            file.write_all(fresh).and_then(|_| file.sync_all()).map_err(|e| secret_file_error(path, e))?;
            Ok(fresh.to_vec())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_secret(path),
        Err(e) => Err(secret_file_error(path, e)),
    }
}

/// The secret in `path`, refused when group or others may read it.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mode = fs::metadata(path).map_err(|e| secret_file_error(path, e))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(secret_file_error(
            path,
            format!("mode {:o} lets others read a secret; chmod 600 it", mode & 0o777),
        ));
    }
    fs::read(path).map_err(|e| secret_file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_created_with_mode_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        assert_eq!(read_or_create_secret(&path, b"one").unwrap(), b"one");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_or_create_secret(&path, b"two").unwrap(), b"one", "an existing secret is kept");
    }

    #[test]
    fn a_world_readable_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        read_or_create_secret(&path, b"one").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_or_create_secret(&path, b"two").unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
