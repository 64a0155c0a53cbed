//! Binding Arrow values (Flight SQL parameter batches) to prepared statements.
//!
//! Each cell becomes a `duckdb_value` of the matching DuckDB type, so DuckDB
//! receives typed values (nested LIST/STRUCT/MAP included) and applies its own
//! implicit casts to the parameter's target type.

use std::ffi::CString;

use arrow::array::*;
use arrow::datatypes::*;
use arrow::record_batch::RecordBatch;
use duckdb::ffi;

use super::error::{DuckError, DuckErrorKind, DuckResult};
use super::statement::Prepared;

/// An owned `duckdb_value`.
struct Value(ffi::duckdb_value);

impl Drop for Value {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by a duckdb_create_* function.
            unsafe { ffi::duckdb_destroy_value(&mut self.0) };
        }
    }
}

/// An owned `duckdb_logical_type`.
struct LogicalType(ffi::duckdb_logical_type);

impl Drop for LogicalType {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by a duckdb_create_* function.
            unsafe { ffi::duckdb_destroy_logical_type(&mut self.0) };
        }
    }
}

fn unsupported(dt: &DataType) -> DuckError {
    DuckError::new(
        DuckErrorKind::InvalidInput,
        format!("Invalid Input Error: parameters of Arrow type {dt} are not supported"),
    )
}

/// Binds row `row` of `batch` to the statement's parameters, in column order.
pub fn bind_row(stmt: &mut Prepared<'_>, batch: &RecordBatch, row: usize) -> DuckResult<()> {
    let expected = stmt.parameter_count();
    if batch.num_columns() != expected {
        return Err(DuckError::new(
            DuckErrorKind::InvalidInput,
            format!(
                "Invalid Input Error: the statement has {expected} parameter(s) but {} value(s) were bound",
                batch.num_columns()
            ),
        ));
    }
    for (i, col) in batch.columns().iter().enumerate() {
        let v = value_at(col.as_ref(), row)?;
        // SAFETY: valid statement, 1-based index in range, valid value.
        let state = unsafe { ffi::duckdb_bind_value(stmt.raw(), (i + 1) as u64, v.0) };
        if state != ffi::DuckDBSuccess {
            return Err(DuckError::new(
                DuckErrorKind::InvalidInput,
                format!("Invalid Input Error: could not bind parameter {}", i + 1),
            ));
        }
    }
    Ok(())
}

fn hugeint(v: i128) -> ffi::duckdb_hugeint {
    ffi::duckdb_hugeint {
        lower: v as u64,
        upper: (v >> 64) as i64,
    }
}

fn logical(t: ffi::duckdb_type) -> LogicalType {
    // SAFETY: plain constructor.
    LogicalType(unsafe { ffi::duckdb_create_logical_type(t) })
}

/// The DuckDB logical type for an Arrow type (for nested value constructors).
fn logical_type(dt: &DataType) -> DuckResult<LogicalType> {
    use DataType::*;
    Ok(match dt {
        Null => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_SQLNULL),
        Boolean => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN),
        Int8 => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_TINYINT),
        Int16 => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT),
        Int32 => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER),
        Int64 => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT),
        UInt8 => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT),
        UInt16 => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT),
        UInt32 => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_UINTEGER),
        UInt64 => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_UBIGINT),
        Float16 | Float32 => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_FLOAT),
        Float64 => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE),
        Utf8 | LargeUtf8 | Utf8View => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR),
        Binary | LargeBinary | BinaryView => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB),
        FixedSizeBinary(16) => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_UUID),
        FixedSizeBinary(_) => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB),
        Date32 | Date64 => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_DATE),
        Time32(_) | Time64(_) => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME),
        Timestamp(_, Some(_)) => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_TZ),
        Timestamp(TimeUnit::Second, None) => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_S),
        Timestamp(TimeUnit::Millisecond, None) => {
            logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_MS)
        }
        Timestamp(TimeUnit::Microsecond, None) => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP),
        Timestamp(TimeUnit::Nanosecond, None) => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_NS),
        Interval(_) | Duration(_) => logical(ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTERVAL),
        // SAFETY: plain constructor; width <= 38 checked.
        Decimal128(p, s) if *p <= 38 && *s >= 0 => {
            LogicalType(unsafe { ffi::duckdb_create_decimal_type(*p, *s as u8) })
        }
        List(f) | LargeList(f) | ListView(f) | LargeListView(f) => {
            let child = logical_type(f.data_type())?;
            // SAFETY: child is valid; the list type copies it.
            LogicalType(unsafe { ffi::duckdb_create_list_type(child.0) })
        }
        FixedSizeList(f, n) => {
            let child = logical_type(f.data_type())?;
            LogicalType(unsafe { ffi::duckdb_create_array_type(child.0, *n as u64) })
        }
        Struct(fields) => members(
            fields.iter().map(|f| f.as_ref()),
            ffi::duckdb_create_struct_type,
        )?,
        Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(unsupported(dt));
            };
            if kv.len() != 2 {
                return Err(unsupported(dt));
            }
            let k = logical_type(kv[0].data_type())?;
            let v = logical_type(kv[1].data_type())?;
            LogicalType(unsafe { ffi::duckdb_create_map_type(k.0, v.0) })
        }
        Union(fields, _) => members(
            fields.iter().map(|(_, f)| f.as_ref()),
            ffi::duckdb_create_union_type,
        )?,
        Dictionary(_, values) => logical_type(values)?,
        _ => return Err(unsupported(dt)),
    })
}

