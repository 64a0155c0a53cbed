//! Replicas written without fsync, and how a torn one is recognised.
//!
//! A replica need not fsync its commits (`--replica-fsync` off): durability
//! is the primary's, and a replica is rebuilt from the primary. A kill of
//! the server loses nothing the replica wrote (the operating system still
//! holds the pages and writes them out); only an operating-system crash or
//! a power cut can, and either boots the machine anew. So before a replica
//! is opened without fsync, a mark beside it (`node_K.db.unsynced`, fsynced
//! with its directory) records the boot id; a replica whose mark names
//! another boot may be torn and is rebuilt before it serves. A replica
//! closed cleanly is fsynced and its mark removed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{EngineError, EngineResult};

/// The boot id Linux gives each boot; empty where there is none (then every
/// marked replica counts as possibly torn).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn mark_path(db: &Path) -> PathBuf {
    sibling(db, ".unsynced")
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn io(what: &Path) -> impl Fn(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::internal(format!("{}: {e}", what.display()))
}

fn sync_dir(of: &Path) -> EngineResult<()> {
    let dir = of.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Why the replica file `db` cannot be trusted, if it was written without
/// fsync during another boot than this one.
pub(super) fn torn(db: &Path) -> Option<String> {
    let path = mark_path(db);
    let marked = match std::fs::read_to_string(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("its mark {} cannot be read: {e}", path.display())),
    };
    let now = boot_id();
    if !now.is_empty() && marked.trim() == now {
        return None;
    }
    Some(format!(
        "the replica was written without fsync and the machine restarted since \
         (boot {} then, {} now): it may be torn",
        marked.trim(),
        if now.is_empty() { "unknown" } else { &now }
    ))
}

/// Records, durably, that `db` is about to be written without fsync in this
/// boot.
pub(super) fn mark(db: &Path) -> EngineResult<()> {
    let path = mark_path(db);
    let now = boot_id();
    if std::fs::read_to_string(&path).is_ok_and(|m| !now.is_empty() && m.trim() == now) {
        return Ok(());
    }
    let mut f = File::create(&path).map_err(io(&path))?;
    f.write_all(now.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(&path))?;
    sync_dir(&path)
}

/// Makes what `db` (and its WAL) hold durable, then forgets its mark. For a
/// file that is closed, or about to be opened with fsync.
pub(super) fn clear(db: &Path) -> EngineResult<()> {
    let path = mark_path(db);
    if !path.exists() {
        return Ok(());
    }
    for f in [db.to_path_buf(), sibling(db, ".wal")] {
        match File::open(&f) {
            Ok(h) => h.sync_all().map_err(io(&f))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&f)(e)),
        }
    }
    std::fs::remove_file(&path).map_err(io(&path))?;
    sync_dir(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_of_another_boot_means_torn() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("node_1.db");
        std::fs::write(&db, b"x").unwrap();
        assert_eq!(torn(&db), None, "no mark: written with fsync");
        mark(&db).unwrap();
        assert_eq!(torn(&db), None, "marked in this boot");
        std::fs::write(mark_path(&db), b"another-boot").unwrap();
        let why = torn(&db).unwrap();
        assert!(why.contains("another-boot"), "{why}");
        clear(&db).unwrap();
        assert!(!mark_path(&db).exists());
        assert_eq!(torn(&db), None);
    }
}
