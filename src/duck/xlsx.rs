//! `read_xlsx(path, sheet := …, header := …, range := …, all_varchar := …,
//! ignore_errors := …, stop_at_empty := …, empty_as_varchar := …)`: DuckDB's
//! excel extension's table function, built into the binary (no extension is
//! ever downloaded) over calamine (`sheet`), and the replacement scan that
//! makes `FROM 'book.xlsx'` call it. Registered on every database the server
//! opens.
//!
//! The file is opened through the querying connection's own DuckDB file
//! system, so DuckDB's files sandbox (`allowed_directories`, external access
//! off) decides whether it may be read, exactly as for `read_csv`.

use std::ffi::{c_void, CStr, CString};
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use duckdb::ffi;

use super::error::{DuckError, DuckErrorKind, DuckResult};
use super::sheet::{self, Cell, ColType, SheetOptions, Table};
use super::{cstr_to_string, Conn};

/// Largest workbook read (calamine holds the whole sheet in memory).
const MAX_FILE_BYTES: i64 = 1 << 30;

/// Extensions the replacement scan hands to `read_xlsx`.
const EXTENSIONS: [&str; 5] = [".xlsx", ".xlsm", ".xlsb", ".xls", ".ods"];

/// Registers `read_xlsx` (and `read_excel`, another name users know) on the
/// database of `conn`, and the replacement scan for spreadsheet names.
pub fn register(conn: &Conn, db: ffi::duckdb_database) -> DuckResult<()> {
    for name in ["read_xlsx", "read_excel"] {
        register_function(conn, name)?;
    }
    // SAFETY: db is live; the callback takes no extra data.
    unsafe { ffi::duckdb_add_replacement_scan(db, Some(replacement), ptr::null_mut(), None) };
    Ok(())
}

fn register_function(conn: &Conn, name: &str) -> DuckResult<()> {
    let c_name = CString::new(name).map_err(|_| DuckError::new(DuckErrorKind::Internal, "name"))?;
    // SAFETY: the function object is configured, registered and destroyed
    // here; DuckDB copies what it keeps.
    unsafe {
        let mut tf = ffi::duckdb_create_table_function();
        ffi::duckdb_table_function_set_name(tf, c_name.as_ptr());
        let mut varchar = ffi::duckdb_create_logical_type(ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR);
        let mut boolean = ffi::duckdb_create_logical_type(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN);
        ffi::duckdb_table_function_add_parameter(tf, varchar);
        for (p, is_text) in [
            ("sheet", true),
            ("range", true),
            ("header", false),
            ("all_varchar", false),
            ("ignore_errors", false),
            ("stop_at_empty", false),
            ("empty_as_varchar", false),
        ] {
            let c = CString::new(p).unwrap_or_default();
            let ty = if is_text { varchar } else { boolean };
            ffi::duckdb_table_function_add_named_parameter(tf, c.as_ptr(), ty);
        }
        ffi::duckdb_destroy_logical_type(&mut varchar);
        ffi::duckdb_destroy_logical_type(&mut boolean);
        ffi::duckdb_table_function_set_bind(tf, Some(bind));
        ffi::duckdb_table_function_set_init(tf, Some(init));
        ffi::duckdb_table_function_set_function(tf, Some(scan));
        let state = ffi::duckdb_register_table_function(conn.raw(), tf);
        ffi::duckdb_destroy_table_function(&mut tf);
        if state != ffi::DuckDBSuccess {
            return Err(DuckError::new(
                DuckErrorKind::Internal,
                format!("could not register {name}"),
            ));
        }
    }
    Ok(())
}

/// Runs a callback body, turning an error or a panic into a message.
fn guarded(f: impl FnOnce() -> Result<(), String>) -> Option<String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(p) => Some(format!(
            "read_xlsx failed: {}",
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into())
        )),
    }
}

fn c_message(msg: &str) -> CString {
    CString::new(msg.replace('\0', "\\0")).unwrap_or_default()
}

unsafe extern "C" fn replacement(
    info: ffi::duckdb_replacement_scan_info,
    table_name: *const c_char,
    _data: *mut c_void,
) {
    let _ = guarded(|| {
        // SAFETY: DuckDB passes a NUL-terminated name.
        let name = unsafe { CStr::from_ptr(table_name) }.to_string_lossy();
        let lower = name.to_ascii_lowercase();
        if !EXTENSIONS.iter().any(|e| lower.ends_with(e)) {
            return Ok(());
        }
        // SAFETY: info is live during the callback; the value is copied.
        unsafe {
            ffi::duckdb_replacement_scan_set_function_name(info, c"read_xlsx".as_ptr());
            let mut v = ffi::duckdb_create_varchar(table_name);
            ffi::duckdb_replacement_scan_add_parameter(info, v);
            ffi::duckdb_destroy_value(&mut v);
        }
        Ok(())
    });
}

/// A named parameter as text / bool (`None`: not given).
unsafe fn named(info: ffi::duckdb_bind_info, name: &str) -> Option<ffi::duckdb_value> {
    let c = CString::new(name).ok()?;
    // SAFETY: info is live during bind.
    let v = unsafe { ffi::duckdb_bind_get_named_parameter(info, c.as_ptr()) };
    (!v.is_null()).then_some(v)
}

