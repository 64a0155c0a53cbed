//! Arrow record batches into DuckDB tables. DuckDB converts the Arrow
//! schema and arrays itself (`duckdb_schema_from_arrow`,
//! `duckdb_data_chunk_from_arrow`: the path of DuckDB's own ADBC ingest),
//! and the chunks go into a *query* appender that runs an `INSERT … SELECT`
//! over them, so the table's triggers (change capture) fire as for any
//! INSERT. The upload is never copied into Rust-side rows.

use std::ffi::CString;
use std::ptr;

use arrow::array::{Array, StructArray};
use arrow::datatypes::Schema;
use arrow::ffi::{to_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow::record_batch::RecordBatch;
use duckdb::ffi;

use super::appender::{Appender, Chunk};
use super::database::{Conn, Database};
use super::error::{DuckError, DuckErrorKind, DuckResult};
use super::result::error_data;

/// Rows per DuckDB chunk (DuckDB's vector size).
pub const CHUNK_ROWS: usize = 2048;

fn internal(what: &str, e: impl std::fmt::Display) -> DuckError {
    DuckError::new(DuckErrorKind::InvalidInput, format!("{what}: {e}"))
}

fn ffi_schema(schema: &Schema) -> DuckResult<FFI_ArrowSchema> {
    FFI_ArrowSchema::try_from(schema).map_err(|e| internal("Arrow schema", e))
}

/// An Arrow schema as DuckDB converted it, for turning batches into chunks.
pub struct ArrowInput {
    raw: ffi::duckdb_arrow_converted_schema,
    /// The column types DuckDB converted: every batch must have exactly
    /// these (DuckDB reads the Arrow buffers by them).
    types: Vec<arrow::datatypes::DataType>,
}

impl Drop for ArrowInput {
    fn drop(&mut self) {
        if !self.raw.is_null() {
            // SAFETY: created by duckdb_schema_from_arrow, destroyed once.
            unsafe { ffi::duckdb_destroy_arrow_converted_schema(&mut self.raw) };
        }
    }
}

impl ArrowInput {
    pub fn new(conn: &Conn, schema: &Schema) -> DuckResult<ArrowInput> {
        let mut s = ffi_schema(schema)?;
        let mut out = ArrowInput {
            raw: ptr::null_mut(),
            types: schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
        };
        // SAFETY: live connection; the schema stays ours (released on drop
        // of `s`); out-pointer.
        let err = unsafe {
            ffi::duckdb_schema_from_arrow(
                conn.raw(),
                &mut s as *mut FFI_ArrowSchema as *mut ffi::ArrowSchema,
                &mut out.raw,
            )
        };
        error_data(err)?;
        Ok(out)
    }

    /// Converts a batch of at most [`CHUNK_ROWS`] rows into a DuckDB chunk
    /// (which takes ownership of the Arrow buffers, no copy).
    pub fn chunk(&self, conn: &Conn, batch: &RecordBatch) -> DuckResult<Chunk> {
        let schema = batch.schema();
        let types = schema.fields().iter().map(|f| f.data_type());
        if batch.num_columns() != self.types.len() || !types.eq(self.types.iter()) {
            return Err(DuckError::new(
                DuckErrorKind::InvalidInput,
                format!(
                    "Invalid Input Error: a batch's schema ({}) differs from the upload's first one",
                    batch.schema()
                ),
            ));
        }
        let data = StructArray::from(batch.clone()).into_data();
        let (mut array, _schema) = to_ffi(&data).map_err(|e| internal("Arrow batch", e))?;
        let mut raw: ffi::duckdb_data_chunk = ptr::null_mut();
        // SAFETY: live connection and converted schema; DuckDB moves the
        // array out (sets its release to NULL), so dropping `array` after a
        // successful call releases nothing twice.
        let err = unsafe {
            ffi::duckdb_data_chunk_from_arrow(
                conn.raw(),
                &mut array as *mut FFI_ArrowArray as *mut ffi::ArrowArray,
                self.raw,
                &mut raw,
            )
        };
        let chunk = (!raw.is_null()).then(|| Chunk::from_raw(raw));
        error_data(err)?;
        chunk.ok_or_else(|| internal("Arrow batch", "DuckDB returned no chunk"))
    }
}

/// The SQL type DuckDB gives each column of `schema` (what a table created
/// from an upload with this schema gets), from DuckDB's own Arrow scan. The
/// scan is registered as a view, which DuckDB cannot write to a WAL, so it
/// runs in a throwaway in-memory database.
pub fn sql_types(schema: &Schema) -> DuckResult<Vec<(String, String)>> {
    let db = Database::scratch()?;
    let conn = db.connect()?;
    let conn = &conn;
    let empty = RecordBatch::new_empty(std::sync::Arc::new(schema.clone()));
    let data = StructArray::from(empty).into_data();
    let (mut array, mut s) = to_ffi(&data).map_err(|e| internal("Arrow schema", e))?;
    let view = format!("__df_arrow_{}", uuid::Uuid::new_v4().simple());
    let name = CString::new(view.clone()).map_err(|e| internal("view", e))?;
    let mut stream: ffi::duckdb_arrow_stream = ptr::null_mut();
    // SAFETY: live connection; schema and array outlive the view (dropped
    // below, after the stream is destroyed and the view dropped).
    let state = unsafe {
        ffi::duckdb_arrow_array_scan(
            conn.raw(),
            name.as_ptr(),
            &mut s as *mut FFI_ArrowSchema as ffi::duckdb_arrow_schema,
            &mut array as *mut FFI_ArrowArray as ffi::duckdb_arrow_array,
            &mut stream,
        )
    };
    let out = if state == ffi::DuckDBSuccess {
        describe(conn, &view)
    } else {
        Err(DuckError::new(
            DuckErrorKind::InvalidInput,
            "DuckDB cannot read this Arrow schema",
        ))
    };
    let _ = conn.execute_batch(&format!("DROP VIEW IF EXISTS \"{view}\""));
    if !stream.is_null() {
        // SAFETY: created above, destroyed once.
        unsafe { ffi::duckdb_destroy_arrow_stream(&mut stream) };
    }
    drop(array);
    drop(s);
    out
}

fn describe(conn: &Conn, view: &str) -> DuckResult<Vec<(String, String)>> {
    let mut res = conn.query(&format!(
        "SELECT column_name, column_type FROM (DESCRIBE \"{view}\")"
    ))?;
    let mut out = Vec::new();
    while let Some(b) = res.next_batch()? {
        let (names, types) = (b.column(0), b.column(1));
        let (names, types) = (
            arrow::array::cast::as_string_array(names.as_ref()),
            arrow::array::cast::as_string_array(types.as_ref()),
        );
        for i in 0..b.num_rows() {
            if names.is_valid(i) && types.is_valid(i) {
                out.push((names.value(i).to_string(), types.value(i).to_string()));
            }
        }
    }
    Ok(out)
}

/// Appends Arrow batches to `schema.table` through `INSERT INTO … BY NAME
/// SELECT * FROM appended_data`: columns match by name, columns the upload
/// lacks get their defaults, and the table's triggers fire.
pub struct ArrowInserter<'c> {
    conn: &'c Conn,
    input: ArrowInput,
    names: Vec<String>,
    query: String,
    app: Option<Appender<'c>>,
    rows: u64,
}