/// A STRUCT or UNION type from its member fields; `create` is
/// `duckdb_create_struct_type` or `duckdb_create_union_type`.
fn members<'a>(
    fields: impl Iterator<Item = &'a Field>,
    create: unsafe extern "C" fn(
        *mut ffi::duckdb_logical_type,
        *mut *const std::os::raw::c_char,
        u64,
    ) -> ffi::duckdb_logical_type,
) -> DuckResult<LogicalType> {
    let fields: Vec<&Field> = fields.collect();
    let children: Vec<LogicalType> = fields
        .iter()
        .map(|f| logical_type(f.data_type()))
        .collect::<DuckResult<_>>()?;
    let names: Vec<CString> = fields
        .iter()
        .map(|f| CString::new(f.name().as_str()).unwrap_or_default())
        .collect();
    let mut child_ptrs: Vec<_> = children.iter().map(|c| c.0).collect();
    let mut name_ptrs: Vec<_> = names.iter().map(|n| n.as_ptr()).collect();
    // SAFETY: arrays of equal length; DuckDB copies them.
    Ok(LogicalType(unsafe {
        create(
            child_ptrs.as_mut_ptr(),
            name_ptrs.as_mut_ptr(),
            fields.len() as u64,
        )
    }))
}

macro_rules! prim {
    ($arr:expr, $ty:ty, $row:expr) => {
        $arr.as_any()
            .downcast_ref::<$ty>()
            .map(|a| a.value($row))
            .ok_or_else(|| unsupported($arr.data_type()))?
    };
}

fn create_varchar(s: &str) -> Value {
    // SAFETY: pointer/length pair from a valid str.
    Value(unsafe { ffi::duckdb_create_varchar_length(s.as_ptr() as *const _, s.len() as u64) })
}

fn create_blob(b: &[u8]) -> Value {
    // SAFETY: pointer/length pair from a valid slice.
    Value(unsafe { ffi::duckdb_create_blob(b.as_ptr(), b.len() as u64) })
}

fn micros(unit: &TimeUnit, v: i64) -> i64 {
    match unit {
        TimeUnit::Second => v.saturating_mul(1_000_000),
        TimeUnit::Millisecond => v.saturating_mul(1_000),
        TimeUnit::Microsecond => v,
        TimeUnit::Nanosecond => v / 1_000,
    }
}