unsafe fn take_text(mut v: ffi::duckdb_value) -> Option<String> {
    // SAFETY: v is a live value; the string is freed with duckdb_free.
    unsafe {
        if ffi::duckdb_is_null_value(v) {
            ffi::duckdb_destroy_value(&mut v);
            return None;
        }
        let s = ffi::duckdb_get_varchar(v);
        let out = cstr_to_string(s);
        ffi::duckdb_free(s.cast());
        ffi::duckdb_destroy_value(&mut v);
        out
    }
}

unsafe fn take_bool(mut v: ffi::duckdb_value) -> Option<bool> {
    // SAFETY: v is a live value.
    unsafe {
        let out = (!ffi::duckdb_is_null_value(v)).then(|| ffi::duckdb_get_bool(v));
        ffi::duckdb_destroy_value(&mut v);
        out
    }
}

unsafe extern "C" fn bind(info: ffi::duckdb_bind_info) {
    let failed = guarded(|| {
        // SAFETY: all calls below get the live bind info.
        let (path, opts) = unsafe {
            let path = take_text(ffi::duckdb_bind_get_parameter(info, 0))
                .ok_or("read_xlsx: the path may not be NULL")?;
            let text = |n| named(info, n).and_then(|v| take_text(v));
            let flag = |n| named(info, n).and_then(|v| take_bool(v));
            let opts = SheetOptions {
                sheet: text("sheet"),
                range: text("range"),
                header: flag("header"),
                all_varchar: flag("all_varchar").unwrap_or(false),
                ignore_errors: flag("ignore_errors").unwrap_or(false),
                stop_at_empty: flag("stop_at_empty"),
                empty_as_varchar: flag("empty_as_varchar").unwrap_or(false),
            };
            (path, opts)
        };
        // SAFETY: info is live.
        let bytes = unsafe { read_file(info, &path)? };
        let table = sheet::read(bytes, &opts).map_err(|e| format!("read_xlsx('{path}'): {e}"))?;
        for (name, ty) in table.names.iter().zip(&table.types) {
            let c = c_message(name);
            // SAFETY: the type is created and destroyed around the call.
            unsafe {
                let mut lt = ffi::duckdb_create_logical_type(duck_type(*ty));
                ffi::duckdb_bind_add_result_column(info, c.as_ptr(), lt);
                ffi::duckdb_destroy_logical_type(&mut lt);
            }
        }
        let rows = table.rows() as u64;
        let data = Box::into_raw(Box::new(table));
        // SAFETY: DuckDB owns the box from here and frees it with drop_table.
        unsafe {
            ffi::duckdb_bind_set_cardinality(info, rows, true);
            ffi::duckdb_bind_set_bind_data(info, data.cast(), Some(drop_table));
        }
        Ok(())
    });
    if let Some(msg) = failed {
        let c = c_message(&msg);
        // SAFETY: info is live.
        unsafe { ffi::duckdb_bind_set_error(info, c.as_ptr()) };
    }
}

unsafe extern "C" fn drop_table(p: *mut c_void) {
    // SAFETY: p came from Box::into_raw in bind.
    drop(unsafe { Box::from_raw(p.cast::<Table>()) });
}

unsafe extern "C" fn drop_cursor(p: *mut c_void) {
    // SAFETY: p came from Box::into_raw in init.
    drop(unsafe { Box::from_raw(p.cast::<AtomicUsize>()) });
}

/// The whole file, through DuckDB's file system for this query (its
/// sandbox decides, its error is the message).
unsafe fn read_file(info: ffi::duckdb_bind_info, path: &str) -> Result<Vec<u8>, String> {
    let c_path = CString::new(path).map_err(|_| "read_xlsx: the path contains NUL".to_string())?;
    // SAFETY: every handle created here is destroyed before returning.
    unsafe {
        let mut ctx: ffi::duckdb_client_context = ptr::null_mut();
        ffi::duckdb_table_function_get_client_context(info, &mut ctx);
        if ctx.is_null() {
            return Err("read_xlsx: no client context".into());
        }
        let mut fs = ffi::duckdb_client_context_get_file_system(ctx);
        let mut opts = ffi::duckdb_create_file_open_options();
        ffi::duckdb_file_open_options_set_flag(
            opts,
            ffi::duckdb_file_flag_DUCKDB_FILE_FLAG_READ,
            true,
        );
        let mut fh: ffi::duckdb_file_handle = ptr::null_mut();
        let opened = ffi::duckdb_file_system_open(fs, c_path.as_ptr(), opts, &mut fh);
        ffi::duckdb_destroy_file_open_options(&mut opts);
        let result = if opened != ffi::DuckDBSuccess {
            let mut e = ffi::duckdb_file_system_error_data(fs);
            let raw = cstr_to_string(ffi::duckdb_error_data_message(e))
                .unwrap_or_else(|| format!("cannot open {path}"));
            // The sandbox's refusal keeps DuckDB's own wording, so clients
            // see the same error as from read_csv.
            let msg = match ffi::duckdb_error_data_error_type(e) {
                ffi::duckdb_error_type_DUCKDB_ERROR_PERMISSION => {
                    format!("Permission Error: {raw}")
                }
                ffi::duckdb_error_type_DUCKDB_ERROR_IO => format!("IO Error: {raw}"),
                _ => raw,
            };
            ffi::duckdb_destroy_error_data(&mut e);
            Err(msg)
        } else {
            let size = ffi::duckdb_file_handle_size(fh);
            let r = if size > MAX_FILE_BYTES {
                Err(format!(
                    "read_xlsx: {path} is {size} bytes; spreadsheets up to 1 GiB are read"
                ))
            } else {
                let mut buf = vec![0u8; size.max(0) as usize];
                let mut done = 0usize;
                let mut failed = None;
                while done < buf.len() {
                    let n = ffi::duckdb_file_handle_read(
                        fh,
                        buf[done..].as_mut_ptr().cast(),
                        (buf.len() - done) as i64,
                    );
                    if n <= 0 {
                        failed = Some(format!("read_xlsx: could not read {path}"));
                        break;
                    }
                    done += n as usize;
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok(buf),
                }
            };
            ffi::duckdb_file_handle_close(fh);
            ffi::duckdb_destroy_file_handle(&mut fh);
            r
        };
        ffi::duckdb_destroy_file_system(&mut fs);
        ffi::duckdb_destroy_client_context(&mut ctx);
        result
    }
}