impl<'c> ArrowInserter<'c> {
    pub fn new(conn: &'c Conn, target: &str, schema: &Schema) -> DuckResult<ArrowInserter<'c>> {
        Ok(ArrowInserter {
            conn,
            input: ArrowInput::new(conn, schema)?,
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            query: format!("INSERT INTO {target} BY NAME SELECT * FROM appended_data"),
            app: None,
            rows: 0,
        })
    }

    /// Appends a batch (any size; split into DuckDB chunks).
    pub fn append(&mut self, batch: &RecordBatch) -> DuckResult<()> {
        let mut off = 0;
        while off < batch.num_rows() {
            let len = CHUNK_ROWS.min(batch.num_rows() - off);
            let chunk = self.input.chunk(self.conn, &batch.slice(off, len))?;
            if self.app.is_none() {
                self.app = Some(Appender::for_query(
                    self.conn,
                    &self.query,
                    &chunk,
                    &self.names,
                )?);
            }
            if let Some(app) = self.app.as_mut() {
                app.append(&chunk)?;
            }
            self.rows += len as u64;
            off += len;
        }
        Ok(())
    }

    /// Runs the INSERT over the rows appended since the last flush.
    pub fn flush(&mut self) -> DuckResult<()> {
        match self.app.as_mut() {
            Some(app) => app.flush(),
            None => Ok(()),
        }
    }

    /// Rows appended so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}
