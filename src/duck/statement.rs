//! Prepared statements: DuckDB's statement type, parameter and result
//! schemas, binding and execution.

use std::ptr;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use duckdb::ffi;

use super::cstr_to_string;
use super::database::Conn;
use super::error::{DuckError, DuckResult};
use super::result::{arrow_schema_from_types, QueryResult};

/// What DuckDB's parser says a statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementType {
    Select,
    Insert,
    Update,
    Delete,
    MergeInto,
    Explain,
    Create,
    CreateFunc,
    Alter,
    Drop,
    Transaction,
    Copy,
    CopyDatabase,
    Analyze,
    VariableSet,
    Set,
    Pragma,
    Vacuum,
    Call,
    Load,
    Attach,
    Detach,
    Export,
    Prepare,
    Execute,
    UpdateExtensions,
    /// A statement DuckDB runs as several (e.g. `ALTER TABLE .. ADD COLUMN
    /// .. DEFAULT`): schema changes.
    Multi,
    Other,
}

impl StatementType {
    fn from_raw(t: ffi::duckdb_statement_type) -> Self {
        use StatementType::*;
        match t {
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SELECT => Select,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_INSERT => Insert,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_UPDATE => Update,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DELETE => Delete,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_MERGE_INTO => MergeInto,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPLAIN => Explain,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE => Create,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE_FUNC => CreateFunc,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ALTER => Alter,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DROP => Drop,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_TRANSACTION => Transaction,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_COPY => Copy,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_COPY_DATABASE => CopyDatabase,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ANALYZE => Analyze,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_VARIABLE_SET => VariableSet,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SET => Set,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_PRAGMA => Pragma,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_VACUUM => Vacuum,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CALL => Call,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_LOAD => Load,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ATTACH => Attach,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DETACH => Detach,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPORT => Export,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_PREPARE => Prepare,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXECUTE => Execute,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_UPDATE_EXTENSIONS => UpdateExtensions,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_MULTI => Multi,
            _ => Other,
        }
    }
}

/// A statement prepared on a connection; borrows the connection.
pub struct Prepared<'c> {
    raw: ffi::duckdb_prepared_statement,
    conn: &'c Conn,
    /// Destroyed on drop; false for a statement the connection keeps
    /// ([`Conn::cached`]).
    owned: bool,
}

/// A parameter of one of the server's own statements.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int(i64),
    Text(&'a str),
}

impl<'c> Prepared<'c> {
    pub(crate) fn from_raw(
        conn: &'c Conn,
        raw: ffi::duckdb_prepared_statement,
        state: ffi::duckdb_state,
    ) -> DuckResult<Self> {
        let stmt = Prepared {
            raw,
            conn,
            owned: true,
        };
        if state != ffi::DuckDBSuccess {
            // SAFETY: a failed prepare still returns a statement holding the error.
            let msg = cstr_to_string(unsafe { ffi::duckdb_prepare_error(raw) })
                .unwrap_or_else(|| "could not prepare statement".into());
            return Err(DuckError::from_message(msg));
        }
        Ok(stmt)
    }

    pub(crate) fn raw(&self) -> ffi::duckdb_prepared_statement {
        self.raw
    }

    /// A statement the connection keeps (not destroyed on drop).
    pub(crate) fn kept(conn: &'c Conn, raw: ffi::duckdb_prepared_statement) -> Self {
        Prepared {
            raw,
            conn,
            owned: false,
        }
    }

    /// Hands the statement over to its connection's cache.
    pub(crate) fn keep(mut self) -> ffi::duckdb_prepared_statement {
        self.owned = false;
        self.raw
    }

