//! Exports: a query's result written to a file under `--export-dir`, for
//! results too big to fetch. SQL `COPY … TO` stays refused because DuckDB's
//! `allowed_directories` cannot tell reads from writes (a COPY could
//! overwrite the files users query in place); here the engine streams the
//! query's Arrow batches (read only, on a replica when one is current) into
//! arrow-rs's Parquet, CSV or JSON writer on a blocking thread. The file is
//! written under a hidden temporary name and renamed when complete, so a
//! failed export leaves nothing behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use serde::Serialize;

use super::error::{EngineError, EngineResult, ErrorClass};
use super::files::FileEntry;
use super::{blocking, CallContext, Caller, Engine, Prefer, Role};
use crate::engine::exec::Mode;

/// Longest export name.
const MAX_NAME: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Parquet,
    Csv,
    Json,
}

impl ExportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
        }
    }
}

impl FromStr for ExportFormat {
    type Err = EngineError;
    fn from_str(s: &str) -> EngineResult<Self> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Ok(ExportFormat::Parquet),
            "csv" => Ok(ExportFormat::Csv),
            "json" | "ndjson" => Ok(ExportFormat::Json),
            other => Err(EngineError::invalid(format!(
                "unknown export format '{other}': parquet, csv or json"
            ))),
        }
    }
}

/// A finished export.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub name: String,
    pub path: String,
    pub format: ExportFormat,
    pub rows: u64,
    pub bytes: u64,
    /// The node that ran the query, e.g. `2026-01/node_3`.
    pub node: String,
}

/// The file name an export gets: `name` if it is one plain file name
/// (letters, digits, `.`, `_`, `-`; not hidden), with the format's
/// extension added when missing; a generated one otherwise.
pub fn export_name(name: Option<&str>, format: ExportFormat) -> EngineResult<String> {
    let ext = format.extension();
    let name = match name {
        None | Some("") => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            return Ok(format!(
                "export-{}-{}.{ext}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S"),
                &id[..8]
            ));
        }
        Some(n) => n,
    };
    if !plain_name(name) {
        return Err(EngineError::invalid(format!(
            "export name '{name}' is not a plain file name: use letters, digits, '.', '_' and '-' \
             (at most {MAX_NAME}, not starting with '.'); exports are always written into the \
             export dir"
        )));
    }
    let lower = name.to_ascii_lowercase();
    Ok(if lower.ends_with(&format!(".{ext}")) {
        name.to_string()
    } else {
        format!("{name}.{ext}")
    })
}

/// One plain file name: letters, digits, `.`, `_`, `-`; not hidden; not
/// too long. Such a name cannot leave the export dir.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// One of arrow-rs's writers over a file.
enum Sink {
    Parquet(ArrowWriter<File>),
    Csv(arrow::csv::Writer<BufWriter<File>>),
    Json(arrow::json::LineDelimitedWriter<BufWriter<File>>),
}

