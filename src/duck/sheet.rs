//! A spreadsheet as a typed table, the way DuckDB's excel extension reads
//! it (`read_xlsx`): the sheet (first worksheet by default), the range
//! (given as `A1:C10`, `A5:Z`, `E:Z`, or sniffed: the first row holding a
//! value, from its first value over the values next to it), the header
//! (given, or sniffed: every cell of the first row is text), the column
//! names (the header's text, else cell references, `_1`… for duplicates,
//! `C<i>` for empty ones), the types from the one row after the header
//! (numbers DOUBLE, booleans BOOLEAN, dates DATE/TIMESTAMP/TIME, text and
//! error cells VARCHAR, empty DOUBLE or VARCHAR with `empty_as_varchar`),
//! `stop_at_empty` (default on unless a range is given) and
//! `ignore_errors`. Read with calamine (xlsx, xlsm, xlsb, xls, ods).
//!
//! Where calamine hides what the extension looks at, this is the nearest
//! rule (ARCHITECTURE.md, "Files in place"): a date cell is DATE when its
//! serial is whole, TIME when it is below one day, TIMESTAMP otherwise (the
//! extension reads the cell's number format); text cells reading `TRUE` stay
//! VARCHAR; numbers in VARCHAR columns print in their shortest form (`123`,
//! `2.5`), not as the file's raw text.

use std::io::Cursor;

use calamine::{open_workbook_auto_from_rs, Data, Range, Reader, SheetType};

/// Excel's last row and column.
const MAX_ROW: u32 = 1_048_576;
const MAX_COL: u32 = 16_384;
/// Days from 1899-12-30 (Excel's day 0) to 1970-01-01.
const EPOCH_DAYS: f64 = 25_569.0;

#[derive(Debug, Clone, Default)]
pub struct SheetOptions {
    pub sheet: Option<String>,
    pub range: Option<String>,
    pub header: Option<bool>,
    pub all_varchar: bool,
    pub ignore_errors: bool,
    pub stop_at_empty: Option<bool>,
    pub empty_as_varchar: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Double,
    Boolean,
    Date,
    Timestamp,
    Time,
    Varchar,
}

/// One output value (dates as DuckDB stores them).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Double(f64),
    Bool(bool),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 00:00.
    Timestamp(i64),
    /// Microseconds since midnight.
    Time(i64),
    Text(String),
}

/// The sheet's cells and how to read them.
pub struct Table {
    pub names: Vec<String>,
    pub types: Vec<ColType>,
    cells: Range<Data>,
    /// Absolute position of the first data row and column.
    first_row: u32,
    first_col: u32,
    rows: usize,
    ignore_errors: bool,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The value of data row `row`, column `col`, converted to the column's
    /// type (an error names the cell, as the extension does).
    pub fn cell(&self, row: usize, col: usize) -> Result<Cell, String> {
        let (r, c) = (self.first_row + row as u32, self.first_col + col as u32);
        let data = self.cells.get_value((r, c)).unwrap_or(&Data::Empty);
        match convert(data, self.types[col]) {
            Ok(v) => Ok(v),
            Err(_) if self.ignore_errors => Ok(Cell::Null),
            Err(msg) => Err(format!(
                "read_xlsx: Failed to parse cell '{}{}': {msg}",
                column_letters(c),
                r + 1
            )),
        }
    }
}

/// Opens the workbook in `bytes` and lays out the table `opts` asks for.
pub fn read(bytes: Vec<u8>, opts: &SheetOptions) -> Result<Table, String> {
    let mut wb = open_workbook_auto_from_rs(Cursor::new(bytes)).map_err(|e| {
        format!("not a spreadsheet calamine can read (xlsx, xlsm, xlsb, xls, ods): {e}")
    })?;
    let sheets: Vec<String> = wb
        .sheets_metadata()
        .iter()
        .filter(|s| s.typ == SheetType::WorkSheet)
        .map(|s| s.name.clone())
        .collect();
    let name = match &opts.sheet {
        Some(s) if sheets.contains(s) => s.clone(),
        Some(s) => {
            let known: Vec<String> = sheets.iter().map(|n| format!("\"{n}\"")).collect();
            return Err(format!(
                "Sheet \"{s}\" not found (the sheets are {})",
                known.join(", ")
            ));
        }
        None => sheets
            .first()
            .cloned()
            .ok_or("No sheets found in the file (is the file corrupt?)")?,
    };
    let cells = wb
        .worksheet_range(&name)
        .map_err(|e| format!("cannot read sheet \"{name}\": {e}"))?;
    layout(cells, opts)
}

