//! Query results, stepped chunk by chunk into Arrow record batches.

use std::ffi::CString;
use std::ptr;
use std::sync::Arc;

use arrow::array::{Array, StructArray};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow::record_batch::RecordBatch;
use duckdb::ffi;

use super::cstr_to_string;
use super::database::Conn;
use super::error::{DuckError, DuckErrorKind, DuckResult};

/// Arrow conversion options of a connection (DuckDB settings such as
/// `arrow_lossless_conversion` decide how UUID, HUGEINT, ... are exported).
struct ArrowOptions(ffi::duckdb_arrow_options);

impl ArrowOptions {
    fn of(conn: &Conn) -> Self {
        let mut raw: ffi::duckdb_arrow_options = ptr::null_mut();
        // SAFETY: live connection; destroyed in Drop.
        unsafe { ffi::duckdb_connection_get_arrow_options(conn.raw(), &mut raw) };
        ArrowOptions(raw)
    }
}

impl Drop for ArrowOptions {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by duckdb_connection_get_arrow_options.
            unsafe { ffi::duckdb_destroy_arrow_options(&mut self.0) };
        }
    }
}

pub(super) fn error_data(mut e: ffi::duckdb_error_data) -> DuckResult<()> {
    if e.is_null() {
        return Ok(());
    }
    // SAFETY: valid error data, destroyed below.
    let res = if unsafe { ffi::duckdb_error_data_has_error(e) } {
        let t = unsafe { ffi::duckdb_error_data_error_type(e) };
        let msg = cstr_to_string(unsafe { ffi::duckdb_error_data_message(e) }).unwrap_or_default();
        Err(DuckError::from_error_type(t, msg))
    } else {
        Ok(())
    };
    unsafe { ffi::duckdb_destroy_error_data(&mut e) };
    res
}

/// Builds the Arrow schema for DuckDB logical types (consumes and destroys
/// the logical types). A NULL logical type (an unresolved parameter) maps to
/// Arrow `Null`.
pub(crate) fn arrow_schema_from_types(
    conn: &Conn,
    names: Vec<String>,
    types: Vec<ffi::duckdb_logical_type>,
) -> DuckResult<SchemaRef> {
    schemas_from_types(conn, &names, types).map(|(_, schema)| schema)
}

/// The FFI (struct-typed) and Arrow schemas for DuckDB logical types;
/// consumes and destroys the logical types.
fn schemas_from_types(
    conn: &Conn,
    names: &[String],
    mut types: Vec<ffi::duckdb_logical_type>,
) -> DuckResult<(FFI_ArrowSchema, SchemaRef)> {
    let ffi_schema = ffi_schema_from_types(conn, names, &mut types);
    for t in types.iter_mut() {
        if !t.is_null() {
            // SAFETY: each logical type was handed to us by DuckDB.
            unsafe { ffi::duckdb_destroy_logical_type(t) };
        }
    }
    let ffi_schema = ffi_schema?;
    let dt = DataType::try_from(&ffi_schema).map_err(|e| {
        DuckError::new(
            DuckErrorKind::Internal,
            format!("Arrow schema from DuckDB: {e}"),
        )
    })?;
    match dt {
        DataType::Struct(fields) => Ok((ffi_schema, Arc::new(Schema::new(fields)))),
        other => Err(DuckError::new(
            DuckErrorKind::Internal,
            format!("unexpected Arrow type {other}"),
        )),
    }
}

/// The struct-typed FFI schema for the given columns; unresolved (NULL)
/// types are exported as Arrow `Null` columns.
fn ffi_schema_from_types(
    conn: &Conn,
    names: &[String],
    types: &mut [ffi::duckdb_logical_type],
) -> DuckResult<FFI_ArrowSchema> {
    // Types DuckDB could not resolve before binding (`SELECT ?`) have no
    // Arrow form; export them as SQLNULL, i.e. Arrow `Null`.
    for t in types.iter_mut() {
        // SAFETY: t is null or a valid logical type owned by the caller.
        let unresolved = t.is_null()
            || matches!(
                unsafe { ffi::duckdb_get_type_id(*t) },
                ffi::DUCKDB_TYPE_DUCKDB_TYPE_INVALID | ffi::DUCKDB_TYPE_DUCKDB_TYPE_ANY
            );
        if unresolved {
            if !t.is_null() {
                unsafe { ffi::duckdb_destroy_logical_type(t) };
            }
            *t = unsafe { ffi::duckdb_create_logical_type(ffi::DUCKDB_TYPE_DUCKDB_TYPE_SQLNULL) };
        }
    }
    let c_names: Vec<CString> = names
        .iter()
        .map(|n| CString::new(n.replace('\0', "")).unwrap_or_default())
        .collect();
    let mut name_ptrs: Vec<*const std::os::raw::c_char> =
        c_names.iter().map(|c| c.as_ptr()).collect();
    let opts = ArrowOptions::of(conn);
    let mut out = FFI_ArrowSchema::empty();
    // SAFETY: arrays of equal length, valid options, out-pointer of C layout.
    let err = unsafe {
        ffi::duckdb_to_arrow_schema(
            opts.0,
            types.as_mut_ptr(),
            name_ptrs.as_mut_ptr(),
            types.len() as u64,
            &mut out as *mut FFI_ArrowSchema as *mut ffi::ArrowSchema,
        )
    };
    error_data(err).map(|_| out)
}

