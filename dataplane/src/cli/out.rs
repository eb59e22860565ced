//! Standard output for the one-shot commands of both binaries. A reader that
//! has gone (`overlayctl rule list | head -1`) ends the command quietly with
//! success, as `ls | head -1` does, instead of the panic of `println!`.

use std::io::Write;

use serde::Serialize;

use super::exit::{CommandError, Exit};

/// Writes `text` to standard output.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        closed(e);
    }
}

/// Writes `line` and a newline to standard output.
pub fn line(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        closed(e);
    }
}

/// Writes `doc` as pretty JSON and a newline.
pub fn json<T: Serialize + ?Sized>(doc: &T) {
    match serde_json::to_string_pretty(doc) {
        Ok(s) => line(&s),
        // Our documents always serialise; say so rather than print nothing.
        Err(e) => line(&format!("{{\"error\": \"cannot serialise the answer: {e}\"}}")),
    }
}

impl CommandError {
    /// Reports the failure as `prog` (JSON on standard output with `json`,
    /// else a line on standard error) and returns its exit code.
    pub fn report(&self, prog: &str, json: bool) -> std::process::ExitCode {
        if json {
            self::json(self);
        } else {
            eprintln!("{prog}: {self}");
        }
        std::process::ExitCode::from(self.exit_code)
    }
}

/// Standard output failed: a closed pipe ends the process quietly; any
/// other failure (a full disk) is reported.
fn closed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("cannot write to standard output: {e}");
    std::process::exit(Exit::File.code().into());
}