/// Everything after opening: range, header, names, types, row count.
fn layout(cells: Range<Data>, opts: &SheetOptions) -> Result<Table, String> {
    let get = |r: u32, c: u32| cells.get_value((r, c)).unwrap_or(&Data::Empty);
    let (sheet_end_row, _) = cells.end().unwrap_or((0, 0));
    let explicit = opts.range.as_deref().map(parse_range).transpose()?;
    let (beg_row, beg_col, end_row, end_col) = match explicit {
        Some(r) => r,
        None => {
            if cells.is_empty() {
                return Err("No rows found in the sheet".into());
            }
            sniff_range(&cells)
        }
    };
    let row_has_value = |r: u32| (beg_col..=end_col).any(|c| !empty(get(r, c)));
    let last_row = end_row.min(sheet_end_row.max(beg_row));
    // The first row of the range holding anything: header candidate.
    let first = (beg_row..=last_row).find(|&r| row_has_value(r));
    let header = match (opts.header, first) {
        (Some(h), Some(_)) => h,
        (None, Some(r)) => {
            (beg_col..=end_col).all(|c| matches!(get(r, c), Data::String(s) if !s.is_empty()))
        }
        (_, None) => false,
    };
    let width = (end_col - beg_col + 1) as usize;
    let (data_row, type_row, mut names) = match (header, first) {
        (true, Some(h)) => {
            let names: Vec<String> = (beg_col..=end_col)
                .map(|c| text(get(h, c)).unwrap_or_default().trim().to_string())
                .collect();
            let next = ((h + 1)..=last_row).find(|&r| row_has_value(r));
            (h + 1, next, names)
        }
        (_, first) => {
            let data_row = if explicit.is_some() {
                beg_row
            } else {
                first.unwrap_or(beg_row)
            };
            let names = (beg_col..=end_col)
                .map(|c| match explicit {
                    Some(_) => column_letters(c),
                    None => format!("{}{}", column_letters(c), first.unwrap_or(beg_row) + 1),
                })
                .collect();
            (data_row, first, names)
        }
    };
    dedup(&mut names);
    let types: Vec<ColType> = (beg_col..=end_col)
        .map(|c| {
            if opts.all_varchar {
                return ColType::Varchar;
            }
            match type_row.map(|r| get(r, c)).unwrap_or(&Data::Empty) {
                Data::Empty => match opts.empty_as_varchar {
                    true => ColType::Varchar,
                    false => ColType::Double,
                },
                d => type_of(d),
            }
        })
        .collect();
    // Data rows: to the first empty row (stop_at_empty), else to the end of
    // the range (explicit) or of the sheet.
    let stop = opts.stop_at_empty.unwrap_or(explicit.is_none());
    let end = if explicit.is_some() && !stop {
        end_row
    } else {
        end_row.min(sheet_end_row)
    };
    let mut rows = if data_row > end {
        0
    } else {
        (end - data_row + 1) as usize
    };
    if stop {
        if let Some(n) = (0..rows).find(|&i| !row_has_value(data_row + i as u32)) {
            rows = n;
        }
    }
    debug_assert_eq!(names.len(), width);
    Ok(Table {
        names,
        types,
        cells,
        first_row: data_row,
        first_col: beg_col,
        rows,
        ignore_errors: opts.ignore_errors,
    })
}

fn empty(d: &Data) -> bool {
    matches!(d, Data::Empty) || matches!(d, Data::String(s) if s.is_empty())
}

