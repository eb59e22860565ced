//! Accepted state on disk: the configuration document the daemon last
//! acknowledged, so a restart (or a `kill -9` at any moment) loses no accepted
//! change and never finds a torn file.
//!
//! A save writes a temporary file in the same directory, fsyncs it, keeps the
//! current `state.json` as `state.json.prev` (a hard link, renamed into
//! place), renames the temporary file over `state.json` (atomic on POSIX file
//! systems) and fsyncs the directory so the renames are durable. A crash
//! before the last rename leaves the old state; after it, the new one.
//! Leftover temporary files are ignored and removed.
//!
//! The file is the compact JSON document on one line, then a line
//! `sha256:<hex>` with the SHA-256 digest of that line: a file changed or
//! damaged after it was written (even one bit that leaves valid JSON) is
//! refused, with the way out named: `--restore-previous` starts from
//! `state.json.prev`, `--start-empty` starts as from an empty directory; both
//! keep the refused file aside. A file without the digest line was written
//! before digests existed; it loads (with a warning) and the next save adds
//! one.
//!
//! The stored document carries a schema version: older versions are upgraded
//! on load, newer ones are refused with a message saying so.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use engine::model::{Config, SCHEMA_VERSION};
use sha2::{Digest, Sha256};

const STATE: &str = "state.json";
const TMP: &str = "state.json.tmp";
const PREV: &str = "state.json.prev";
const PREV_TMP: &str = "state.json.prev.tmp";
const DIGEST_PREFIX: &str = "sha256:";

/// What an operator can do about a refused state file.
const WAY_OUT: &str = "to start from the previous good state (the one before the last accepted \
change) run `overlayd run --restore-previous` with your usual options, or to start empty on \
purpose `overlayd run --start-empty`; either keeps the refused file aside";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid state file: {reason}; {WAY_OUT}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path}: the content does not match its SHA-256 digest (recorded {recorded}, content \
         {actual}): the file was changed or damaged after overlayd wrote it; {WAY_OUT}"
    )]
    Digest { path: PathBuf, recorded: String, actual: String },
    #[error(
        "{path}: written by a newer overlayd (schema version {found}); this build reads versions 1..={supported}"
    )]
    TooNew { path: PathBuf, found: u32, supported: u32 },
    #[error("{path}: not a valid state file: {source}")]
    Upgrade { path: PathBuf, source: UpgradeError },
    #[error("{path}: there is no previous state to restore (it is kept from the second accepted change on)")]
    NoPrevious { path: PathBuf },
}

/// A stored document that cannot be brought up to the current schema.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("schema_version {0} does not exist")]
    NoSuchVersion(u32),
}

/// How to start when the operator says not to use `state.json` as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Use `state.json` (the normal start).
    #[default]
    None,
    /// Start from `state.json.prev`, the state before the last accepted change.
    RestorePrevious,
    /// Start as from an empty state directory.
    StartEmpty,
}

/// The state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The document and its digest line, as written.
fn encode(config: &Config) -> Vec<u8> {
    // Compact: the file is machine state (operators read it with `overlayctl config get`).
    let mut doc = serde_json::to_vec(config).expect("a Config always serialises");
    let digest = hex_digest(&doc);
    doc.push(b'\n');
    doc.extend_from_slice(format!("{DIGEST_PREFIX}{digest}\n").as_bytes());
    doc
}

/// A state file's bytes; `None` if it does not exist.
fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// The document of a state file's text, its digest checked; `None` for a
/// file without a digest line (written by an older overlayd).
fn digested<'t>(path: &Path, text: &'t str) -> Result<Option<&'t str>, StoreError> {
    match text.trim_end_matches('\n').rsplit_once('\n') {
        Some((doc, last)) if last.starts_with(DIGEST_PREFIX) => {
            let recorded = &last[DIGEST_PREFIX.len()..];
            let actual = hex_digest(doc.as_bytes());
            if recorded != actual {
                return Err(StoreError::Digest {
                    path: path.to_path_buf(),
                    recorded: recorded.to_string(),
                    actual,
                });
            }
            Ok(Some(doc))
        }
        _ => Ok(None),
    }
}

