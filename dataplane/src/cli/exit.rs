//! Exit codes and the failure both binaries report: the same failure ends
//! `overlayd` and `overlayctl` with the same code (docs/user-guide.md lists
//! them), and with `--json` it is a JSON object on standard output.

use serde::Serialize;

/// What kind of failure ended a command; its number is the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Exit {
    /// Anything else: the daemon failed or cannot do it now (HTTP 5xx: 503
    /// when it runs control only), a bug, a broken invariant.
    Failed = 1,
    /// The command line is wrong (clap uses 2 as well).
    Usage = 2,
    /// The configuration or request is invalid (HTTP 400, 404, 422; `overlayd check`).
    Invalid = 3,
    /// The daemon cannot be reached.
    Unreachable = 4,
    /// The change was based on a stale generation (HTTP 409): read and retry.
    Conflict = 5,
    /// A file named on the command line cannot be read or written.
    File = 6,
    /// Not allowed: no or a wrong token, a read-only token for a write, a
    /// uid not on the list (HTTP 401, 403).
    Denied = 7,
}

impl Exit {
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The exit for an HTTP refusal.
    pub fn of_status(status: u16) -> Exit {
        match status {
            401 | 403 => Exit::Denied,
            409 => Exit::Conflict,
            400..=499 => Exit::Invalid,
            _ => Exit::Failed,
        }
    }
}

/// A command's failure: what failed, the field at fault where one is, and
/// the daemon's HTTP status when it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}{error}{}", path.as_ref().map(|p| format!("{p}: ")).unwrap_or_default(), http_status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct CommandError {
    pub error: String,
    pub path: Option<String>,
    pub exit: Exit,
    pub exit_code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

impl CommandError {
    pub fn new(exit: Exit, error: impl Into<String>) -> CommandError {
        CommandError {
            error: error.into(),
            path: None,
            exit,
            exit_code: exit.code(),
            http_status: None,
        }
    }

    /// A file that cannot be read or written.
    pub fn file(path: &std::path::Path, e: impl std::fmt::Display) -> CommandError {
        CommandError::new(Exit::File, format!("{}: {e}", path.display()))
    }

    pub fn with_path(mut self, path: Option<String>) -> CommandError {
        self.path = path;
        self
    }

    pub fn with_status(mut self, status: u16) -> CommandError {
        self.http_status = Some(status);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_exits() {
        let got: Vec<u8> =
            [400, 401, 403, 404, 409, 413, 422, 500, 503].map(|s| Exit::of_status(s).code()).into();
        assert_eq!(got, [3, 7, 7, 3, 5, 3, 3, 1, 1]);
    }

    #[test]
    fn a_failure_as_text_and_json() {
        let e = CommandError::new(Exit::Invalid, "unknown tunnel \"t9\"")
            .with_path(Some("rules[0].actions[0].encap".into()))
            .with_status(422);
        assert_eq!(e.to_string(), "rules[0].actions[0].encap: unknown tunnel \"t9\" (HTTP 422)");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "error": "unknown tunnel \"t9\"", "path": "rules[0].actions[0].encap",
                                "exit": "invalid", "exit_code": 3, "http_status": 422 })
        );
    }
}
