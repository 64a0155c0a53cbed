//! A thin, safe layer over DuckDB's C API (`duckdb::ffi`).
//!
//! duckdb-rs does not expose what a database server needs: the statement type
//! DuckDB's parser assigned, the result schema before execution, typed errors,
//! and a result that can be stepped chunk by chunk without panicking. This
//! module wraps exactly those calls; everything above it is safe Rust.

mod appender;
mod arrow_in;
mod database;
mod error;
mod params;
mod result;
mod sheet;
mod statement;
mod xlsx;

pub use appender::{copy_rows, copy_rows_kept, Appender, Chunk};
pub use arrow_in::{sql_types, ArrowInserter};
pub use database::{Conn, Database, DbOptions, FilesSetting, InterruptHandle};
pub use error::{DuckError, DuckErrorKind};
pub use params::bind_row;
pub use result::QueryResult;
pub use statement::{Param, Prepared, StatementType};

use std::ffi::CStr;
use std::os::raw::c_char;

/// Copies a C string owned by DuckDB into a Rust `String` (lossy UTF-8).
pub(crate) fn cstr_to_string(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: DuckDB hands out NUL-terminated strings that live at least as
    // long as the object they came from; we copy immediately.
    Some(
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// The version string of the linked DuckDB library, e.g. `v2.0.0`.
pub fn library_version() -> String {
    // SAFETY: returns a static string.
    cstr_to_string(unsafe { duckdb::ffi::duckdb_library_version() }).unwrap_or_default()
}