/// Reads and checks one state file; `None` if it does not exist.
fn read_verified(path: &Path) -> Result<Option<Config>, StoreError> {
    let Some(bytes) = read_bytes(path)? else { return Ok(None) };
    let corrupt = |reason: String| StoreError::Corrupt { path: path.to_path_buf(), reason };
    let text = std::str::from_utf8(&bytes).map_err(|e| corrupt(format!("not UTF-8: {e}")))?;
    let doc = match digested(path, text)? {
        Some(doc) => doc,
        None => {
            tracing::warn!(
                file = %path.display(),
                "state file without a digest (written by an older overlayd); the next change adds one"
            );
            text
        }
    };
    let value: serde_json::Value = serde_json::from_str(doc).map_err(|e| corrupt(e.to_string()))?;
    let found = value
        .get("schema_version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| corrupt("no schema_version".into()))? as u32;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew { path: path.into(), found, supported: SCHEMA_VERSION });
    }
    let value = upgrade(value, found)
        .map_err(|source| StoreError::Upgrade { path: path.into(), source })?;
    let config: Config = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    config.validate().map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(config))
}

impl Store {
    /// Opens (creating, mode 0700) a state directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let dir = dir.into();
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io(&dir))?;
        for leftover in [TMP, PREV_TMP] {
            let tmp = dir.join(leftover);
            if tmp.exists() {
                // A save that crashed before its rename: the state it meant to
                // replace is still the accepted one.
                fs::remove_file(&tmp).map_err(io(&tmp))?;
            }
        }
        Ok(Store { dir })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE)
    }

    pub fn previous_path(&self) -> PathBuf {
        self.dir.join(PREV)
    }

    /// The last saved configuration, or `None` for a new directory.
    pub fn load(&self) -> Result<Option<Config>, StoreError> {
        read_verified(&self.path())
    }

    /// The configuration before the last accepted change, if kept.
    pub fn load_previous(&self) -> Result<Option<Config>, StoreError> {
        read_verified(&self.previous_path())
    }

    /// Applies the operator's recovery choice before the daemon loads its
    /// state: the current file is moved aside (never deleted) and, to
    /// restore, the previous state becomes the current one. Returns where
    /// the set-aside file went.
    pub fn recover(&self, how: Recovery) -> Result<Option<PathBuf>, StoreError> {
        let restored = match how {
            Recovery::None => return Ok(None),
            Recovery::RestorePrevious => Some(
                self.load_previous()?
                    .ok_or_else(|| StoreError::NoPrevious { path: self.previous_path() })?,
            ),
            Recovery::StartEmpty => None,
        };
        let path = self.path();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = self.dir.join(format!("{STATE}.refused-{stamp}"));
        let moved = match fs::rename(&path, &aside) {
            Ok(()) => Some(aside),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&path)(e)),
        };
        match restored {
            Some(c) => self.save(&c)?,
            None => {
                let prev = self.previous_path();
                match fs::remove_file(&prev) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&prev)(e)),
                }
                File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
            }
        }
        Ok(moved)
    }

    /// Saves `config` durably; when this returns `Ok`, a crash at any later
    /// moment still finds exactly this configuration on the next load, and
    /// the configuration it replaces is kept as the previous state.
    pub fn save(&self, config: &Config) -> Result<(), StoreError> {
        let tmp = self.dir.join(TMP);
        let doc = encode(config);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&doc).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        let path = self.path();
        self.keep_previous(&path)?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        Ok(())
    }

    /// Keeps the current state file as the previous one, if it is good: a
    /// damaged current file never replaces a good previous one.
    fn keep_previous(&self, path: &Path) -> Result<(), StoreError> {
        match intact(path) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => {
                tracing::warn!(reason = %e, "the state file being replaced is not good; the previous state kept is older");
                return Ok(());
            }
        }
        let prev_tmp = self.dir.join(PREV_TMP);
        let _ = fs::remove_file(&prev_tmp);
        fs::hard_link(path, &prev_tmp).map_err(io(&prev_tmp))?;
        let prev = self.previous_path();
        fs::rename(&prev_tmp, &prev).map_err(io(&prev))
    }
}

