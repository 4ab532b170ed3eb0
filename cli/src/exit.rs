//! The exit codes of every `support-access` command, in one table: a script tells a tampered
//! export from one not sealed yet, a refusal (fix the request or the caller's groups) from an
//! unreachable service (retry) and from a mistyped command line (fix the script).
//! docs/support-tooling.md shows [`Exit::table`] as it is; a test holds the page to it.

use std::process::ExitCode;

/// Why a command ended ([`Exit::meaning`] says it for each). 2 stays clap's code for a usage
/// error, which is also what shells and most tools use; 1 stays "the export failed
/// verification", what `verify` always returned for it. A refusal (1 before) and an
/// unreachable service or unreadable file (2 before) have codes of their own now, since a
/// script must tell "retry" from "fix it" from "tampered".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    Tampered,
    Usage,
    Unsealed,
    Refused,
    Unavailable,
    Local,
}

impl Exit {
    /// Every code, in the order of the table.
    pub const ALL: [Exit; 7] =
        [Exit::Ok, Exit::Tampered, Exit::Usage, Exit::Unsealed, Exit::Refused, Exit::Unavailable, Exit::Local];

    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Tampered => 1,
            Exit::Usage => 2,
            Exit::Unsealed => 3,
            Exit::Refused => 4,
            Exit::Unavailable => 5,
            Exit::Local => 6,
        }
    }

    /// One line on what the code means, for the table.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "done; `verify`: every chain intact and sealed by a signed checkpoint",
            Exit::Tampered => {
                "`verify`: the export was tampered with (edited, cut, reordered, spliced, a checkpoint forged or replaced, not JSON, empty); the first bad line is named"
            }
            Exit::Usage => {
                "usage: an unknown flag, a missing or malformed value (an endpoint without `http://` or `https://`); nothing was sent"
            }
            Exit::Unsealed => {
                "`verify`: intact, but events newer than the last checkpoint are not sealed yet; export again later or pass `--allow-unsealed`"
            }
            Exit::Refused => {
                "the service refused (its problem printed with `request_id`, and `required_group` when a group is missing), or `status` found no such request"
            }
            Exit::Unavailable => {
                "the service is unreachable, or answered 5xx, 429 or something unreadable: retry later"
            }
            Exit::Local => {
                "a local file cannot be read or written, or is no usable key set, or `export --resume` found a `<file>.cursor` that does not belong to the file or the command"
            }
        }
    }

    /// The Markdown table docs/support-tooling.md shows.
    pub fn table() -> String {
        let mut table = String::from("| exit | meaning |\n| --- | --- |\n");
        for exit in Exit::ALL {
            table.push_str(&format!("| {} | {} |\n", exit.code(), exit.meaning()));
        }
        table
    }

    /// The same table for `--help`, in plain text.
    pub fn help() -> String {
        let mut help = String::from("Exit codes:\n");
        for exit in Exit::ALL {
            help.push_str(&format!("  {}  {}\n", exit.code(), exit.meaning().replace('`', "")));
        }
        help
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_distinct_and_0_1_2_keep_their_meaning() {
        let mut codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(&codes[..3], [0, 1, 2], "ok, tampered, usage (clap's own)");
        codes.dedup();
        assert_eq!(codes, (0..Exit::ALL.len() as u8).collect::<Vec<_>>());
    }

    #[test]
    fn the_support_tooling_page_shows_this_table() {
        let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/support-tooling.md")).unwrap();
        assert!(
            page.contains(&Exit::table()),
            "docs/support-tooling.md must hold this table as it is:\n{}",
            Exit::table()
        );
    }
}