/// The value at `row` of `arr` as a DuckDB value.
fn value_at(arr: &dyn Array, row: usize) -> DuckResult<Value> {
    use DataType::*;
    if arr.is_null(row) {
        // SAFETY: plain constructor.
        return Ok(Value(unsafe { ffi::duckdb_create_null_value() }));
    }
    let dt = arr.data_type();
    // SAFETY (whole match): duckdb_create_* constructors take plain values.
    let v = unsafe {
        match dt {
            Null => ffi::duckdb_create_null_value(),
            Boolean => ffi::duckdb_create_bool(prim!(arr, BooleanArray, row)),
            Int8 => ffi::duckdb_create_int8(prim!(arr, Int8Array, row)),
            Int16 => ffi::duckdb_create_int16(prim!(arr, Int16Array, row)),
            Int32 => ffi::duckdb_create_int32(prim!(arr, Int32Array, row)),
            Int64 => ffi::duckdb_create_int64(prim!(arr, Int64Array, row)),
            UInt8 => ffi::duckdb_create_uint8(prim!(arr, UInt8Array, row)),
            UInt16 => ffi::duckdb_create_uint16(prim!(arr, UInt16Array, row)),
            UInt32 => ffi::duckdb_create_uint32(prim!(arr, UInt32Array, row)),
            UInt64 => ffi::duckdb_create_uint64(prim!(arr, UInt64Array, row)),
            Float16 => ffi::duckdb_create_float(prim!(arr, Float16Array, row).to_f32()),
            Float32 => ffi::duckdb_create_float(prim!(arr, Float32Array, row)),
            Float64 => ffi::duckdb_create_double(prim!(arr, Float64Array, row)),
            Utf8 => return Ok(create_varchar(prim!(arr, StringArray, row))),
            LargeUtf8 => return Ok(create_varchar(prim!(arr, LargeStringArray, row))),
            Utf8View => return Ok(create_varchar(prim!(arr, StringViewArray, row))),
            Binary => return Ok(create_blob(prim!(arr, BinaryArray, row))),
            LargeBinary => return Ok(create_blob(prim!(arr, LargeBinaryArray, row))),
            BinaryView => return Ok(create_blob(prim!(arr, BinaryViewArray, row))),
            FixedSizeBinary(16) => {
                let b = prim!(arr, FixedSizeBinaryArray, row);
                let u = u128::from_be_bytes(b.try_into().map_err(|_| unsupported(dt))?);
                // DuckDB stores UUIDs as a uhugeint; duckdb_create_uuid takes the plain value.
                ffi::duckdb_create_uuid(ffi::duckdb_uhugeint {
                    lower: u as u64,
                    upper: (u >> 64) as u64,
                })
            }
            FixedSizeBinary(_) => return Ok(create_blob(prim!(arr, FixedSizeBinaryArray, row))),
            Date32 => ffi::duckdb_create_date(ffi::duckdb_date {
                days: prim!(arr, Date32Array, row),
            }),
            Date64 => ffi::duckdb_create_date(ffi::duckdb_date {
                days: (prim!(arr, Date64Array, row).div_euclid(86_400_000)) as i32,
            }),
            Time32(TimeUnit::Second) => ffi::duckdb_create_time(ffi::duckdb_time {
                micros: prim!(arr, Time32SecondArray, row) as i64 * 1_000_000,
            }),
            Time32(_) => ffi::duckdb_create_time(ffi::duckdb_time {
                micros: prim!(arr, Time32MillisecondArray, row) as i64 * 1_000,
            }),
            Time64(TimeUnit::Microsecond) => ffi::duckdb_create_time(ffi::duckdb_time {
                micros: prim!(arr, Time64MicrosecondArray, row),
            }),
            Time64(_) => ffi::duckdb_create_time_ns(ffi::duckdb_time_ns {
                nanos: prim!(arr, Time64NanosecondArray, row),
            }),
            Timestamp(unit, tz) => {
                let raw = match unit {
                    TimeUnit::Second => prim!(arr, TimestampSecondArray, row),
                    TimeUnit::Millisecond => prim!(arr, TimestampMillisecondArray, row),
                    TimeUnit::Microsecond => prim!(arr, TimestampMicrosecondArray, row),
                    TimeUnit::Nanosecond => prim!(arr, TimestampNanosecondArray, row),
                };
                match (tz, unit) {
                    (Some(_), TimeUnit::Nanosecond) => {
                        ffi::duckdb_create_timestamp_tz_ns(ffi::duckdb_timestamp_ns { nanos: raw })
                    }
                    (Some(_), _) => ffi::duckdb_create_timestamp_tz(ffi::duckdb_timestamp {
                        micros: micros(unit, raw),
                    }),
                    (None, TimeUnit::Second) => {
                        ffi::duckdb_create_timestamp_s(ffi::duckdb_timestamp_s { seconds: raw })
                    }
                    (None, TimeUnit::Millisecond) => {
                        ffi::duckdb_create_timestamp_ms(ffi::duckdb_timestamp_ms { millis: raw })
                    }
                    (None, TimeUnit::Microsecond) => {
                        ffi::duckdb_create_timestamp(ffi::duckdb_timestamp { micros: raw })
                    }
                    (None, TimeUnit::Nanosecond) => {
                        ffi::duckdb_create_timestamp_ns(ffi::duckdb_timestamp_ns { nanos: raw })
                    }
                }
            }
            Interval(IntervalUnit::MonthDayNano) => {
                let v = prim!(arr, IntervalMonthDayNanoArray, row);
                ffi::duckdb_create_interval(ffi::duckdb_interval {
                    months: v.months,
                    days: v.days,
                    micros: v.nanoseconds / 1_000,
                })
            }
            Interval(IntervalUnit::DayTime) => {
                let v = prim!(arr, IntervalDayTimeArray, row);
                ffi::duckdb_create_interval(ffi::duckdb_interval {
                    months: 0,
                    days: v.days,
                    micros: v.milliseconds as i64 * 1_000,
                })
            }
            Interval(IntervalUnit::YearMonth) => {
                ffi::duckdb_create_interval(ffi::duckdb_interval {
                    months: prim!(arr, IntervalYearMonthArray, row),
                    days: 0,
                    micros: 0,
                })
            }
            Duration(unit) => {
                let raw = match unit {
                    TimeUnit::Second => prim!(arr, DurationSecondArray, row),
                    TimeUnit::Millisecond => prim!(arr, DurationMillisecondArray, row),
                    TimeUnit::Microsecond => prim!(arr, DurationMicrosecondArray, row),
                    TimeUnit::Nanosecond => prim!(arr, DurationNanosecondArray, row),
                };
                ffi::duckdb_create_interval(ffi::duckdb_interval {
                    months: 0,
                    days: 0,
                    micros: micros(unit, raw),
                })
            }
            Decimal128(p, s) if *p <= 38 && *s >= 0 => {
                ffi::duckdb_create_decimal(ffi::duckdb_decimal {
                    width: *p,
                    scale: *s as u8,
                    value: hugeint(prim!(arr, Decimal128Array, row)),
                })
            }
            List(f) | LargeList(f) | FixedSizeList(f, _) => {
                let values: ArrayRef = match dt {
                    List(_) => arr.as_list::<i32>().value(row),
                    LargeList(_) => arr.as_list::<i64>().value(row),
                    _ => arr.as_fixed_size_list().value(row),
                };
                let child = logical_type(f.data_type())?;
                let items: Vec<Value> = (0..values.len())
                    .map(|i| value_at(values.as_ref(), i))
                    .collect::<DuckResult<_>>()?;
                let mut ptrs: Vec<_> = items.iter().map(|v| v.0).collect();
                if matches!(dt, FixedSizeList(..)) {
                    ffi::duckdb_create_array_value(child.0, ptrs.as_mut_ptr(), ptrs.len() as u64)
                } else {
                    ffi::duckdb_create_list_value(child.0, ptrs.as_mut_ptr(), ptrs.len() as u64)
                }
            }
            Struct(_) => {
                let s = arr.as_struct();
                let ty = logical_type(dt)?;
                let items: Vec<Value> = s
                    .columns()
                    .iter()
                    .map(|c| value_at(c.as_ref(), row))
                    .collect::<DuckResult<_>>()?;
                let mut ptrs: Vec<_> = items.iter().map(|v| v.0).collect();
                ffi::duckdb_create_struct_value(ty.0, ptrs.as_mut_ptr())
            }
            Map(_, _) => {
                let m = arr.as_map();
                let ty = logical_type(dt)?;
                let entries = m.value(row);
                let keys: Vec<Value> = (0..entries.len())
                    .map(|i| value_at(entries.column(0).as_ref(), i))
                    .collect::<DuckResult<_>>()?;
                let vals: Vec<Value> = (0..entries.len())
                    .map(|i| value_at(entries.column(1).as_ref(), i))
                    .collect::<DuckResult<_>>()?;
                let mut kp: Vec<_> = keys.iter().map(|v| v.0).collect();
                let mut vp: Vec<_> = vals.iter().map(|v| v.0).collect();
                ffi::duckdb_create_map_value(
                    ty.0,
                    kp.as_mut_ptr(),
                    vp.as_mut_ptr(),
                    kp.len() as u64,
                )
            }
            Union(fields, _) => {
                let u = arr
                    .as_any()
                    .downcast_ref::<UnionArray>()
                    .ok_or_else(|| unsupported(dt))?;
                let type_id = u.type_id(row);
                let tag = fields
                    .iter()
                    .position(|(id, _)| id == type_id)
                    .ok_or_else(|| unsupported(dt))?;
                let member = value_at(u.child(type_id).as_ref(), u.value_offset(row))?;
                let ty = logical_type(dt)?;
                ffi::duckdb_create_union_value(ty.0, tag as u64, member.0)
            }
            Dictionary(_, _) => {
                let d = arr.as_any_dictionary();
                let key = d.normalized_keys()[row];
                return value_at(d.values().as_ref(), key);
            }
            _ => return Err(unsupported(dt)),
        }
    };
    if v.is_null() {
        return Err(DuckError::new(
            DuckErrorKind::InvalidInput,
            format!("Invalid Input Error: could not convert a parameter of type {dt}"),
        ));
    }
    Ok(Value(v))
}