/// The result of an executed statement. Streaming results pull chunks from
/// DuckDB's executor on each [`QueryResult::next_batch`].
pub struct QueryResult<'c> {
    res: Box<ffi::duckdb_result>,
    schema: SchemaRef,
    ffi_schema: FFI_ArrowSchema,
    opts: ArrowOptions,
    _conn: std::marker::PhantomData<&'c Conn>,
}

// SAFETY: the result is used by one thread at a time, together with its
// connection, which the lifetime ties it to.
unsafe impl Send for QueryResult<'_> {}

impl<'c> QueryResult<'c> {
    pub(crate) fn new(
        conn: &'c Conn,
        mut res: Box<ffi::duckdb_result>,
        state: ffi::duckdb_state,
    ) -> DuckResult<Self> {
        if state != ffi::DuckDBSuccess {
            // SAFETY: a failed execution still fills the result with its error.
            let msg = cstr_to_string(unsafe { ffi::duckdb_result_error(&mut *res) })
                .unwrap_or_else(|| "query failed".into());
            let t = unsafe { ffi::duckdb_result_error_type(&mut *res) };
            unsafe { ffi::duckdb_destroy_result(&mut *res) };
            return Err(DuckError::from_error_type(t, msg));
        }
        // SAFETY: successful result; column metadata valid until destroy.
        let n = unsafe { ffi::duckdb_column_count(&mut *res) } as usize;
        let mut names = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        for i in 0..n {
            names.push(
                cstr_to_string(unsafe { ffi::duckdb_column_name(&mut *res, i as u64) })
                    .unwrap_or_default(),
            );
            types.push(unsafe { ffi::duckdb_column_logical_type(&mut *res, i as u64) });
        }
        let built = schemas_from_types(conn, &names, types);
        let (ffi_schema, schema) = match built {
            Ok(v) => v,
            Err(e) => {
                unsafe { ffi::duckdb_destroy_result(&mut *res) };
                return Err(e);
            }
        };
        let opts = ArrowOptions(unsafe { ffi::duckdb_result_get_arrow_options(&mut *res) });
        Ok(QueryResult {
            res,
            schema,
            ffi_schema,
            opts,
            _conn: std::marker::PhantomData,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Rows changed by an INSERT/UPDATE/DELETE (0 otherwise).
    pub fn rows_changed(&mut self) -> u64 {
        // SAFETY: live result.
        unsafe { ffi::duckdb_rows_changed(&mut *self.res) }
    }

    /// The next chunk as a record batch; `Ok(None)` at the end. Errors that
    /// happen during execution (out of memory, conversion, interrupts) are
    /// returned here, never panicked.
    /// The next raw chunk (the caller destroys it); `Ok(None)` at the end.
    pub(crate) fn fetch_raw_chunk(&mut self) -> DuckResult<Option<ffi::duckdb_data_chunk>> {
        // SAFETY: live result.
        let chunk = unsafe { ffi::duckdb_fetch_chunk(*self.res) };
        if chunk.is_null() {
            let msg = cstr_to_string(unsafe { ffi::duckdb_result_error(&mut *self.res) });
            return match msg {
                Some(m) if !m.is_empty() => {
                    let t = unsafe { ffi::duckdb_result_error_type(&mut *self.res) };
                    Err(DuckError::from_error_type(t, m))
                }
                _ => Ok(None),
            };
        }
        Ok(Some(chunk))
    }

    pub fn next_batch(&mut self) -> DuckResult<Option<RecordBatch>> {
        let Some(mut chunk) = self.fetch_raw_chunk()? else {
            return Ok(None);
        };
        let mut array = FFI_ArrowArray::empty();
        // SAFETY: valid chunk and options; out-pointer of C layout.
        let err = unsafe {
            ffi::duckdb_data_chunk_to_arrow(
                self.opts.0,
                chunk,
                &mut array as *mut FFI_ArrowArray as *mut ffi::ArrowArray,
            )
        };
        unsafe { ffi::duckdb_destroy_data_chunk(&mut chunk) };
        error_data(err)?;
        // SAFETY: DuckDB produced the array for exactly this schema.
        let data = unsafe { from_ffi(array, &self.ffi_schema) }
            .map_err(|e| DuckError::new(DuckErrorKind::Internal, format!("Arrow import: {e}")))?;
        let struct_array = StructArray::from(data);
        let (_, columns, nulls) = struct_array.into_parts();
        debug_assert!(nulls.map(|n| n.null_count() == 0).unwrap_or(true));
        let len = columns.first().map(|c| c.len()).unwrap_or(0);
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(len)),
        )
        .map_err(|e| DuckError::new(DuckErrorKind::Internal, format!("Arrow batch: {e}")))?;
        Ok(Some(batch))
    }
}

impl Drop for QueryResult<'_> {
    fn drop(&mut self) {
        // SAFETY: created by duckdb_execute_prepared*; destroyed once.
        unsafe { ffi::duckdb_destroy_result(&mut *self.res) };
    }
}
