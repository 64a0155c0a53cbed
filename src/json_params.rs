//! Statement parameters written as JSON (the original REST API's `params`
//! and `batch_params`, the `execute_batch` admin action) turned into Arrow
//! parameter batches, which both front doors hand to the engine. arrow-json
//! infers each position's type over all rows: integers become BIGINT,
//! other numbers DOUBLE, strings VARCHAR, booleans BOOLEAN, arrays and
//! objects LIST and STRUCT; DuckDB casts them to what the statement needs.

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use arrow::json::reader::infer_json_schema_from_iterator;
use arrow::json::ReaderBuilder;
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};

/// Rows of positional parameters (all of the same length) as Arrow batches
/// whose column `i` is parameter `i + 1`. No rows: no batches.
pub fn params_from_json(rows: &[Vec<Value>]) -> Result<Vec<RecordBatch>, String> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let width = first.len();
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
        return Err(format!(
            "parameter row {i} has {} values, row 0 has {width}",
            r.len()
        ));
    }
    let mut objects: Vec<Value> = rows
        .iter()
        .map(|r| {
            Value::Object(
                r.iter()
                    .enumerate()
                    .map(|(i, v)| (i.to_string(), v.clone()))
                    .collect::<Map<_, _>>(),
            )
        })
        .collect();
    let inferred = infer_json_schema_from_iterator(objects.iter().map(Ok))
        .map_err(|e| format!("parameters: {e}"))?;
    // Positional order (inference does not keep it).
    let mut fields: Vec<_> = inferred.fields().iter().cloned().collect();
    fields.sort_by_key(|f| f.name().parse::<usize>().unwrap_or(usize::MAX));
    // A position inferred as text (strings mixed with numbers or booleans)
    // takes the others as their JSON text; DuckDB casts back as needed.
    for f in fields.iter().filter(|f| f.data_type() == &DataType::Utf8) {
        for o in objects.iter_mut() {
            if let Some(v) = o.get_mut(f.name()) {
                if !matches!(v, Value::String(_) | Value::Null) {
                    *v = Value::String(v.to_string());
                }
            }
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let mut decoder = ReaderBuilder::new(schema)
        .with_batch_size(8192)
        .build_decoder()
        .map_err(|e| format!("parameters: {e}"))?;
    decoder
        .serialize(&objects)
        .map_err(|e| format!("parameters: {e}"))?;
    let mut out = Vec::new();
    while let Some(b) = decoder.flush().map_err(|e| format!("parameters: {e}"))? {
        out.push(b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn positions_keep_their_order_and_types() {
        let rows: Vec<Vec<Value>> = (0..12)
            .map(|i| {
                vec![
                    json!(format!("n{i}")),
                    json!(i),
                    json!(i as f64 / 2.0),
                    json!(null),
                ]
            })
            .collect();
        let b = params_from_json(&rows).unwrap();
        assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 12);
        let types: Vec<_> = b[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            [
                DataType::Utf8,
                DataType::Int64,
                DataType::Float64,
                DataType::Null
            ]
        );
        assert!(params_from_json(&[vec![json!(1)], vec![]]).is_err());
        // Mixed numbers and strings: text.
        let b = params_from_json(&[vec![json!(30)], vec![json!("x")]]).unwrap();
        assert_eq!(b[0].schema().field(0).data_type(), &DataType::Utf8);
        assert!(params_from_json(&[]).unwrap().is_empty());
    }
}