/// The first row with a value, from its first value over the values next
/// to it; to the end of the sheet.
fn sniff_range(cells: &Range<Data>) -> (u32, u32, u32, u32) {
    let (start_row, start_col) = cells.start().unwrap_or((0, 0));
    let (end_row, end_col) = cells.end().unwrap_or((0, 0));
    let get = |r: u32, c: u32| cells.get_value((r, c)).unwrap_or(&Data::Empty);
    for r in start_row..=end_row {
        if let Some(c0) = (start_col..=end_col).find(|&c| !empty(get(r, c))) {
            let mut c1 = c0;
            while c1 < end_col && !empty(get(r, c1 + 1)) {
                c1 += 1;
            }
            return (r, c0, MAX_ROW - 1, c1);
        }
    }
    (start_row, start_col, MAX_ROW - 1, end_col)
}

/// `A1:C10`, `A5:Z`, `E:Z`, `1:A100` (0-based, inclusive), as the
/// extension parses them.
fn parse_range(s: &str) -> Result<(u32, u32, u32, u32), String> {
    let bad = || format!("Invalid range '{s}' specified");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let (c0, r0) = parse_cell(a).ok_or_else(bad)?;
    let (c1, r1) = parse_cell(b).ok_or_else(bad)?;
    let (c0, r0) = (c0.unwrap_or(1), r0.unwrap_or(1));
    let (c1, r1) = (c1.unwrap_or(MAX_COL), r1.unwrap_or(MAX_ROW));
    if c0 > c1 || r0 > r1 || c1 > MAX_COL || r1 > MAX_ROW {
        return Err(bad());
    }
    Ok((r0 - 1, c0 - 1, r1 - 1, c1 - 1))
}

/// A cell reference's 1-based column and row; either may be missing, not
/// both.
fn parse_cell(s: &str) -> Option<(Option<u32>, Option<u32>)> {
    let letters = s.bytes().take_while(|b| b.is_ascii_uppercase()).count();
    let (l, d) = s.split_at(letters);
    let digits = d.bytes().take_while(|b| b.is_ascii_digit()).count();
    if d.len() != digits || (l.is_empty() && d.is_empty()) || d.starts_with('0') {
        return None;
    }
    let col = (!l.is_empty()).then(|| {
        l.bytes().fold(0u64, |acc, b| {
            (acc * 26 + u64::from(b - b'A' + 1)).min(u64::from(u32::MAX))
        }) as u32
    });
    let row = if d.is_empty() {
        None
    } else {
        Some(d.parse().ok()?)
    };
    Some((col, row))
}

