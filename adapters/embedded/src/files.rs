use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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

/// Makes `dir` the data directory: created with mode 0700 (and any missing parents with it)
/// when it does not exist, so only its owner can list or enter it. An existing directory is
/// the user's choice and is left as it is; the warning returned says when group or others
/// may write in it (they could swap the database or a key file).
pub fn prepare_data_dir(dir: &Path) -> Result<Option<String>, String> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let mode = meta.permissions().mode() & 0o777;
            Ok((mode & 0o022 != 0).then(|| {
                format!("{}: mode {mode:o} lets others write in the data directory; chmod 700 it", dir.display())
            }))
        }
        Ok(_) => Err(format!("{}: not a directory", dir.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map(|()| None)
            .map_err(|e| format!("cannot create {}: {e}", dir.display())),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// Creates `path` empty with mode 0600 if it does not exist (an existing file is left as it
/// is), before a library that would create it 0644 opens it: SQLite then gives its `-wal`
/// and `-shm` files the database's own mode.
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path).map(drop)
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
    fn a_new_data_directory_is_0700_and_an_open_one_is_left_with_a_warning() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        assert_eq!(prepare_data_dir(&dir).unwrap(), None);
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(prepare_data_dir(&dir).unwrap(), None, "an existing private directory");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let warning = prepare_data_dir(&dir).unwrap().expect("a warning");
        assert!(warning.contains("chmod 700"), "{warning}");
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o777, "left as it is");
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
