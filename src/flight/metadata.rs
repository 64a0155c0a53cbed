//! Flight SQL metadata answers built with arrow-flight's `sql::metadata`
//! builders (SqlInfo, XDBC types) and, for keys, the schemas the spec fixes.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Builder, StringBuilder, UInt8Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{Nullable, Searchable, SqlInfo, SqlSupportedTransaction, XdbcDataType};

use crate::engine::{ForeignKey, PrimaryKey};

pub fn sql_info(keywords: &[String]) -> Result<SqlInfoData, arrow_flight::error::FlightError> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "duckflock");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "60");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::Transaction as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, true);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, true);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlTransactionsSupported, true);
    b.append(SqlInfo::SqlKeywords, keywords.to_vec());
    b.build()
}

fn xdbc(
    name: &str,
    dt: XdbcDataType,
    size: Option<i32>,
    prefix: Option<&str>,
    unsigned: Option<bool>,
) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.into(),
        data_type: dt,
        column_size: size,
        literal_prefix: prefix.map(Into::into),
        literal_suffix: prefix.map(Into::into),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: matches!(dt, XdbcDataType::XdbcVarchar),
        searchable: Searchable::Full,
        unsigned_attribute: unsigned,
        fixed_prec_scale: false,
        auto_increment: Some(false),
        local_type_name: Some(name.into()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: dt,
        datetime_subcode: None,
        num_prec_radix: unsigned.map(|_| 10),
        interval_precision: None,
    }
}

pub fn xdbc_types() -> Result<XdbcTypeInfoData, arrow_flight::error::FlightError> {
    use XdbcDataType::*;
    let mut b = XdbcTypeInfoDataBuilder::new();
    b.append(xdbc("BOOLEAN", XdbcBit, Some(1), None, None));
    b.append(xdbc("TINYINT", XdbcTinyint, Some(3), None, Some(false)));
    b.append(xdbc("SMALLINT", XdbcSmallint, Some(5), None, Some(false)));
    b.append(xdbc("INTEGER", XdbcInteger, Some(10), None, Some(false)));
    b.append(xdbc("BIGINT", XdbcBigint, Some(19), None, Some(false)));
    b.append(xdbc("UTINYINT", XdbcTinyint, Some(3), None, Some(true)));
    b.append(xdbc("USMALLINT", XdbcSmallint, Some(5), None, Some(true)));
    b.append(xdbc("UINTEGER", XdbcInteger, Some(10), None, Some(true)));
    b.append(xdbc("UBIGINT", XdbcBigint, Some(20), None, Some(true)));
    b.append(xdbc("HUGEINT", XdbcDecimal, Some(39), None, Some(false)));
    b.append(xdbc("FLOAT", XdbcFloat, Some(24), None, Some(false)));
    b.append(xdbc("DOUBLE", XdbcDouble, Some(53), None, Some(false)));
    let mut dec = xdbc("DECIMAL", XdbcDecimal, Some(38), None, Some(false));
    dec.create_params = Some(vec!["precision".into(), "scale".into()]);
    dec.minimum_scale = Some(0);
    dec.maximum_scale = Some(38);
    b.append(dec);
    b.append(xdbc("VARCHAR", XdbcVarchar, None, Some("'"), None));
    b.append(xdbc("BLOB", XdbcVarbinary, None, None, None));
    b.append(xdbc("UUID", XdbcChar, Some(36), Some("'"), None));
    b.append(xdbc("DATE", XdbcDate, Some(10), Some("'"), None));
    b.append(xdbc("TIME", XdbcTime, Some(15), Some("'"), None));
    b.append(xdbc("TIMESTAMP", XdbcTimestamp, Some(26), Some("'"), None));
    b.append(xdbc(
        "TIMESTAMP WITH TIME ZONE",
        XdbcTimestamp,
        Some(32),
        Some("'"),
        None,
    ));
    b.append(xdbc("INTERVAL", XdbcInterval, None, Some("'"), None));
    b.build()
}

pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

pub fn primary_keys_batch(keys: &[PrimaryKey]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut cols: Vec<StringBuilder> = (0..5).map(|_| StringBuilder::new()).collect();
    let mut seq = Int32Builder::new();
    for k in keys {
        cols[0].append_value(&k.catalog);
        cols[1].append_value(&k.schema);
        cols[2].append_value(&k.table);
        cols[3].append_value(&k.column);
        cols[4].append_option(k.key_name.as_deref());
        seq.append_value(k.seq);
    }
    let mut arrays: Vec<ArrayRef> = cols
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    arrays.push(Arc::new(seq.finish()));
    RecordBatch::try_new(primary_keys_schema(), arrays)
}

pub fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// Foreign keys as the spec's batch. DuckDB only enforces NO ACTION (3).
pub fn foreign_keys_batch(keys: &[&ForeignKey]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut s: Vec<StringBuilder> = (0..10).map(|_| StringBuilder::new()).collect();
    let mut seq = Int32Builder::new();
    let (mut upd, mut del) = (UInt8Builder::new(), UInt8Builder::new());
    for k in keys {
        s[0].append_value(&k.catalog);
        s[1].append_value(&k.fk_schema);
        s[2].append_value(&k.pk_table);
        s[3].append_value(&k.pk_column);
        s[4].append_value(&k.catalog);
        s[5].append_value(&k.fk_schema);
        s[6].append_value(&k.fk_table);
        s[7].append_value(&k.fk_column);
        seq.append_value(k.seq);
        s[8].append_option(k.fk_name.as_deref());
        s[9].append_null();
        upd.append_value(3);
        del.append_value(3);
    }
    let mut it = s.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut arrays: Vec<ArrayRef> = it.by_ref().take(8).collect();
    arrays.push(Arc::new(seq.finish()));
    arrays.extend(it);
    arrays.push(Arc::new(upd.finish()));
    arrays.push(Arc::new(del.finish()));
    RecordBatch::try_new(foreign_keys_schema(), arrays)
}
