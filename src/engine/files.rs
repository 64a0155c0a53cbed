//! Files in place: the directories SQL may read (`--files-dir`), enforced by
//! DuckDB itself on every node file, and the listing clients use to find
//! what is there.
//!
//! DuckDB checks every file a query opens with `allowed_directories` once
//! `enable_external_access` is off, and `lock_configuration` keeps SQL from
//! undoing either. The check canonicalizes the path with `realpath`, so `..`
//! and symlinks that lead out of a files dir are refused. It resolves a
//! relative path against the process's working directory, not against
//! `file_search_path` (which DuckDB only uses to open it): the server
//! therefore runs with the first files dir as its working directory and
//! sets `file_search_path` to the same directory, so that a relative name
//! is checked and opened as the same file.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use super::error::{EngineError, EngineResult};

/// Most entries one listing walks (a files dir holding a data lake must not
/// make the server build an unbounded answer).
const MAX_LISTED: usize = 100_000;
/// Deepest folder level a listing descends to.
const MAX_DEPTH: usize = 32;

/// The readable directories, canonical (absolute, symlinks resolved).
#[derive(Debug, Clone)]
pub struct FileAccess {
    dirs: Vec<PathBuf>,
    /// Where exports are written (never inside a files dir).
    export_dir: PathBuf,
}

/// One file under a files dir.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FileEntry {
    /// What to write in SQL: relative to the first files dir for files
    /// under it, absolute for the others.
    pub name: String,
    /// The absolute path.
    pub path: String,
    pub size: u64,
    /// Last modification, RFC 3339 (UTC).
    pub modified: Option<String>,
    /// Guessed from the extension: csv, parquet, json, xlsx, xls, ods, text.
    pub format: Option<&'static str>,
}

impl FileAccess {
    /// Creates the directories that are missing and resolves them. A files
    /// dir may not hold the data dir (SQL would read node files and spill
    /// files directly), and the export dir may not lie inside a files dir
    /// (exports are written, files dirs are only read).
    pub fn prepare(
        files_dirs: &[PathBuf],
        data_dir: &Path,
        export_dir: &Path,
    ) -> EngineResult<FileAccess> {
        if files_dirs.is_empty() {
            return Err(EngineError::invalid("at least one --files-dir is needed"));
        }
        let data = canonical_dir(data_dir)?;
        let export = canonical_dir(export_dir)?;
        let mut dirs: Vec<PathBuf> = Vec::new();
        for d in files_dirs {
            let c = canonical_dir(d)?;
            let text = c.to_string_lossy();
            // DuckDB reads the list setting as a SQL list literal.
            if text.contains(['\'', '\\', '\0']) {
                return Err(EngineError::invalid(format!(
                    "--files-dir {}: a path with quotes or backslashes is not supported",
                    c.display()
                )));
            }
            if data.starts_with(&c) {
                return Err(EngineError::invalid(format!(
                    "--files-dir {} holds the data dir {}: SQL could read the node files; \
                     give a directory beside it",
                    c.display(),
                    data.display()
                )));
            }
            if export.starts_with(&c) {
                return Err(EngineError::invalid(format!(
                    "--export-dir {} lies inside --files-dir {}: exports may not be written \
                     where files are read",
                    export.display(),
                    c.display()
                )));
            }
            if !dirs.contains(&c) {
                dirs.push(c);
            }
        }
        Ok(FileAccess {
            dirs,
            export_dir: export,
        })
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    pub fn export_dir(&self) -> &Path {
        &self.export_dir
    }

    /// Where relative paths in SQL resolve.
    pub fn first(&self) -> &Path {
        &self.dirs[0]
    }

    /// Makes the first files dir the working directory (see the module
    /// comment). Every other path the server uses must be absolute by now.
    pub fn enter(&self) -> EngineResult<()> {
        std::env::set_current_dir(self.first()).map_err(|e| {
            EngineError::internal(format!("cannot enter {}: {e}", self.first().display()))
        })
    }

    /// DuckDB's `allowed_directories` value: a list literal.
    pub fn allowed_directories(&self) -> String {
        let items: Vec<String> = self
            .dirs
            .iter()
            .map(|d| format!("'{}/'", d.to_string_lossy().trim_end_matches('/')))
            .collect();
        format!("[{}]", items.join(", "))
    }

    /// Every file under the files dirs (symlinks followed only where they
    /// stay inside one), by name.
    pub fn list(&self) -> EngineResult<Vec<FileEntry>> {
        let mut out = Vec::new();
        for (i, dir) in self.dirs.iter().enumerate() {
            self.walk(dir, dir, i == 0, 0, &mut out);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn walk(
        &self,
        root: &Path,
        dir: &Path,
        relative: bool,
        depth: usize,
        out: &mut Vec<FileEntry>,
    ) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            // A folder removed or unreadable while listing is left out.
            Err(_) => return,
        };
        for entry in entries.flatten() {
            if out.len() >= MAX_LISTED {
                return;
            }
            let path = entry.path();
            let Ok(real) = std::fs::canonicalize(&path) else {
                continue; // dangling symlink
            };
            if !self.dirs.iter().any(|d| real.starts_with(d)) {
                continue; // a symlink leading out: DuckDB refuses it too
            }
            let Ok(meta) = std::fs::metadata(&real) else {
                continue;
            };
            if meta.is_dir() {
                // A symlink back up would loop: only descend into real
                // subfolders.
                if depth < MAX_DEPTH && real.starts_with(&path) {
                    self.walk(root, &path, relative, depth + 1, out);
                }
                continue;
            }
            let name = if relative {
                path.strip_prefix(root)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| path.to_string_lossy().into_owned())
            } else {
                path.to_string_lossy().into_owned()
            };
            out.push(FileEntry {
                format: guess_format(&name),
                name,
                path: path.to_string_lossy().into_owned(),
                size: meta.len(),
                modified: meta.modified().ok().map(rfc3339),
            });
        }
    }
}