/// Whether the state file at `path` exists and is good. A file with a
/// digest was validated when it was written, so an unchanged digest proves
/// it good without parsing every rule again, which on each change of a
/// 10,000-rule set would cost a full parse and its allocations; a file
/// without one is read in full.
fn intact(path: &Path) -> Result<bool, StoreError> {
    let Some(bytes) = read_bytes(path)? else { return Ok(false) };
    match std::str::from_utf8(&bytes).ok().map(|text| digested(path, text)) {
        Some(Ok(Some(_))) => Ok(true),
        Some(Err(e)) => Err(e),
        _ => read_verified(path).map(|c| c.is_some()),
    }
}

/// Brings a stored document of schema `from` up to the current schema. Each
/// version's step lives here; version 1 is the first, so there is nothing to
/// convert yet, but a file without the fields later versions add still loads
/// because every added field has a default.
fn upgrade(mut value: serde_json::Value, from: u32) -> Result<serde_json::Value, UpgradeError> {
    if from == 0 {
        return Err(UpgradeError::NoSuchVersion(from));
    }
    value["schema_version"] = SCHEMA_VERSION.into();
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("overlayd-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn config(generation: u64) -> Config {
        let mut c = Config::from_toml(
            "[[ports]]\nname = \"wl0\"\nkind = \"workload\"\n[[rules]]\nid = 1\nactions = [\"drop\"]\n",
        )
        .unwrap();
        c.generation = generation;
        c
    }

    #[test]
    fn save_then_load_and_modes() {
        let d = dir("roundtrip");
        let s = Store::open(&d).unwrap();
        assert_eq!(s.load().unwrap(), None);
        s.save(&config(7)).unwrap();
        s.save(&config(8)).unwrap();
        assert_eq!(Store::open(&d).unwrap().load().unwrap(), Some(config(8)));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(s.path()).unwrap().permissions().mode() & 0o777, 0o600);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_save_interrupted_before_its_rename_changes_nothing() {
        let d = dir("torn");
        let s = Store::open(&d).unwrap();
        s.save(&config(3)).unwrap();
        // What a crash in the middle of the next save leaves behind.
        fs::write(d.join(TMP), b"{\"schema_version\": 1, \"generation\": 4, \"por").unwrap();
        let s = Store::open(&d).unwrap();
        assert!(!d.join(TMP).exists(), "the leftover is cleaned up");
        assert_eq!(s.load().unwrap(), Some(config(3)));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_one_bit_change_that_stays_valid_json_is_refused() {
        let d = dir("bitflip");
        let s = Store::open(&d).unwrap();
        let mut c = config(3);
        c.rules[0].priority = 100;
        s.save(&c).unwrap();
        let text = fs::read_to_string(s.path()).unwrap();
        assert!(text.contains("\"priority\":100"), "{text}");
        // 100 -> 101 is one bit ('0' 0x30 -> '1' 0x31).
        fs::write(s.path(), text.replacen("\"priority\":100", "\"priority\":101", 1)).unwrap();
        let e = s.load().unwrap_err();
        assert!(matches!(e, StoreError::Digest { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("state.json") && msg.contains("does not match its SHA-256 digest"),
            "{msg}"
        );
        assert!(msg.contains("--restore-previous") && msg.contains("--start-empty"), "{msg}");
        // So is a damaged digest line, or a truncated file.
        fs::write(s.path(), text.replace("sha256:", "sha256:0")).unwrap();
        assert!(matches!(s.load().unwrap_err(), StoreError::Digest { .. }));
        fs::write(s.path(), &text[..text.len() - 20]).unwrap();
        assert!(s.load().is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_previous_good_state_restores() {
        let d = dir("previous");
        let s = Store::open(&d).unwrap();
        s.save(&config(3)).unwrap();
        assert_eq!(s.load_previous().unwrap(), None, "nothing before the first state");
        s.save(&config(4)).unwrap();
        assert_eq!(s.load_previous().unwrap(), Some(config(3)));
        // The current file is damaged: it is not kept as the previous state
        // by the next save, and restoring brings back generation 4's parent.
        fs::write(s.path(), b"{\"schema_version\": 1, \"generation\": 4}\nsha256:00\n").unwrap();
        assert!(s.load().is_err());
        let aside = s.recover(Recovery::RestorePrevious).unwrap().expect("the refused file kept");
        assert!(fs::read_to_string(&aside).unwrap().contains("sha256:00"));
        assert_eq!(s.load().unwrap(), Some(config(3)));
        // Starting empty sets everything aside.
        let aside = s.recover(Recovery::StartEmpty).unwrap().unwrap();
        assert!(aside.exists());
        assert_eq!((s.load().unwrap(), s.load_previous().unwrap()), (None, None));
        let e = s.recover(Recovery::RestorePrevious).unwrap_err();
        assert!(matches!(e, StoreError::NoPrevious { .. }), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_crash_between_the_writes_of_a_save_loses_no_accepted_state() {
        let d = dir("crash");
        let s = Store::open(&d).unwrap();
        s.save(&config(3)).unwrap();
        s.save(&config(4)).unwrap();
        // What each step of saving generation 5 leaves if the daemon dies
        // right after it: the temporary file, then the previous state's
        // link, then its rename. Generation 4 was the last acknowledged.
        let next = encode(&config(5));
        fs::write(d.join(TMP), &next).unwrap();
        assert_eq!(Store::open(&d).unwrap().load().unwrap(), Some(config(4)));
        fs::write(d.join(TMP), &next).unwrap();
        fs::hard_link(s.path(), d.join(PREV_TMP)).unwrap();
        let s = Store::open(&d).unwrap();
        assert!(!d.join(TMP).exists() && !d.join(PREV_TMP).exists(), "leftovers removed");
        assert_eq!(s.load().unwrap(), Some(config(4)));
        assert_eq!(s.load_previous().unwrap(), Some(config(3)));
        fs::write(d.join(TMP), &next).unwrap();
        fs::hard_link(s.path(), d.join(PREV_TMP)).unwrap();
        fs::rename(d.join(PREV_TMP), s.previous_path()).unwrap();
        let s = Store::open(&d).unwrap();
        assert_eq!(s.load().unwrap(), Some(config(4)));
        assert_eq!(s.load_previous().unwrap(), Some(config(4)));
        // The save then completes on the next change.
        s.save(&config(5)).unwrap();
        assert_eq!(
            (s.load().unwrap(), s.load_previous().unwrap()),
            (Some(config(5)), Some(config(4)))
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_without_a_digest_from_an_older_overlayd_loads() {
        let d = dir("legacy");
        let s = Store::open(&d).unwrap();
        let mut legacy = serde_json::to_vec(&config(6)).unwrap();
        legacy.push(b'\n');
        fs::write(s.path(), legacy).unwrap();
        assert_eq!(s.load().unwrap(), Some(config(6)));
        s.save(&config(7)).unwrap();
        assert!(fs::read_to_string(s.path()).unwrap().contains("\nsha256:"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn newer_schemas_are_refused_and_corruption_is_named() {
        let d = dir("versions");
        let s = Store::open(&d).unwrap();
        fs::write(s.path(), b"{\"schema_version\": 99}").unwrap();
        let e = s.load().unwrap_err();
        assert!(matches!(e, StoreError::TooNew { found: 99, .. }));
        assert!(e.to_string().contains("newer overlayd"), "{e}");
        fs::write(s.path(), b"{\"schema_version\": 1, \"rules\": [{\"id\": 1}]}").unwrap();
        let e = s.load().unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("state.json"), "{e}");
        fs::write(s.path(), b"{\"schema_version\": 0}").unwrap();
        let e = s.load().unwrap_err();
        assert!(matches!(e, StoreError::Upgrade { source: UpgradeError::NoSuchVersion(0), .. }));
        assert!(e.to_string().contains("schema_version 0 does not exist"), "{e}");
        // A minimal version-1 document (every later field defaulted) loads.
        fs::write(s.path(), b"{\"schema_version\": 1, \"generation\": 5}").unwrap();
        assert_eq!(s.load().unwrap().unwrap().generation, 5);
        fs::remove_dir_all(&d).unwrap();
    }
}
