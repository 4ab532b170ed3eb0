//! Starting the real `local-api` binary, shared by its integration tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_local-api");

/// Starts the server on a free port with `env` added, and returns it with its base URL (read
/// from its first line).
pub fn serve_with(data_dir: &Path, env: &[(String, String)]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--data-dir"])
        .arg(data_dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = listening_url(&mut child);
    (child, base)
}

/// The base URL a server started with `--port 0` and a piped stdout prints on its first line.
pub fn listening_url(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    line.split_whitespace().find(|w| w.starts_with("http://")).expect("a listening line").to_owned()
}