/// The plain files directly in `dir` (the export dir), by name; hidden
/// ones (exports being written) left out.
pub fn list_flat(dir: &Path) -> EngineResult<Vec<FileEntry>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| EngineError::internal(format!("cannot list {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for entry in entries.flatten().take(MAX_LISTED) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        if name.starts_with('.') || !meta.is_file() {
            continue;
        }
        out.push(FileEntry {
            format: guess_format(&name),
            path: entry.path().to_string_lossy().into_owned(),
            name,
            size: meta.len(),
            modified: meta.modified().ok().map(rfc3339),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn canonical_dir(d: &Path) -> EngineResult<PathBuf> {
    std::fs::create_dir_all(d)
        .map_err(|e| EngineError::invalid(format!("cannot create {}: {e}", d.display())))?;
    std::fs::canonicalize(d)
        .map_err(|e| EngineError::invalid(format!("cannot resolve {}: {e}", d.display())))
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The format DuckDB's readers would take a file for, from its name
/// (compression suffixes looked through).
pub fn guess_format(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let base = ["gz", "zst", "gzip", "zstd"]
        .iter()
        .find_map(|c| lower.strip_suffix(&format!(".{c}")))
        .unwrap_or(&lower);
    let ext = Path::new(base).extension()?.to_str()?;
    Some(match ext {
        "csv" | "tsv" | "tab" => "csv",
        "parquet" | "pq" => "parquet",
        "json" | "ndjson" | "jsonl" => "json",
        "xlsx" | "xlsm" => "xlsx",
        "xls" => "xls",
        "ods" => "ods",
        "txt" | "text" | "log" | "md" => "text",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names() {
        assert_eq!(guess_format("sales.csv"), Some("csv"));
        assert_eq!(guess_format("a/b/Orders.PARQUET"), Some("parquet"));
        assert_eq!(guess_format("events.ndjson.gz"), Some("json"));
        assert_eq!(guess_format("book.xlsx"), Some("xlsx"));
        assert_eq!(guess_format("notes"), None);
        assert_eq!(guess_format("x.db"), None);
    }

    #[test]
    fn listing_stays_inside_and_layout_is_checked() {
        let root = tempfile::tempdir().unwrap();
        let files = root.path().join("files");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(files.join("hive/year=2024")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(files.join("a.csv"), "x\n1\n").unwrap();
        std::fs::write(files.join("hive/year=2024/p.parquet"), "PAR1").unwrap();
        std::fs::write(outside.join("secret.csv"), "s\n").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.csv"), files.join("out.csv")).unwrap();
        std::os::unix::fs::symlink(&files, files.join("loop")).unwrap();
        let data = root.path().join("data");
        let fa = FileAccess::prepare(std::slice::from_ref(&files), &data, &data.join("exports"))
            .unwrap();
        let names: Vec<String> = fa.list().unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["a.csv", "hive/year=2024/p.parquet"]);
        assert!(fa.allowed_directories().starts_with("['/"));
        // A files dir holding the data dir, an export dir inside a files dir.
        assert!(FileAccess::prepare(&[root.path().into()], &data, &outside).is_err());
        assert!(
            FileAccess::prepare(std::slice::from_ref(&files), &data, &files.join("ex")).is_err()
        );
    }
}