impl Sink {
    fn open(path: &Path, format: ExportFormat, schema: &SchemaRef) -> EngineResult<Sink> {
        let file = File::create_new(path)
            .map_err(|e| EngineError::internal(format!("cannot create {}: {e}", path.display())))?;
        Ok(match format {
            ExportFormat::Parquet => {
                Sink::Parquet(ArrowWriter::try_new(file, Arc::clone(schema), None).map_err(bad)?)
            }
            ExportFormat::Csv => Sink::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(BufWriter::new(file)),
            ),
            ExportFormat::Json => {
                Sink::Json(arrow::json::LineDelimitedWriter::new(BufWriter::new(file)))
            }
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> EngineResult<()> {
        match self {
            Sink::Parquet(w) => w.write(batch).map_err(bad),
            Sink::Csv(w) => w.write(batch).map_err(bad),
            Sink::Json(w) => w.write(batch).map_err(bad),
        }
    }

    fn finish(self) -> EngineResult<()> {
        let io = |e: std::io::Error| EngineError::internal(format!("writing the export: {e}"));
        match self {
            Sink::Parquet(w) => w.close().map(|_| ()).map_err(bad),
            Sink::Csv(w) => w.into_inner().flush().map_err(io),
            Sink::Json(mut w) => {
                w.finish().map_err(bad)?;
                w.into_inner().flush().map_err(io)
            }
        }
    }
}

/// A writer's refusal (a type the format cannot hold: a list in CSV, …) or
/// failure.
fn bad(e: impl std::fmt::Display) -> EngineError {
    EngineError::invalid(format!("export: {e}"))
}

/// Writes `batches` to `tmp`, renamed to `dest` when all went well (removed
/// otherwise, a failing query included); the rows and bytes written.
fn write_file(
    tmp: &Path,
    dest: &Path,
    format: ExportFormat,
    schema: &SchemaRef,
    batches: impl Iterator<Item = EngineResult<RecordBatch>>,
) -> EngineResult<(u64, u64)> {
    let mut rows = 0u64;
    let result = (|| {
        let mut sink = Sink::open(tmp, format, schema)?;
        for batch in batches {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            sink.write(&batch)?;
        }
        sink.finish()
    })();
    let done = result.and_then(|()| {
        if dest.exists() {
            return Err(EngineError::new(
                ErrorClass::AlreadyExists,
                format!("{} already exists", dest.display()),
            ));
        }
        std::fs::rename(tmp, dest)
            .map_err(|e| EngineError::internal(format!("cannot rename the export: {e}")))?;
        Ok((rows, std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0)))
    });
    if done.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    done
}

impl Engine {
    /// Runs `query` (a read; on a current replica where there is one) and
    /// writes its result under the export dir as `name`.
    pub async fn export(
        self: &Arc<Self>,
        ctx: &CallContext,
        query: &str,
        format: ExportFormat,
        name: Option<&str>,
    ) -> EngineResult<Exported> {
        ctx.caller.require(Role::Writer, "export")?;
        let name = export_name(name, format)?;
        let dir = self.cfg.files.export_dir().to_path_buf();
        let dest = dir.join(&name);
        if dest.exists() {
            return Err(EngineError::new(
                ErrorClass::AlreadyExists,
                format!("export {name} already exists: choose another name or delete it"),
            ));
        }
        // Its own context: never inside the caller's transaction or session
        // connection, whose writes are not the export's business.
        let ctx = CallContext {
            month: ctx.month.clone(),
            token: ctx.token.clone(),
            caller: ctx.caller.clone(),
            ..CallContext::default()
        };
        let month = self.resolve_month(&ctx)?;
        let turn = self.turn().await?;
        let mut routed = self
            .lease_for(&ctx, month, Some(query), Prefer::Replica)
            .await?;
        // Read only on whichever node answers (a write fails in DuckDB's
        // READ ONLY transaction).
        routed.mode = Mode::ReadOnly;
        let stream = self
            .stream_on(routed, query, Vec::new(), Some(turn), self.deadline(&ctx))
            .await
            .map_err(|e| match e.class {
                ErrorClass::WrongNode => EngineError::invalid(format!(
                    "an export runs one query that only reads: {}",
                    e.message
                )),
                _ => e,
            })?;
        let tmp = dir.join(format!(".{name}.{}.partial", uuid::Uuid::new_v4().simple()));
        // The writer pulls the stream itself on a blocking thread: DuckDB
        // waits on the stream's bounded channel while the file is written.
        let schema = Arc::clone(&stream.schema);
        let (node, head, mut rest) = (stream.node, stream.head, stream.rest);
        let dest2 = dest.clone();
        let (rows, bytes) = blocking(move || {
            let batches = head
                .into_iter()
                .map(Ok)
                .chain(std::iter::from_fn(|| rest.as_mut()?.blocking_recv()));
            write_file(&tmp, &dest2, format, &schema, batches)
        })
        .await?;
        Ok(Exported {
            path: dest.to_string_lossy().into_owned(),
            name,
            format,
            rows,
            bytes,
            node,
        })
    }

    /// The files in the export dir.
    pub async fn list_exports(&self, caller: &Caller) -> EngineResult<Vec<FileEntry>> {
        caller.require(Role::Writer, "list_exports")?;
        let dir = self.cfg.files.export_dir().to_path_buf();
        blocking(move || super::files::list_flat(&dir)).await
    }

    /// The path of export `name` (one that exists).
    pub fn export_path(&self, caller: &Caller, name: &str) -> EngineResult<PathBuf> {
        caller.require(Role::Writer, "reading an export")?;
        let path = self.cfg.files.export_dir().join(name);
        if !plain_name(name) || !path.is_file() {
            return Err(EngineError::not_found(format!("no export named '{name}'")));
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_export_dir() {
        assert_eq!(
            export_name(Some("big"), ExportFormat::Parquet).unwrap(),
            "big.parquet"
        );
        assert_eq!(
            export_name(Some("a.CSV"), ExportFormat::Csv).unwrap(),
            "a.CSV"
        );
        assert!(export_name(None, ExportFormat::Json)
            .unwrap()
            .ends_with(".json"));
        for bad in ["../x", "/etc/x", "a/b", ".hidden", "a b", "x\0y", "..", "é"] {
            assert!(export_name(Some(bad), ExportFormat::Csv).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        use arrow::array::{ArrayRef, Int32Array, ListArray};
        use arrow::datatypes::Int32Type;
        let dir = tempfile::tempdir().unwrap();
        let (tmp, dest) = (dir.path().join(".t.partial"), dir.path().join("t.csv"));
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1)]),
        ]));
        let batch = RecordBatch::try_from_iter([("l", list)]).unwrap();
        let batches = vec![Ok(batch.clone())].into_iter();
        assert!(write_file(&tmp, &dest, ExportFormat::Csv, &batch.schema(), batches).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // And a good one lands under its name.
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![1, 2]));
        let batch = RecordBatch::try_from_iter([("i", ints)]).unwrap();
        let batches = vec![Ok(batch.clone())].into_iter();
        let n = write_file(&tmp, &dest, ExportFormat::Csv, &batch.schema(), batches).unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "i\n1\n2\n");
        assert_eq!(n, (2, 6));
        // A query failing half-way: no file under either name.
        std::fs::remove_file(&dest).unwrap();
        let batches = vec![Ok(batch.clone()), Err(EngineError::invalid("boom"))].into_iter();
        assert!(write_file(&tmp, &dest, ExportFormat::Csv, &batch.schema(), batches).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