unsafe extern "C" fn init(info: ffi::duckdb_init_info) {
    let cursor = Box::into_raw(Box::new(AtomicUsize::new(0)));
    // SAFETY: DuckDB owns the box from here and frees it with drop_cursor.
    unsafe {
        ffi::duckdb_init_set_max_threads(info, 1);
        ffi::duckdb_init_set_init_data(info, cursor.cast(), Some(drop_cursor));
    }
}

fn duck_type(t: ColType) -> ffi::duckdb_type {
    match t {
        ColType::Double => ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE,
        ColType::Boolean => ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN,
        ColType::Date => ffi::DUCKDB_TYPE_DUCKDB_TYPE_DATE,
        ColType::Timestamp => ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP,
        ColType::Time => ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME,
        ColType::Varchar => ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR,
    }
}

unsafe extern "C" fn scan(info: ffi::duckdb_function_info, output: ffi::duckdb_data_chunk) {
    let failed = guarded(|| {
        // SAFETY: bind and init data were set by bind/init for this scan.
        let (table, cursor) = unsafe {
            (
                &*ffi::duckdb_function_get_bind_data(info).cast::<Table>(),
                &*ffi::duckdb_function_get_init_data(info).cast::<AtomicUsize>(),
            )
        };
        // SAFETY: plain query of the vector size.
        let cap = unsafe { ffi::duckdb_vector_size() } as usize;
        let start = cursor.load(Ordering::Relaxed);
        let n = table.rows().saturating_sub(start).min(cap);
        for col in 0..table.types.len() {
            // SAFETY: the output chunk has one vector per bound column and
            // room for `cap` rows.
            unsafe { fill(output, col, table, start, n)? };
        }
        cursor.store(start + n, Ordering::Relaxed);
        // SAFETY: n <= cap.
        unsafe { ffi::duckdb_data_chunk_set_size(output, n as u64) };
        Ok(())
    });
    if let Some(msg) = failed {
        let c = c_message(&msg);
        // SAFETY: info is live.
        unsafe { ffi::duckdb_function_set_error(info, c.as_ptr()) };
    }
}

/// Writes rows `start..start + n` of column `col` into the output vector.
unsafe fn fill(
    output: ffi::duckdb_data_chunk,
    col: usize,
    table: &Table,
    start: usize,
    n: usize,
) -> Result<(), String> {
    // SAFETY: see scan; the data pointer is typed by the column's type.
    unsafe {
        let vector = ffi::duckdb_data_chunk_get_vector(output, col as u64);
        let data = ffi::duckdb_vector_get_data(vector);
        let mut validity: *mut u64 = ptr::null_mut();
        for i in 0..n {
            let cell = table.cell(start + i, col)?;
            match cell {
                Cell::Null => {
                    if validity.is_null() {
                        ffi::duckdb_vector_ensure_validity_writable(vector);
                        validity = ffi::duckdb_vector_get_validity(vector);
                    }
                    ffi::duckdb_validity_set_row_invalid(validity, i as u64);
                }
                Cell::Double(v) => *data.cast::<f64>().add(i) = v,
                Cell::Bool(v) => *data.cast::<bool>().add(i) = v,
                Cell::Date(days) => *data.cast::<i32>().add(i) = days,
                Cell::Timestamp(us) | Cell::Time(us) => *data.cast::<i64>().add(i) = us,
                Cell::Text(s) => ffi::duckdb_vector_assign_string_element_len(
                    vector,
                    i as u64,
                    s.as_ptr().cast(),
                    s.len() as u64,
                ),
            }
        }
    }
    Ok(())
}
