//! DuckDB errors with DuckDB's own error class attached.

use duckdb::ffi;

/// The class of a DuckDB error, as DuckDB reports it (`duckdb_error_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuckErrorKind {
    Parser,
    Binder,
    Catalog,
    Constraint,
    Conversion,
    InvalidInput,
    Transaction,
    OutOfMemory,
    Permission,
    Interrupt,
    NotImplemented,
    Io,
    Internal,
    Other,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DuckError {
    pub kind: DuckErrorKind,
    pub message: String,
}

impl DuckError {
    pub fn new(kind: DuckErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// From the typed error of a `duckdb_result`.
    pub(crate) fn from_error_type(t: ffi::duckdb_error_type, message: String) -> Self {
        use DuckErrorKind::*;
        let kind = match t {
            ffi::duckdb_error_type_DUCKDB_ERROR_PARSER
            | ffi::duckdb_error_type_DUCKDB_ERROR_SYNTAX => Parser,
            ffi::duckdb_error_type_DUCKDB_ERROR_BINDER
            | ffi::duckdb_error_type_DUCKDB_ERROR_PARAMETER_NOT_RESOLVED
            | ffi::duckdb_error_type_DUCKDB_ERROR_PARAMETER_NOT_ALLOWED
            | ffi::duckdb_error_type_DUCKDB_ERROR_PLANNER
            | ffi::duckdb_error_type_DUCKDB_ERROR_EXPRESSION => Binder,
            ffi::duckdb_error_type_DUCKDB_ERROR_CATALOG
            | ffi::duckdb_error_type_DUCKDB_ERROR_DEPENDENCY => Catalog,
            ffi::duckdb_error_type_DUCKDB_ERROR_CONSTRAINT
            | ffi::duckdb_error_type_DUCKDB_ERROR_INDEX => Constraint,
            ffi::duckdb_error_type_DUCKDB_ERROR_CONVERSION
            | ffi::duckdb_error_type_DUCKDB_ERROR_OUT_OF_RANGE
            | ffi::duckdb_error_type_DUCKDB_ERROR_DECIMAL
            | ffi::duckdb_error_type_DUCKDB_ERROR_DIVIDE_BY_ZERO
            | ffi::duckdb_error_type_DUCKDB_ERROR_MISMATCH_TYPE
            | ffi::duckdb_error_type_DUCKDB_ERROR_INVALID_TYPE => Conversion,
            ffi::duckdb_error_type_DUCKDB_ERROR_INVALID_INPUT
            | ffi::duckdb_error_type_DUCKDB_ERROR_SEQUENCE
            | ffi::duckdb_error_type_DUCKDB_ERROR_SETTINGS => InvalidInput,
            ffi::duckdb_error_type_DUCKDB_ERROR_PERMISSION => Permission,
            ffi::duckdb_error_type_DUCKDB_ERROR_TRANSACTION => Transaction,
            ffi::duckdb_error_type_DUCKDB_ERROR_OUT_OF_MEMORY => OutOfMemory,
            ffi::duckdb_error_type_DUCKDB_ERROR_INTERRUPT => Interrupt,
            ffi::duckdb_error_type_DUCKDB_ERROR_NOT_IMPLEMENTED => NotImplemented,
            ffi::duckdb_error_type_DUCKDB_ERROR_IO => Io,
            ffi::duckdb_error_type_DUCKDB_ERROR_INTERNAL
            | ffi::duckdb_error_type_DUCKDB_ERROR_FATAL
            | ffi::duckdb_error_type_DUCKDB_ERROR_DATA_CORRUPTION => Internal,
            _ => Other,
        };
        Self { kind, message }
    }

    /// From an untyped DuckDB message (prepare errors only carry a string).
    /// DuckDB formats every message as `<Class> Error: ...`; the class is read
    /// from that prefix.
    pub(crate) fn from_message(message: String) -> Self {
        use DuckErrorKind::*;
        let class = message.split(" Error:").next().unwrap_or("");
        let kind = match class {
            "Parser" | "Syntax" => Parser,
            "Binder" | "Planner" => Binder,
            "Catalog" | "Dependency" => Catalog,
            "Constraint" => Constraint,
            "Conversion" | "Out of Range" | "Mismatch Type" => Conversion,
            "Invalid Input" | "Sequence" | "Invalid Configuration" => InvalidInput,
            "Permission" => Permission,
            "TransactionContext" | "Transaction" => Transaction,
            "Out of Memory" => OutOfMemory,
            "INTERRUPT" | "Interrupt" => Interrupt,
            "Not implemented" => NotImplemented,
            "IO" => Io,
            "INTERNAL" | "FATAL" => Internal,
            _ => Other,
        };
        Self { kind, message }
    }
}

pub type DuckResult<T> = Result<T, DuckError>;
