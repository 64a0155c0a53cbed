//! Arrow record batches to JSON rows, as DuckDB produces them and within a
//! byte bound. Values keep their precision: DECIMAL and HUGEINT are written
//! as exact JSON numbers (all their digits), BIGINT as integers, floats in
//! their shortest round-trip form with NaN and infinities as the strings
//! `"NaN"`, `"Infinity"`, `"-Infinity"`, temporal types as ISO 8601
//! strings, BLOBs as hex strings, lists as arrays, structs and maps as
//! objects, NULL as `null`. Types the JSON writer has no mapping for
//! (UNION) are written as their display string.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, FieldRef, Float32Type, Float64Type};
use arrow::error::ArrowError;
use arrow::json::writer::{make_encoder, Encoder, EncoderFactory, EncoderOptions, NullableEncoder};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::engine::BatchStream;

/// How rows are written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RowShape {
    /// `[v1, v2, ...]` (a single-month answer's `rows`).
    Arrays,
    /// `{"c1": v1, ...}` (a cross-month answer's `results`); the first
    /// `skip` columns are left out (the engine's leading `month` column).
    Objects { skip: usize },
}

/// The result of a statement as JSON.
pub struct JsonRows {
    pub columns: Vec<String>,
    pub types: Vec<String>,
    /// A JSON array of the rows.
    pub rows: Vec<u8>,
    pub count: u64,
}

/// The result did not fit the byte bound.
#[derive(Debug)]
pub struct TooLarge {
    pub rows_so_far: u64,
}

#[derive(Debug)]
pub enum CollectError {
    Engine(crate::engine::EngineError),
    Arrow(ArrowError),
    TooLarge(TooLarge),
    /// The process-wide JSON budget stayed exhausted.
    Busy(super::budget::Busy),
}

/// Reads `stream` to its end into JSON rows, stopping (and so stopping
/// DuckDB) as soon as the JSON would exceed `limit` bytes; `held` grows
/// with the JSON (the process-wide budget).
pub async fn collect(
    stream: BatchStream,
    shape: RowShape,
    limit: usize,
    held: &mut super::budget::Held,
) -> Result<JsonRows, CollectError> {
    let skip = match shape {
        RowShape::Arrays => 0,
        RowShape::Objects { skip } => skip,
    };
    let fields: Vec<FieldRef> = stream.schema.fields().iter().skip(skip).cloned().collect();
    let mut out = JsonRows {
        columns: fields.iter().map(|f| f.name().clone()).collect(),
        types: fields.iter().map(|f| f.data_type().to_string()).collect(),
        rows: Vec::with_capacity(1024),
        count: 0,
    };
    out.rows.push(b'[');
    let keys: Vec<Vec<u8>> = match shape {
        RowShape::Arrays => Vec::new(),
        RowShape::Objects { .. } => out
            .columns
            .iter()
            .map(|c| {
                let mut k = serde_json::to_vec(c).unwrap_or_else(|_| b"\"?\"".to_vec());
                k.push(b':');
                k
            })
            .collect(),
    };
    let write = |batch: &RecordBatch, out: &mut JsonRows| -> Result<(), CollectError> {
        write_batch(batch, skip, &fields, &keys, out).map_err(CollectError::Arrow)?;
        if out.rows.len() > limit {
            return Err(CollectError::TooLarge(TooLarge {
                rows_so_far: out.count,
            }));
        }
        Ok(())
    };
    for b in &stream.head {
        write(b, &mut out)?;
        held.cover(out.rows.capacity())
            .await
            .map_err(CollectError::Busy)?;
    }
    if let Some(mut rx) = stream.rest {
        while let Some(b) = rx.recv().await {
            write(&b.map_err(CollectError::Engine)?, &mut out)?;
            held.cover(out.rows.capacity())
                .await
                .map_err(CollectError::Busy)?;
        }
    }
    out.rows.push(b']');
    Ok(out)
}

fn options() -> EncoderOptions {
    EncoderOptions::default()
        .with_explicit_nulls(true)
        .with_encoder_factory(Arc::new(Lossless))
}

fn write_batch(
    batch: &RecordBatch,
    skip: usize,
    fields: &[FieldRef],
    keys: &[Vec<u8>],
    out: &mut JsonRows,
) -> Result<(), ArrowError> {
    let opts = options();
    let columns = &batch.columns()[skip.min(batch.num_columns())..];
    let mut encoders = fields
        .iter()
        .zip(columns)
        .map(|(f, a)| make_encoder(f, a.as_ref(), &opts))
        .collect::<Result<Vec<_>, _>>()?;
    let buf = &mut out.rows;
    for row in 0..batch.num_rows() {
        if out.count > 0 {
            buf.push(b',');
        }
        buf.push(if keys.is_empty() { b'[' } else { b'{' });
        for (i, enc) in encoders.iter_mut().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            if let Some(k) = keys.get(i) {
                buf.extend_from_slice(k);
            }
            if enc.is_null(row) {
                buf.extend_from_slice(b"null");
            } else {
                enc.encode(row, buf);
            }
        }
        buf.push(if keys.is_empty() { b']' } else { b'}' });
        out.count += 1;
    }
    Ok(())
}

/// The encoders arrow-json lacks or that would lose values.
#[derive(Debug)]
struct Lossless;

impl EncoderFactory for Lossless {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let nulls = array.logical_nulls();
        let enc: Box<dyn Encoder + 'a> = match array.data_type() {
            DataType::Float64 => Box::new(FloatEncoder(array.as_primitive::<Float64Type>())),
            DataType::Float32 => Box::new(Float32Encoder(array.as_primitive::<Float32Type>())),
            DataType::Union(_, _) => Box::new(DisplayEncoder(ArrayFormatter::try_new(
                array,
                &FormatOptions::default(),
            )?)),
            _ => return Ok(None),
        };
        Ok(Some(NullableEncoder::new(enc, nulls)))
    }
}

fn write_float(v: f64, out: &mut Vec<u8>) {
    if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
    } else {
        // serde_json writes the shortest representation that reads back
        // as the same double (ryu).
        let _ = serde_json::to_writer(&mut *out, &v);
    }
}

struct FloatEncoder<'a>(&'a arrow::array::Float64Array);

impl Encoder for FloatEncoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        write_float(self.0.value(idx), out);
    }
}

struct Float32Encoder<'a>(&'a arrow::array::Float32Array);

impl Encoder for Float32Encoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let v = self.0.value(idx);
        if v.is_finite() {
            // The shortest text of the f32 itself, not of its f64 widening.
            let _ = serde_json::to_writer(&mut *out, &v);
        } else {
            write_float(v as f64, out);
        }
    }
}

struct DisplayEncoder<'a>(ArrayFormatter<'a>);

impl Encoder for DisplayEncoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let text = self.0.value(idx).to_string();
        let _ = serde_json::to_writer(&mut *out, &text);
    }
}
