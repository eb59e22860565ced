//! The counters a stopped overlayd leaves for the next one
//! (`counters.json` in the state directory), so they stay monotonic across a
//! restart. Written every second while they move, and on exit: after
//! `kill -9` the next start begins from the last write, at most a second
//! behind. A planned upgrade hands the counters over instead (upgrade.rs).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use engine::counters::Carried;

const FILE: &str = "counters.json";

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// What the previous overlayd counted, if it left anything readable.
pub fn load(state_dir: &Path) -> Option<Carried> {
    let text = std::fs::read(path(state_dir)).ok()?;
    match serde_json::from_slice(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, file = %path(state_dir).display(), "counters of the previous run unreadable: counting from zero");
            None
        }
    }
}

/// Replaces the file atomically (write, then rename).
pub fn save(state_dir: &Path, c: &Carried) -> std::io::Result<()> {
    let tmp = state_dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(c).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path(state_dir))
}

/// Saves `c` unless it is what `last` says was saved already; logs a
/// failure (the next tick tries again).
pub fn save_if_moved(state_dir: &Path, c: Carried, last: &Mutex<Option<Carried>>) {
    let mut last = crate::lock(last);
    if last.as_ref() == Some(&c) {
        return;
    }
    match save(state_dir, &c) {
        Ok(()) => *last = Some(c),
        Err(e) => tracing::warn!(error = %e, "counters not saved for the next run"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_saved_loads_back() {
        let dir = std::env::temp_dir().join(format!("overlayd-carry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load(&dir).is_none());
        let c = Carried { rx: 5, tx: 4, ..Default::default() };
        save(&dir, &c).unwrap();
        assert_eq!(load(&dir), Some(c));
        std::fs::write(path(&dir), b"{").unwrap();
        assert!(load(&dir).is_none(), "a torn file counts from zero");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn counters_that_did_not_move_are_not_written_again() {
        let dir = std::env::temp_dir().join(format!("overlayd-carry-moved-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let last = Mutex::new(None);
        let c = Carried { rx: 5, tx: 4, ..Default::default() };
        save_if_moved(&dir, c.clone(), &last);
        assert_eq!(load(&dir), Some(c.clone()), "the first tick writes");
        std::fs::remove_file(path(&dir)).unwrap();
        save_if_moved(&dir, c.clone(), &last);
        assert!(load(&dir).is_none(), "unchanged counters are not written again");
        let moved = Carried { rx: 6, ..c };
        save_if_moved(&dir, moved.clone(), &last);
        assert_eq!(load(&dir), Some(moved), "moved counters are written");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
