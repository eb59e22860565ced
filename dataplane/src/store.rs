//! Accepted state on disk: the configuration document the daemon last
//! acknowledged, so a restart (or a `kill -9` at any moment) loses no accepted
//! change and never finds a torn file.
//!
//! A save writes a temporary file in the same directory, fsyncs it, renames it
//! over `state.json` (atomic on POSIX file systems) and fsyncs the directory so
//! the rename itself is durable. A crash before the rename leaves the old state;
//! after it, the new one. A leftover temporary file is ignored and removed.
//!
//! The stored document carries a schema version: older versions are upgraded
//! on load, newer ones are refused with a message saying so.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use engine::model::{Config, SCHEMA_VERSION};

const STATE: &str = "state.json";
const TMP: &str = "state.json.tmp";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid state file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path}: written by a newer overlayd (schema version {found}); this build reads versions 1..={supported}"
    )]
    TooNew { path: PathBuf, found: u32, supported: u32 },
    #[error("{path}: not a valid state file: {source}")]
    Upgrade { path: PathBuf, source: UpgradeError },
}

/// A stored document that cannot be brought up to the current schema.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("schema_version {0} does not exist")]
    NoSuchVersion(u32),
}

/// The state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

impl Store {
    /// Opens (creating, mode 0700) a state directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let dir = dir.into();
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io(&dir))?;
        let tmp = dir.join(TMP);
        if tmp.exists() {
            // A save that crashed before its rename: the state it meant to
            // replace is still the accepted one.
            fs::remove_file(&tmp).map_err(io(&tmp))?;
        }
        Ok(Store { dir })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE)
    }

    /// The last saved configuration, or `None` for a new directory.
    pub fn load(&self) -> Result<Option<Config>, StoreError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let corrupt = |reason: String| StoreError::Corrupt { path: path.clone(), reason };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        let found = value
            .get("schema_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt("no schema_version".into()))? as u32;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew { path, found, supported: SCHEMA_VERSION });
        }
        let value = upgrade(value, found)
            .map_err(|source| StoreError::Upgrade { path: path.clone(), source })?;
        let config: Config = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        config.validate().map_err(|e| corrupt(e.to_string()))?;
        Ok(Some(config))
    }

    /// Saves `config` durably; when this returns `Ok`, a crash at any later
    /// moment still finds exactly this configuration on the next load.
    pub fn save(&self, config: &Config) -> Result<(), StoreError> {
        let tmp = self.dir.join(TMP);
        // Compact: the file is machine state (operators read it with `overlayctl config get`).
        let mut doc = serde_json::to_vec(config).expect("a Config always serialises");
        doc.push(b'\n');
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
        fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        Ok(())
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