/// `A`, `Z`, `AA` for 0-based column `c`.
fn column_letters(c: u32) -> String {
    let mut n = c + 1;
    let mut out = Vec::new();
    while n > 0 {
        let m = (n - 1) % 26;
        out.push(b'A' + m as u8);
        n = (n - 1) / 26;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Duplicates (case-insensitive) get `_1`, `_2`…; empty names `C<i>`.
fn dedup(names: &mut [String]) {
    let mut seen: Vec<String> = Vec::new();
    for name in names.iter_mut() {
        let base = name.clone();
        let mut candidate = base.clone();
        let mut k = 0;
        while !candidate.is_empty() && seen.contains(&candidate.to_lowercase()) {
            k += 1;
            candidate = format!("{base}_{k}");
        }
        seen.push(candidate.to_lowercase());
        *name = candidate;
    }
    for (i, name) in names.iter_mut().enumerate() {
        if name.is_empty() {
            *name = format!("C{i}");
        }
    }
}

fn type_of(d: &Data) -> ColType {
    match d {
        Data::Int(_) | Data::Float(_) => ColType::Double,
        Data::Bool(_) => ColType::Boolean,
        Data::DateTime(dt) if dt.is_datetime() => {
            let v = dt.as_f64();
            if v < 1.0 {
                ColType::Time
            } else if v.fract() == 0.0 {
                ColType::Date
            } else {
                ColType::Timestamp
            }
        }
        Data::DateTime(_) => ColType::Double,
        Data::DateTimeIso(s) if s.contains('T') => ColType::Timestamp,
        Data::DateTimeIso(_) => ColType::Date,
        Data::String(_) | Data::DurationIso(_) | Data::Error(_) | Data::Empty => ColType::Varchar,
    }
}

/// A cell as the text a VARCHAR column holds (`None`: NULL).
fn text(d: &Data) -> Option<String> {
    Some(match d {
        Data::Empty => return None,
        Data::String(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        Data::DateTime(dt) => dt.as_f64().to_string(),
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(e) => e.to_string(),
    })
}

/// A number the way DuckDB's (non-strict) VARCHAR → DOUBLE cast reads it.
fn number(d: &Data) -> Result<Option<f64>, String> {
    Ok(Some(match d {
        Data::Empty => return Ok(None),
        Data::Int(i) => *i as f64,
        Data::Float(f) => *f,
        Data::Bool(b) => f64::from(u8::from(*b)),
        Data::DateTime(dt) => dt.as_f64(),
        Data::String(s) if s.trim().is_empty() => return Ok(None),
        other => {
            let t = text(other).unwrap_or_default();
            t.trim()
                .parse::<f64>()
                .map_err(|_| format!("Could not convert string '{t}' to DOUBLE"))?
        }
    }))
}

fn convert(d: &Data, ty: ColType) -> Result<Cell, String> {
    Ok(match ty {
        ColType::Varchar => text(d).map(Cell::Text).unwrap_or(Cell::Null),
        ColType::Double => number(d)?.map(Cell::Double).unwrap_or(Cell::Null),
        ColType::Boolean => match d {
            Data::Empty => Cell::Null,
            Data::Bool(b) => Cell::Bool(*b),
            other => {
                let t = text(other).unwrap_or_default();
                match t.trim().to_ascii_lowercase().as_str() {
                    "" => Cell::Null,
                    "t" | "true" | "y" | "yes" | "1" => Cell::Bool(true),
                    "f" | "false" | "n" | "no" | "0" => Cell::Bool(false),
                    _ => return Err(format!("Could not convert string '{t}' to BOOL")),
                }
            }
        },
        ColType::Date | ColType::Timestamp | ColType::Time => {
            let serial = match d {
                Data::DateTimeIso(s) => return iso(s, ty),
                other => number(other)?,
            };
            match serial {
                None => Cell::Null,
                Some(x) => from_serial(x, ty),
            }
        }
    })
}

/// The extension's serial-number conversion (day 0 = 1899-12-30, seconds
/// rounded when within a millisecond).
fn from_serial(x: f64, ty: ColType) -> Cell {
    let mut secs = x * 86_400.0;
    if (secs - secs.round()).abs() < 1e-3 {
        secs = secs.round();
    }
    let us = ((secs - EPOCH_DAYS * 86_400.0) * 1e6).clamp(i64::MIN as f64, i64::MAX as f64) as i64;
    const DAY_US: i64 = 86_400_000_000;
    match ty {
        ColType::Date => Cell::Date(us.div_euclid(DAY_US) as i32),
        ColType::Time => Cell::Time(us.rem_euclid(DAY_US)),
        _ => Cell::Timestamp(us),
    }
}

/// ISO dates (ods): `2024-01-31` or `2024-01-31T10:00:00`.
fn iso(s: &str, ty: ColType) -> Result<Cell, String> {
    use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let dt = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y-%m-%d").map(|d| d.and_time(NaiveTime::MIN)))
        .map_err(|_| format!("Could not convert string '{s}' to {ty:?}"))?;
    let us = (dt - epoch.and_time(NaiveTime::MIN))
        .num_microseconds()
        .unwrap_or(0);
    Ok(match ty {
        ColType::Date => Cell::Date((dt.date() - epoch).num_days() as i32),
        ColType::Time => Cell::Time(us.rem_euclid(86_400_000_000)),
        _ => Cell::Timestamp(us),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(rows: &[&[Data]]) -> Range<Data> {
        let mut r = Range::new((0, 0), (rows.len() as u32 - 1, rows[0].len() as u32 - 1));
        for (i, row) in rows.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                r.set_value((i as u32, j as u32), v.clone());
            }
        }
        r
    }

    fn s(v: &str) -> Data {
        Data::String(v.into())
    }

    #[test]
    fn ranges_parse_like_the_extension() {
        assert_eq!(parse_range("A1:B2"), Ok((0, 0, 1, 1)));
        assert_eq!(parse_range("A5:Z"), Ok((4, 0, MAX_ROW - 1, 25)));
        assert_eq!(parse_range("E:Z"), Ok((0, 4, MAX_ROW - 1, 25)));
        assert_eq!(parse_range("1:A100"), Ok((0, 0, 99, 0)));
        for bad in ["A1", "a1:b2", "$A$1:B2", "Z1:A5", "A5:A1", "A0:B1", ":"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(26), "AA");
    }

    #[test]
    fn header_names_types_and_stop_at_empty() {
        let cells = range(&[
            &[s("id"), s("name"), s("name"), s("")],
            &[Data::Float(1.0), s("a"), Data::Bool(true), Data::Empty],
            &[Data::Float(2.5), s("b"), Data::Bool(false), Data::Empty],
            &[Data::Empty, Data::Empty, Data::Empty, Data::Empty],
            &[Data::Float(9.0), s("late"), Data::Bool(true), Data::Empty],
        ]);
        let t = layout(cells.clone(), &SheetOptions::default()).unwrap();
        // The run of values in the first row ends at the empty D1.
        assert_eq!(t.names, vec!["id", "name", "name_1"]);
        assert_eq!(
            t.types,
            vec![ColType::Double, ColType::Varchar, ColType::Boolean]
        );
        assert_eq!(t.rows(), 2, "stops at the empty row");
        assert_eq!(t.cell(1, 0), Ok(Cell::Double(2.5)));
        let all = SheetOptions {
            stop_at_empty: Some(false),
            ..Default::default()
        };
        assert_eq!(layout(cells.clone(), &all).unwrap().rows(), 4);
        let nohead = SheetOptions {
            header: Some(false),
            ..Default::default()
        };
        let t = layout(cells.clone(), &nohead).unwrap();
        assert_eq!(t.names, vec!["A1", "B1", "C1"]);
        assert_eq!(t.types, vec![ColType::Varchar; 3]);
        assert_eq!(t.cell(1, 0), Ok(Cell::Text("1".into())));
        assert_eq!(t.cell(1, 2), Ok(Cell::Text("1".into())));
        let ranged = SheetOptions {
            range: Some("A2:B5".into()),
            header: Some(false),
            ..Default::default()
        };
        let t = layout(cells, &ranged).unwrap();
        assert_eq!(t.names, vec!["A", "B"]);
        assert_eq!(t.rows(), 4, "an explicit range reads through empty rows");
        assert_eq!(t.cell(2, 0), Ok(Cell::Null));
    }

    #[test]
    fn casts_fail_or_become_null() {
        let cells = range(&[&[s("x")], &[Data::Float(1.0)], &[s("oops")]]);
        let t = layout(cells.clone(), &SheetOptions::default()).unwrap();
        assert_eq!(
            t.cell(1, 0),
            Err(
                "read_xlsx: Failed to parse cell 'A3': Could not convert string 'oops' to DOUBLE"
                    .into()
            )
        );
        let lax = SheetOptions {
            ignore_errors: true,
            ..Default::default()
        };
        assert_eq!(layout(cells, &lax).unwrap().cell(1, 0), Ok(Cell::Null));
    }

    #[test]
    fn serials_become_dates() {
        // 2020-04-07 09:58:00 is serial 43928.415277777778.
        assert_eq!(
            from_serial(43_928.415_277_777_78, ColType::Timestamp),
            Cell::Timestamp(1_586_253_480_000_000)
        );
        assert_eq!(from_serial(43_295.0, ColType::Date), Cell::Date(17_726));
        assert_eq!(from_serial(0.5, ColType::Time), Cell::Time(43_200_000_000));
    }
}
