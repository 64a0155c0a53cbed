//! Reading a file as Arrow record batches, one batch at a time: CSV,
//! Parquet and JSON through an in-process DuckDB (its readers, type
//! detection and Arrow export), xlsx through calamine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use arrow::array::TimestampMicrosecondBuilder;
use arrow::array::{ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use calamine::{open_workbook_auto, Data, DataType as _, Reader};

/// Rows per batch read from an xlsx sheet.
const XLSX_BATCH: usize = 64 * 1024;

/// A file and how to read it.
pub enum Source {
    /// A DuckDB table function over the file, e.g. `read_csv('x.csv')`.
    Duck(String),
    Xlsx(PathBuf),
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Source {
    /// Chooses the reader by the file's extension (a `.gz` suffix is
    /// looked through for CSV and JSON).
    pub fn for_path(path: &Path) -> anyhow::Result<Source> {
        if !path.is_file() {
            bail!("{} is not a file", path.display());
        }
        let name = path.to_string_lossy().to_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let p = literal(&path.to_string_lossy());
        Ok(match name.rsplit('.').next().unwrap_or("") {
            "csv" | "tsv" | "txt" => Source::Duck(format!("read_csv({p})")),
            "parquet" | "pq" => Source::Duck(format!("read_parquet({p})")),
            "json" | "ndjson" | "jsonl" => Source::Duck(format!("read_json({p})")),
            "xlsx" | "xlsm" | "xls" | "ods" => Source::Xlsx(path.to_path_buf()),
            other => bail!(
                "cannot tell how to read '.{other}': use .csv, .tsv, .parquet, .json, .ndjson or .xlsx"
            ),
        })
    }

    /// The number of rows (for the progress bar). DuckDB counts Parquet
    /// from its metadata and scans CSV/JSON once, much faster than the
    /// upload itself.
    pub fn count_rows(&self) -> anyhow::Result<u64> {
        match self {
            Source::Duck(f) => {
                let conn = duckdb::Connection::open_in_memory()?;
                let n: i64 =
                    conn.query_row(&format!("SELECT count(*) FROM {f}"), [], |r| r.get(0))?;
                Ok(n as u64)
            }
            Source::Xlsx(path) => Ok(sheet(path)?.height().saturating_sub(1) as u64),
        }
    }

    /// Reads the file, handing each batch to `send` (which returns false
    /// to stop early).
    pub fn read(&self, mut send: impl FnMut(RecordBatch) -> bool) -> anyhow::Result<()> {
        match self {
            Source::Duck(f) => {
                let conn = duckdb::Connection::open_in_memory()?;
                let mut stmt = conn.prepare(&format!("SELECT * FROM {f}"))?;
                for batch in stmt.stream_arrow([])? {
                    let batch = batch?;
                    if batch.num_rows() > 0 && !send(batch) {
                        break;
                    }
                }
                Ok(())
            }
            Source::Xlsx(path) => read_xlsx(path, send),
        }
    }
}

fn sheet(path: &Path) -> anyhow::Result<calamine::Range<Data>> {
    let mut wb = open_workbook_auto(path).with_context(|| format!("opening {}", path.display()))?;
    wb.worksheet_range_at(0)
        .context("the workbook has no sheet")?
        .with_context(|| format!("reading the first sheet of {}", path.display()))
}

/// The Arrow type of a column: the narrowest of BIGINT, DOUBLE, BOOLEAN,
/// TIMESTAMP that holds every non-empty cell, else text.
fn column_type<'a>(cells: impl Iterator<Item = &'a Data>) -> DataType {
    let (mut int, mut float, mut boolean, mut time, mut any) = (true, true, true, true, false);
    for c in cells {
        match c {
            Data::Empty => continue,
            Data::Int(_) => (boolean, time) = (false, false),
            Data::Float(f) => {
                (boolean, time) = (false, false);
                int &= f.fract() == 0.0 && f.abs() < 9.0e15;
            }
            Data::Bool(_) => (int, float, time) = (false, false, false),
            Data::DateTime(_) | Data::DateTimeIso(_) => {
                (int, float, boolean) = (false, false, false)
            }
            _ => (int, float, boolean, time) = (false, false, false, false),
        }
        any = true;
    }
    match (any, int, float, boolean, time) {
        (false, ..) => DataType::Utf8,
        (_, true, ..) => DataType::Int64,
        (_, _, true, ..) => DataType::Float64,
        (_, _, _, true, _) => DataType::Boolean,
        (_, _, _, _, true) => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => DataType::Utf8,
    }
}

fn column(rows: &[&[Data]], i: usize, t: &DataType) -> ArrayRef {
    let cell = |r: &&[Data]| r.get(i).unwrap_or(&Data::Empty).clone();
    match t {
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            for c in rows.iter().map(cell) {
                b.append_option(match c {
                    Data::Int(v) => Some(v),
                    Data::Float(f) => Some(f as i64),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::new();
            for c in rows.iter().map(cell) {
                b.append_option(c.as_f64());
            }
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            for c in rows.iter().map(cell) {
                b.append_option(c.get_bool());
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(..) => {
            let mut b = TimestampMicrosecondBuilder::new();
            for c in rows.iter().map(cell) {
                b.append_option(c.as_datetime().map(|d| d.and_utc().timestamp_micros()));
            }
            Arc::new(b.finish())
        }
        _ => {
            let mut b = StringBuilder::new();
            for c in rows.iter().map(cell) {
                match c {
                    Data::Empty => b.append_null(),
                    Data::String(s) => b.append_value(s),
                    other => b.append_value(other.to_string()),
                }
            }
            Arc::new(b.finish())
        }
    }
}

/// The first sheet: its first row names the columns.
fn read_xlsx(path: &Path, mut send: impl FnMut(RecordBatch) -> bool) -> anyhow::Result<()> {
    let range = sheet(path)?;
    let mut rows = range.rows();
    let Some(header) = rows.next() else {
        bail!("the first sheet of {} is empty", path.display());
    };
    let names: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, c)| match c {
            Data::Empty => format!("column{}", i + 1),
            c => c.to_string(),
        })
        .collect();
    let body: Vec<&[Data]> = rows.collect();
    let types: Vec<DataType> = (0..names.len())
        .map(|i| column_type(body.iter().filter_map(|r| r.get(i))))
        .collect();
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .zip(&types)
            .map(|(n, t)| Field::new(n, t.clone(), true))
            .collect::<Vec<_>>(),
    ));
    for part in body.chunks(XLSX_BATCH) {
        let cols = types
            .iter()
            .enumerate()
            .map(|(i, t)| column(part, i, t))
            .collect();
        if !send(RecordBatch::try_new(Arc::clone(&schema), cols)?) {
            break;
        }
    }
    Ok(())
}