    /// Binds `params` to `$1`, `$2`, ... (the previous bindings cleared).
    pub fn bind_params(&mut self, params: &[Param<'_>]) -> DuckResult<()> {
        self.clear_bindings();
        for (i, p) in params.iter().enumerate() {
            let idx = i as u64 + 1;
            // SAFETY: valid statement; the text is copied by DuckDB.
            let state = unsafe {
                match p {
                    Param::Int(v) => ffi::duckdb_bind_int64(self.raw, idx, *v),
                    Param::Text(t) => ffi::duckdb_bind_varchar_length(
                        self.raw,
                        idx,
                        t.as_ptr().cast(),
                        t.len() as u64,
                    ),
                }
            };
            if state != ffi::DuckDBSuccess {
                return Err(DuckError::new(
                    super::error::DuckErrorKind::InvalidInput,
                    format!("cannot bind parameter {idx}"),
                ));
            }
        }
        Ok(())
    }

    /// DuckDB's statement type for this statement.
    pub fn statement_type(&self) -> StatementType {
        // SAFETY: valid prepared statement.
        StatementType::from_raw(unsafe { ffi::duckdb_prepared_statement_type(self.raw) })
    }

    /// Number of `?`/`$n` parameters.
    pub fn parameter_count(&self) -> usize {
        // SAFETY: valid prepared statement.
        unsafe { ffi::duckdb_nparams(self.raw) as usize }
    }

    /// The Arrow schema of the result, known before execution.
    pub fn result_schema(&self) -> DuckResult<SchemaRef> {
        // SAFETY: valid prepared statement; logical types destroyed by helper.
        let n = unsafe { ffi::duckdb_prepared_statement_column_count(self.raw) } as usize;
        let mut names = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: i < n; the name is owned by us and freed with duckdb_free.
            let name_ptr =
                unsafe { ffi::duckdb_prepared_statement_column_name(self.raw, i as u64) };
            names.push(cstr_to_string(name_ptr).unwrap_or_default());
            if !name_ptr.is_null() {
                unsafe { ffi::duckdb_free(name_ptr as *mut _) };
            }
            types.push(unsafe {
                ffi::duckdb_prepared_statement_column_logical_type(self.raw, i as u64)
            });
        }
        arrow_schema_from_types(self.conn, names, types)
    }

    /// The Arrow schema of the parameters (types DuckDB inferred; `Null` where
    /// DuckDB could not infer one).
    pub fn parameter_schema(&self) -> DuckResult<SchemaRef> {
        let n = self.parameter_count();
        if n == 0 {
            return Ok(Arc::new(Schema::empty()));
        }
        let mut names = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        for i in 1..=n {
            // SAFETY: 1-based index within range.
            let name_ptr = unsafe { ffi::duckdb_parameter_name(self.raw, i as u64) };
            names.push(cstr_to_string(name_ptr).unwrap_or_else(|| i.to_string()));
            if !name_ptr.is_null() {
                unsafe { ffi::duckdb_free(name_ptr as *mut _) };
            }
            types.push(unsafe { ffi::duckdb_param_logical_type(self.raw, i as u64) });
        }
        arrow_schema_from_types(self.conn, names, types)
    }

    pub fn clear_bindings(&mut self) {
        // SAFETY: valid prepared statement.
        unsafe { ffi::duckdb_clear_bindings(self.raw) };
    }

    /// Executes and returns a result whose chunks are produced lazily by
    /// DuckDB's streaming execution.
    pub fn execute_streaming(&mut self) -> DuckResult<QueryResult<'c>> {
        let mut res = Box::new(empty_result());
        // SAFETY: valid statement; res is destroyed by QueryResult.
        let state = unsafe { ffi::duckdb_execute_prepared_streaming(self.raw, &mut *res) };
        QueryResult::new(self.conn, res, state)
    }

    /// Executes and materialises the result (for statements with a small
    /// answer: DML counts, DDL, bookkeeping).
    pub fn execute_owned(&mut self) -> DuckResult<QueryResult<'c>> {
        let mut res = Box::new(empty_result());
        // SAFETY: as above.
        let state = unsafe { ffi::duckdb_execute_prepared(self.raw, &mut *res) };
        QueryResult::new(self.conn, res, state)
    }

    /// Executes and returns the number of changed rows (0 for non-DML).
    pub fn execute(&mut self) -> DuckResult<u64> {
        let mut res = self.execute_owned()?;
        Ok(res.rows_changed())
    }
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // SAFETY: created by duckdb_prepare*; destroyed once.
        unsafe { ffi::duckdb_destroy_prepare(&mut self.raw) };
    }
}

fn empty_result() -> ffi::duckdb_result {
    ffi::duckdb_result {
        deprecated_column_count: 0,
        deprecated_row_count: 0,
        deprecated_rows_changed: 0,
        deprecated_columns: ptr::null_mut(),
        deprecated_error_message: ptr::null_mut(),
        internal_data: ptr::null_mut(),
    }
}
