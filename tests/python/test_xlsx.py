"""Spreadsheets in place: read_xlsx / read_excel and the replacement scan
(`FROM 'book.xlsx'`) behave like DuckDB's excel extension (sheet, range,
header, names, types from the row after the header, stop_at_empty,
ignore_errors, all_varchar, empty_as_varchar), join with CSV, Parquet and
JSON in one statement, load into tables that every replica receives as rows,
and stay inside the files dir. Real server; the spreadsheets are written
with openpyxl here, and every expected value below is written out by hand
from those files (what the excel extension gives for them). The PyPI duckdb
cannot load the excel extension offline, so in-process DuckDB is only used
for the CSV, Parquet and JSON side and to inspect the stopped server's
files.

Not tested (the server approximates the extension there): header cells
absent from the XML inside a sniffed header run, text cells reading
TRUE/FALSE, VARCHAR numbers whose raw text is not their shortest form,
datetimes at midnight in a column's type row, and text after a range's
second cell."""

import datetime as dt
import os
import random
import signal
import zipfile
from types import SimpleNamespace

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import duckdb
import openpyxl
import pyarrow as pa
import pytest

import conftest
from conftest import action, start_server, stop
from flight_raw import Client
from replicas import compare_month

# ADBC statements left open by a stopped server complain when collected.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

MONTH = "2026-05"
# DuckDB's own refusal of a file outside allowed_directories.
DENIED = "file system operations are disabled by configuration"
# A line the secret workbooks hold; it never appears in an answer.
SECRET = "top secret payload"


# ---------------------------------------------------------------- helpers


def adbc(uri, month=MONTH, autocommit=True):
    return conftest.adbc(uri, month, autocommit)


def sync(uri, month=MONTH):
    return conftest.sync(uri, month)


def table(cur, sql):
    cur.execute(sql)
    return cur.fetch_arrow_table()


def rows(cur, sql):
    """A query through the server, as a list of dicts."""
    return table(cur, sql).to_pylist()


def refused(cur, sql):
    """The message of the error the server answers `sql` with."""
    with pytest.raises(adbc_driver_manager.Error) as e:
        cur.execute(sql)
        cur.fetch_arrow_table()
    return str(e.value)


def duck(sql):
    """Runs `sql` in a throwaway in-process DuckDB (to write files)."""
    con = duckdb.connect()
    con.execute(sql)
    con.close()


def workbook(path, sheets):
    """An .xlsx with one worksheet per (name, rows) in order; a row is a
    list of values (None: no cell) or a dict {column letter: value}."""
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, content in sheets:
        ws = wb.create_sheet(name)
        for i, row in enumerate(content, start=1):
            if isinstance(row, dict):
                for col, v in row.items():
                    ws[f"{col}{i}"] = v
            else:
                for j, v in enumerate(row, start=1):
                    if v is not None:
                        ws.cell(row=i, column=j, value=v)
    wb.save(path)


# ------------------------------------------------------- the spreadsheets


def make_book(path):
    """book.xlsx: 'Sales' (the first sheet) and 'Notes' (text only)."""
    workbook(path, [
        ("Sales", [
            ["id", "product", "price", "sold", "when", "day"],
            [1, "apple", 2.5, True, dt.datetime(2024, 1, 15, 10, 30), dt.date(2024, 1, 15)],
            [2, "pear", 0.75, False, dt.datetime(2024, 2, 29, 0, 0), dt.date(2024, 2, 29)],
            [3, "fig", 10, True, dt.datetime(2023, 12, 31, 22, 30), dt.date(1999, 12, 31)],
            [4, "kiwi", 1.25, False, dt.datetime(2000, 1, 1, 12, 0), dt.date(2000, 1, 1)],
            [5, "plum", 3.5, True, dt.datetime(1970, 1, 1, 6, 0), dt.date(1970, 1, 1)],
        ]),
        ("Notes", [
            ["topic", "text"],
            ["a", "alpha"],
            ["b", "beta"],
            ["c", "gamma"],
        ]),
    ])


def make_shapes(path):
    """shapes.xlsx: empty rows, an offset table, duplicate and empty header
    names, a missing cell in the type row."""
    workbook(path, [
        ("Gaps", [
            ["k", "v"],
            [1, "a"],
            [2, "b"],
            [],  # row 4: no cells at all
            [3, "c"],
            [4, "d"],
        ]),
        ("Offset", [
            {},
            {},
            {"C": "k", "D": "v"},
            {"B": "left", "C": 1, "D": "one", "E": "right"},
            {"C": 2, "D": "two"},
        ]),
        ("Dups", [
            ["id", "Name", "name", "NAME", "id", " qty "],
            [1, "x", "y", "z", 2, 3],
        ]),
        ("Blank", [
            ["x", None, "z"],
            [1, 2, 3],
        ]),
        ("Sparse", [
            ["a", "b"],
            [1, None],
            [2, "text"],
            [3, None],
        ]),
    ])


def make_types(path):
    """types.xlsx: cells that do not fit their column's type."""
    workbook(path, [
        ("Qty", [
            ["name", "qty"],
            ["a", 1],
            ["b", 2],
            ["c", "oops"],
            ["d", 4],
            ["e", True],
        ]),
        ("Flags", [
            ["flag"],
            [True],
            [False],
            ["maybe"],
            [1],
            [0],
        ]),
        ("Dates", [
            ["d"],
            [dt.date(2024, 1, 1)],
            ["soon"],
            [dt.date(2024, 1, 3)],
        ]),
    ])


def make_times(path):
    """times.xlsx: a TIME column (number format 21, h:mm:ss) and a
    TIMESTAMP column, with seconds (serials that are not exact binary
    fractions, read to the second)."""
    workbook(path, [
        ("Clock", [
            ["at", "stamp"],
            [dt.time(9, 58, 0), dt.datetime(2020, 4, 7, 9, 58, 0)],
            [dt.time(23, 59, 59), dt.datetime(2023, 12, 31, 23, 59, 59)],
            [dt.time(0, 0, 1), dt.datetime(2024, 1, 1, 0, 0, 1)],
        ]),
    ])


ODS_MIME = "application/vnd.oasis.opendocument.spreadsheet"


def ods_cell(v):
    if isinstance(v, bool):
        b = "true" if v else "false"
        return (f'<table:table-cell office:value-type="boolean" office:boolean-value="{b}">'
                f"<text:p>{b.upper()}</text:p></table:table-cell>")
    if isinstance(v, (int, float)):
        return (f'<table:table-cell office:value-type="float" office:value="{v}">'
                f"<text:p>{v}</text:p></table:table-cell>")
    if isinstance(v, dt.date):
        return (f'<table:table-cell office:value-type="date" office:date-value="{v.isoformat()}">'
                f"<text:p>{v.isoformat()}</text:p></table:table-cell>")
    return f'<table:table-cell office:value-type="string"><text:p>{v}</text:p></table:table-cell>'


def make_ods(path, sheets):
    """A minimal OpenDocument spreadsheet (mimetype, manifest, content.xml;
    no whitespace between the table elements)."""
    body = "".join(
        f'<table:table table:name="{name}">'
        + "".join("<table:table-row>" + "".join(ods_cell(v) for v in row) + "</table:table-row>"
                  for row in content)
        + "</table:table>"
        for name, content in sheets)
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
        f"<office:body><office:spreadsheet>{body}</office:spreadsheet></office:body>"
        "</office:document-content>")
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
        'manifest:version="1.2">'
        f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{ODS_MIME}"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), ODS_MIME, compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/manifest.xml", manifest, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("content.xml", content, compress_type=zipfile.ZIP_DEFLATED)


def make_broken(files, data, outside):
    """Files that are not spreadsheets, and workbooks outside the files dir
    (and links to them from inside)."""
    with open(f"{files}/bad.xlsx", "wb") as f:
        f.write(random.Random(7).randbytes(4096))
    open(f"{files}/empty.xlsx", "wb").close()
    with open(f"{files}/book.xlsx", "rb") as f:
        whole = f.read()
    with open(f"{files}/truncated.xlsx", "wb") as f:
        f.write(whole[: len(whole) // 2])
    with zipfile.ZipFile(f"{files}/notbook.xlsx", "w") as z:
        z.writestr("hello.txt", "a zip, not a workbook")
    os.makedirs(outside, exist_ok=True)
    secret = [("Secret", [["s"], [SECRET]])]
    workbook(f"{outside}/secret.xlsx", secret)
    workbook(f"{data}/up.xlsx", secret)
    os.symlink(f"{outside}/secret.xlsx", f"{files}/link.xlsx")
    os.makedirs(f"{files}/sub", exist_ok=True)


# Every value below is what the excel extension reads from make_book's
# 'Sales' sheet: numbers DOUBLE, 'yyyy-mm-dd h:mm:ss' cells TIMESTAMP,
# 'yyyy-mm-dd' cells DATE.
SALES_NAMES = ["id", "product", "price", "sold", "when", "day"]
SALES_TYPES = [pa.float64(), pa.string(), pa.float64(), pa.bool_(), pa.timestamp("us"), pa.date32()]
SALES_DUCK_TYPES = {"id": "DOUBLE", "product": "VARCHAR", "price": "DOUBLE", "sold": "BOOLEAN",
                    "when": "TIMESTAMP", "day": "DATE"}
SALES = [
    {"id": 1.0, "product": "apple", "price": 2.5, "sold": True,
     "when": dt.datetime(2024, 1, 15, 10, 30), "day": dt.date(2024, 1, 15)},
    {"id": 2.0, "product": "pear", "price": 0.75, "sold": False,
     "when": dt.datetime(2024, 2, 29, 0, 0), "day": dt.date(2024, 2, 29)},
    {"id": 3.0, "product": "fig", "price": 10.0, "sold": True,
     "when": dt.datetime(2023, 12, 31, 22, 30), "day": dt.date(1999, 12, 31)},
    {"id": 4.0, "product": "kiwi", "price": 1.25, "sold": False,
     "when": dt.datetime(2000, 1, 1, 12, 0), "day": dt.date(2000, 1, 1)},
    {"id": 5.0, "product": "plum", "price": 3.5, "sold": True,
     "when": dt.datetime(1970, 1, 1, 6, 0), "day": dt.date(1970, 1, 1)},
]
# header := false: the header row is the type row, so every column is
# VARCHAR; numbers are the cells' raw text (date cells their serial number),
# booleans 1/0.
SALES_TEXT = [
    ("id", "product", "price", "sold", "when", "day"),
    ("1", "apple", "2.5", "1", "45306.4375", "45306"),
    ("2", "pear", "0.75", "0", "45351", "45351"),
    ("3", "fig", "10", "1", "45291.9375", "36525"),
    ("4", "kiwi", "1.25", "0", "36526.5", "36526"),
    ("5", "plum", "3.5", "1", "25569.25", "25569"),
]


# --------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One server for the reading tests: the default files dir
    (<data-dir>/files), two replicas (reads run there)."""
    root = tmp_path_factory.mktemp("xlsx")
    data = root / "data"
    outside = root / "outside"
    proc, uri = start_server(str(data), "--replicas", "2")
    try:
        files = data / "files"
        assert files.is_dir(), "the default files dir is created at start-up"
        make_book(f"{files}/book.xlsx")
        with open(f"{files}/book.xlsx", "rb") as src:
            whole = src.read()
        for copy in ("Upper.XLSX", "macro.xlsm"):
            with open(f"{files}/{copy}", "wb") as dst:
                dst.write(whole)
        make_shapes(f"{files}/shapes.xlsx")
        make_types(f"{files}/types.xlsx")
        make_times(f"{files}/times.xlsx")
        make_ods(f"{files}/stock.ods", [
            ("Inventory", [
                ["item", "count", "active", "since"],
                ["bolt", 12, True, dt.date(2024, 3, 1)],
                ["nut", 7.5, False, dt.date(2023, 12, 24)],
                ["washer", 100, True, dt.date(2020, 2, 29)],
            ]),
            ("Other", [["x"], ["y"]]),
        ])
        make_broken(files, data, outside)
        conn = adbc(uri)
        cur = conn.cursor()
        cur.execute("CREATE TABLE marker AS SELECT 1 AS i")
        sync(uri)
        cur.close()
        conn.close()
        yield SimpleNamespace(uri=uri, proc=proc, files=files, data=data, outside=outside)
    finally:
        stop(proc)


@pytest.fixture
def cur(srv):
    conn = adbc(srv.uri)
    c = conn.cursor()
    yield c
    try:
        c.close()
        conn.close()
    except Exception:
        pass


def still_serving(srv, cur):
    """The server is up and answers the next query normally."""
    assert srv.proc.poll() is None, "the server exited"
    assert rows(cur, "SELECT count(*) AS n, sum(id) AS s FROM read_xlsx('book.xlsx')") == [{"n": 5, "s": 15.0}]


# --------------------------------------------------------------- the tests


def test_first_sheet_names_types_and_values(srv, cur):
    files = srv.files
    for src in [
        "read_xlsx('book.xlsx')",
        "read_excel('book.xlsx')",
        "'book.xlsx'",
        f"read_xlsx('{files}/book.xlsx')",
        f"'{files}/book.xlsx'",
        "read_xlsx('sub/../book.xlsx')",
        "read_xlsx('book.xlsx', sheet := 'Sales')",
        "read_xlsx('book.xlsx', header := true)",
    ]:
        t = table(cur, f"SELECT * FROM {src}")
        assert t.column_names == SALES_NAMES, src
        assert t.schema.types == SALES_TYPES, (src, t.schema)
        assert t.to_pylist() == SALES, src
    got = rows(cur, """SELECT typeof(id) AS id, typeof(product) AS product, typeof(price) AS price,
                              typeof(sold) AS sold, typeof("when") AS "when", typeof("day") AS "day"
                       FROM 'book.xlsx' LIMIT 1""")
    assert got == [SALES_DUCK_TYPES]
    # The values are typed: arithmetic, filters and date functions work on them.
    got = rows(cur, """SELECT product, price * 2 AS p2, year("when") AS y, "day" + 1 AS next_day
                       FROM read_xlsx('book.xlsx') WHERE sold ORDER BY id""")
    assert got == [
        {"product": "apple", "p2": 5.0, "y": 2024, "next_day": dt.date(2024, 1, 16)},
        {"product": "fig", "p2": 20.0, "y": 2023, "next_day": dt.date(2000, 1, 1)},
        {"product": "plum", "p2": 7.0, "y": 1970, "next_day": dt.date(1970, 1, 2)},
    ]
    got = rows(cur, """SELECT count(*) AS n, sum(price) AS s, min("when") AS lo, max("day") AS hi
                       FROM 'book.xlsx'""")
    assert got == [{"n": 5, "s": 18.0, "lo": dt.datetime(1970, 1, 1, 6, 0), "hi": dt.date(2024, 2, 29)}]


def test_other_spreadsheet_names_and_ods(srv, cur):
    # The replacement scan takes the extension case-insensitively, and
    # .xlsm (an xlsx with macros) too.
    for src in ["'Upper.XLSX'", "'macro.xlsm'", "read_xlsx('macro.xlsm')"]:
        t = table(cur, f"SELECT * FROM {src}")
        assert t.column_names == SALES_NAMES, src
        assert t.schema.types == SALES_TYPES, src
        assert t.to_pylist() == SALES, src
    # An OpenDocument spreadsheet, by the same rules.
    for src in ["'stock.ods'", "read_xlsx('stock.ods')", "read_excel('stock.ods', sheet := 'Inventory')"]:
        t = table(cur, f"SELECT * FROM {src}")
        assert t.column_names == ["item", "count", "active", "since"], src
        assert t.schema.types == [pa.string(), pa.float64(), pa.bool_(), pa.date32()], (src, t.schema)
        assert t.to_pylist() == [
            {"item": "bolt", "count": 12.0, "active": True, "since": dt.date(2024, 3, 1)},
            {"item": "nut", "count": 7.5, "active": False, "since": dt.date(2023, 12, 24)},
            {"item": "washer", "count": 100.0, "active": True, "since": dt.date(2020, 2, 29)},
        ], src
    assert rows(cur, "SELECT * FROM read_xlsx('stock.ods', sheet := 'Other')") == [{"x": "y"}]


def test_time_and_timestamp_cells(srv, cur):
    t = table(cur, "SELECT * FROM read_xlsx('times.xlsx')")
    assert t.column_names == ["at", "stamp"]
    assert t.schema.types == [pa.time64("us"), pa.timestamp("us")], t.schema
    assert t.to_pylist() == [
        {"at": dt.time(9, 58, 0), "stamp": dt.datetime(2020, 4, 7, 9, 58, 0)},
        {"at": dt.time(23, 59, 59), "stamp": dt.datetime(2023, 12, 31, 23, 59, 59)},
        {"at": dt.time(0, 0, 1), "stamp": dt.datetime(2024, 1, 1, 0, 0, 1)},
    ]


def test_sheet_option(srv, cur):
    t = table(cur, "SELECT * FROM read_xlsx('book.xlsx', sheet := 'Notes')")
    assert t.column_names == ["topic", "text"]
    assert t.schema.types == [pa.string(), pa.string()]
    assert t.to_pylist() == [{"topic": "a", "text": "alpha"}, {"topic": "b", "text": "beta"},
                             {"topic": "c", "text": "gamma"}]
    # Another workbook's first sheet is its default.
    assert rows(cur, "SELECT * FROM 'shapes.xlsx'") == [{"k": 1.0, "v": "a"}, {"k": 2.0, "v": "b"}]
    for sql, name in [
        ("SELECT * FROM read_xlsx('book.xlsx', sheet := 'Nope')", "Nope"),
        # Sheet names match exactly (case-sensitive).
        ("SELECT * FROM read_xlsx('book.xlsx', sheet := 'notes')", "notes"),
        ("SELECT * FROM read_excel('stock.ods', sheet := 'Nope')", "Nope"),
    ]:
        msg = refused(cur, sql)
        assert f'Sheet "{name}" not found' in msg, msg
        still_serving(srv, cur)


def test_header_and_range(srv, cur):
    # header := false: names are the first row's cell references, every
    # column is VARCHAR (typed from that row of text), the header row is data.
    t = table(cur, "SELECT * FROM read_xlsx('book.xlsx', header := false)")
    assert t.column_names == ["A1", "B1", "C1", "D1", "E1", "F1"]
    assert t.schema.types == [pa.string()] * 6
    assert [tuple(r.values()) for r in t.to_pylist()] == SALES_TEXT
    # A sniffed range that does not start at A1: the first row holding a
    # value, from its first value over the values next to it (B4 and E4 lie
    # outside and are ignored).
    t = table(cur, "SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Offset')")
    assert t.column_names == ["k", "v"]
    assert t.schema.types == [pa.float64(), pa.string()]
    assert t.to_pylist() == [{"k": 1.0, "v": "one"}, {"k": 2.0, "v": "two"}]
    t = table(cur, "SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Offset', header := false)")
    assert t.column_names == ["C3", "D3"]
    assert t.schema.types == [pa.string(), pa.string()]
    assert t.to_pylist() == [{"C3": "k", "D3": "v"}, {"C3": "1", "D3": "one"}, {"C3": "2", "D3": "two"}]

    # An explicit range without a header: column letters, exactly its rows.
    t = table(cur, "SELECT * FROM read_xlsx('book.xlsx', range := 'B2:C4', header := false)")
    assert t.column_names == ["B", "C"]
    assert t.schema.types == [pa.string(), pa.float64()]
    assert t.to_pylist() == [{"B": "apple", "C": 2.5}, {"B": "pear", "C": 0.75}, {"B": "fig", "C": 10.0}]
    # The header is sniffed inside the range: row 1 is all text.
    t = table(cur, "SELECT * FROM read_xlsx('book.xlsx', range := 'A1:C3')")
    assert t.column_names == ["id", "product", "price"]
    assert t.schema.types == [pa.float64(), pa.string(), pa.float64()]
    assert t.to_pylist() == [{"id": 1.0, "product": "apple", "price": 2.5},
                             {"id": 2.0, "product": "pear", "price": 0.75}]
    # ... and not found where the range's first row holds a number.
    t = table(cur, "SELECT * FROM read_xlsx('book.xlsx', range := 'A2:B3')")
    assert t.column_names == ["A", "B"]
    assert t.schema.types == [pa.float64(), pa.string()]
    assert t.to_pylist() == [{"A": 1.0, "B": "apple"}, {"A": 2.0, "B": "pear"}]
    # Whole columns, read to the first empty row.
    t = table(cur, "SELECT * FROM read_xlsx('book.xlsx', range := 'E:F', stop_at_empty := true)")
    assert t.column_names == ["when", "day"]
    assert t.schema.types == [pa.timestamp("us"), pa.date32()]
    assert t.to_pylist() == [{"when": r["when"], "day": r["day"]} for r in SALES]
    # 'A5:B' runs to the sheet's last row (1048576): rows 5 and 6, then
    # all-NULL rows.
    got = rows(cur, """SELECT count(*) AS n, count("A") AS a, sum("A") AS s, string_agg("B", ',' ORDER BY "A") AS b
                       FROM read_xlsx('book.xlsx', range := 'A5:B')""")
    assert got == [{"n": 1048572, "a": 2, "s": 9.0, "b": "kiwi,plum"}]
    assert rows(cur, "SELECT * FROM read_xlsx('book.xlsx', range := 'A5:B') LIMIT 3") == [
        {"A": 4.0, "B": "kiwi"}, {"A": 5.0, "B": "plum"}, {"A": None, "B": None}]

    for bad in ["A1", "a1:c3", "$A$1:$C$3", "C3:A1", "A3:A1", "C1:A3", "A0:B2"]:
        msg = refused(cur, f"SELECT * FROM read_xlsx('book.xlsx', range := '{bad}')")
        assert f"Invalid range '{bad}'" in msg, msg
        still_serving(srv, cur)


def test_stop_at_empty(srv, cur):
    # Without a range the first empty row (row 4) ends the table.
    assert rows(cur, "SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Gaps')") == [
        {"k": 1.0, "v": "a"}, {"k": 2.0, "v": "b"}]
    assert rows(cur, "SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Gaps', stop_at_empty := true)") == [
        {"k": 1.0, "v": "a"}, {"k": 2.0, "v": "b"}]
    through = [{"k": 1.0, "v": "a"}, {"k": 2.0, "v": "b"}, {"k": None, "v": None},
               {"k": 3.0, "v": "c"}, {"k": 4.0, "v": "d"}]
    # stop_at_empty := false: the empty row is an all-NULL row, and the
    # table ends with the sheet.
    assert rows(cur, "SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Gaps', stop_at_empty := false)") == through
    # An explicit range reads through empty rows to its last row, trailing
    # empty rows included...
    assert rows(cur, "SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Gaps', range := 'A1:B6')") == through
    assert rows(cur, "SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Gaps', range := 'A1:B8')") == through + [
        {"k": None, "v": None}, {"k": None, "v": None}]
    # ... unless stop_at_empty is asked for.
    assert rows(cur, """SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Gaps', range := 'A1:B8',
                                               stop_at_empty := true)""") == [
        {"k": 1.0, "v": "a"}, {"k": 2.0, "v": "b"}]
    assert rows(cur, """SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Gaps', range := 'A5:B8',
                                               header := false)""") == [
        {"A": 3.0, "B": "c"}, {"A": 4.0, "B": "d"}, {"A": None, "B": None}, {"A": None, "B": None}]


def test_type_errors_ignore_errors_and_all_varchar(srv, cur):
    for sql, cell, text, target in [
        ("SELECT * FROM read_xlsx('types.xlsx')", "B4", "oops", "DOUBLE"),
        ("SELECT * FROM 'types.xlsx'", "B4", "oops", "DOUBLE"),
        ("SELECT * FROM read_xlsx('types.xlsx', sheet := 'Flags')", "A4", "maybe", "BOOL"),
        # A date column reports the DOUBLE cast of the serial number.
        ("SELECT * FROM read_xlsx('types.xlsx', sheet := 'Dates')", "A3", "soon", "DOUBLE"),
    ]:
        msg = refused(cur, sql)
        want = f"read_xlsx: Failed to parse cell '{cell}': Could not convert string '{text}' to {target}"
        assert want in msg, msg
        still_serving(srv, cur)
    # ignore_errors: what does not fit is NULL; a boolean in a DOUBLE column
    # is 1, numbers 1 and 0 in a BOOLEAN column are true and false.
    t = table(cur, "SELECT * FROM read_xlsx('types.xlsx', ignore_errors := true)")
    assert t.column_names == ["name", "qty"]
    assert t.schema.types == [pa.string(), pa.float64()]
    assert t.to_pylist() == [{"name": "a", "qty": 1.0}, {"name": "b", "qty": 2.0}, {"name": "c", "qty": None},
                             {"name": "d", "qty": 4.0}, {"name": "e", "qty": 1.0}]
    t = table(cur, "SELECT * FROM read_xlsx('types.xlsx', sheet := 'Flags', ignore_errors := true)")
    assert t.schema.types == [pa.bool_()]
    assert t.column("flag").to_pylist() == [True, False, None, True, False]
    t = table(cur, "SELECT * FROM read_xlsx('types.xlsx', sheet := 'Dates', ignore_errors := true)")
    assert t.schema.types == [pa.date32()]
    assert t.column("d").to_pylist() == [dt.date(2024, 1, 1), None, dt.date(2024, 1, 3)]
    # all_varchar: every column VARCHAR, numbers as text, booleans 1/0.
    t = table(cur, "SELECT * FROM read_xlsx('types.xlsx', all_varchar := true)")
    assert t.column_names == ["name", "qty"]
    assert t.schema.types == [pa.string(), pa.string()]
    assert t.to_pylist() == [{"name": "a", "qty": "1"}, {"name": "b", "qty": "2"}, {"name": "c", "qty": "oops"},
                             {"name": "d", "qty": "4"}, {"name": "e", "qty": "1"}]
    t = table(cur, "SELECT * FROM read_xlsx('book.xlsx', all_varchar := true)")
    assert t.column_names == SALES_NAMES
    assert t.schema.types == [pa.string()] * 6
    assert [tuple(r.values()) for r in t.to_pylist()] == SALES_TEXT[1:]


def test_duplicate_and_empty_names_and_empty_as_varchar(srv, cur):
    # Duplicates (case-insensitive) get _1, _2; names are trimmed.
    t = table(cur, "SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Dups')")
    assert t.column_names == ["id", "Name", "name_1", "NAME_2", "id_1", "qty"]
    assert t.schema.types == [pa.float64(), pa.string(), pa.string(), pa.string(), pa.float64(), pa.float64()]
    assert [tuple(r.values()) for r in t.to_pylist()] == [(1.0, "x", "y", "z", 2.0, 3.0)]
    # A forced header with an empty cell: C<i> (0-based column index).
    t = table(cur, "SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Blank', range := 'A1:C2', header := true)")
    assert t.column_names == ["x", "C1", "z"]
    assert t.schema.types == [pa.float64()] * 3
    assert t.to_pylist() == [{"x": 1.0, "C1": 2.0, "z": 3.0}]
    # The same range without a forced header: B1 is empty, so row 1 is no
    # header; it types the columns (an empty cell: DOUBLE).
    t = table(cur, "SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Blank', range := 'A1:C2')")
    assert t.column_names == ["A", "B", "C"]
    assert t.schema.types == [pa.string(), pa.float64(), pa.string()]
    assert t.to_pylist() == [{"A": "x", "B": None, "C": "z"}, {"A": "1", "B": 2.0, "C": "3"}]
    # An empty cell in the type row makes a DOUBLE column, which a later
    # text cell does not fit...
    msg = refused(cur, "SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Sparse')")
    assert "read_xlsx: Failed to parse cell 'B3': Could not convert string 'text' to DOUBLE" in msg, msg
    still_serving(srv, cur)
    # ... unless empty_as_varchar makes it VARCHAR.
    t = table(cur, "SELECT * FROM read_xlsx('shapes.xlsx', sheet := 'Sparse', empty_as_varchar := true)")
    assert t.column_names == ["a", "b"]
    assert t.schema.types == [pa.float64(), pa.string()]
    assert t.to_pylist() == [{"a": 1.0, "b": None}, {"a": 2.0, "b": "text"}, {"a": 3.0, "b": None}]
    # empty_as_varchar changes nothing where the type row has no empty cell.
    t = table(cur, "SELECT * FROM read_xlsx('book.xlsx', empty_as_varchar := true)")
    assert t.schema.types == SALES_TYPES
    assert t.to_pylist() == SALES


# The catalog sheet of the join test, and the same content as in-process
# DuckDB would read it (sku DOUBLE, price DOUBLE, launched DATE).
CATALOG = [(100 + i, f"item {i}", 1 + (i % 5) * 0.25, dt.date(2020, 1, 1) + dt.timedelta(days=37 * i))
           for i in range(12)]

JOINS = [
    """SELECT c.id AS customer, c.name, c.city, o.order_id, o.qty, k.sku, k.label, k.price, k.launched,
              o.qty * k.price AS total, s.carrier
       FROM read_csv('customers.csv') c
       JOIN read_parquet('orders.parquet') o ON o.customer_id = c.id
       JOIN {catalog} k ON k.sku = o.sku
       JOIN read_json('shipments.json') s ON s.order_id = o.order_id
       ORDER BY ALL""",
    """SELECT k.label, c.city, count(*) AS n, sum(o.qty * k.price) AS revenue, min(k.launched) AS first_launch,
              count(s.carrier) AS shipped
       FROM {catalog} k
       JOIN 'orders.parquet' o ON o.sku = k.sku
       JOIN 'customers.csv' c ON c.id = o.customer_id
       LEFT JOIN 'shipments.json' s ON s.order_id = o.order_id
       GROUP BY ALL ORDER BY ALL""",
]


def test_join_across_formats_matches_duckdb(srv, cur):
    files = srv.files
    workbook(f"{files}/catalog.xlsx", [("Catalog", [["sku", "label", "price", "launched"]]
                                        + [list(r) for r in CATALOG])])
    duck(f"""COPY (SELECT i AS id, 'cust ' || i AS name, ['Oslo', 'Lima', 'Zürich'][1 + i % 3] AS city
             FROM range(50) t(i)) TO '{files}/customers.csv' (HEADER)""")
    # customer_id 50..52 and sku 112..114 match nothing.
    duck(f"""COPY (SELECT i AS order_id, (i * 7) % 53 AS customer_id, 100 + i % 15 AS sku, i % 4 + 1 AS qty
             FROM range(400) t(i)) TO '{files}/orders.parquet' (FORMAT parquet)""")
    duck(f"""COPY (SELECT i * 2 AS order_id, ['dhl', 'ups', 'post'][1 + i % 3] AS carrier
             FROM range(250) t(i)) TO '{files}/shipments.json' (FORMAT json)""")
    ref = duckdb.connect()
    ref.execute(f"SET file_search_path = '{files}'")
    ref.register("catalog_ref", pa.table({
        "sku": pa.array([float(r[0]) for r in CATALOG], pa.float64()),
        "label": pa.array([r[1] for r in CATALOG], pa.string()),
        "price": pa.array([r[2] for r in CATALOG], pa.float64()),
        "launched": pa.array([r[3] for r in CATALOG], pa.date32()),
    }))
    try:
        # The workbook is what catalog_ref says it is.
        t = table(cur, "SELECT * FROM 'catalog.xlsx'")
        assert t.schema.types == [pa.float64(), pa.string(), pa.float64(), pa.date32()]
        assert t.to_pylist()[:2] == [
            {"sku": 100.0, "label": "item 0", "price": 1.0, "launched": dt.date(2020, 1, 1)},
            {"sku": 101.0, "label": "item 1", "price": 1.25, "launched": dt.date(2020, 2, 7)},
        ]
        want = ref.sql("SELECT * FROM catalog_ref").to_arrow_table()
        assert t.column_names == want.column_names
        assert t.to_pylist() == want.to_pylist()
        for sql in JOINS:
            want = ref.sql(sql.format(catalog="catalog_ref")).to_arrow_table()
            assert want.num_rows > 10, sql
            for catalog in ["read_xlsx('catalog.xlsx')", "'catalog.xlsx'"]:
                got = table(cur, sql.format(catalog=catalog))
                assert got.column_names == want.column_names
                assert got.schema.types == want.schema.types, (got.schema, want.schema)
                assert got.to_pylist() == want.to_pylist(), catalog
        # Not vacuous: unmatched orders and unshipped orders exist.
        n = ref.sql(JOINS[0].format(catalog="catalog_ref")).fetchall()
        assert 0 < len(n) < 400
    finally:
        ref.close()


def test_corrupt_files_and_escapes_are_errors(srv, cur):
    files, data, outside = srv.files, srv.data, srv.outside
    for name in ["bad.xlsx", "empty.xlsx", "truncated.xlsx", "notbook.xlsx", "missing.xlsx"]:
        for sql in [f"SELECT * FROM read_xlsx('{name}')", f"SELECT * FROM '{name}'"]:
            msg = refused(cur, sql)
            assert name in msg, msg
            still_serving(srv, cur)
    out_rel = os.path.relpath(f"{outside}/secret.xlsx", files)  # ../../outside/secret.xlsx
    for sql in [
        f"SELECT * FROM read_xlsx('{outside}/secret.xlsx')",
        f"SELECT * FROM read_excel('{outside}/secret.xlsx')",
        f"SELECT * FROM '{outside}/secret.xlsx'",
        f"SELECT * FROM read_xlsx('{out_rel}')",
        f"SELECT * FROM read_xlsx('sub/../{out_rel}', sheet := 'Secret')",
        # The data dir is one '..' away from the default files dir.
        "SELECT * FROM read_xlsx('../up.xlsx')",
        "SELECT * FROM '../up.xlsx'",
        f"SELECT * FROM read_xlsx('{data}/up.xlsx')",
        f"SELECT * FROM read_xlsx('{files}/../up.xlsx')",
        # A symlink inside the files dir that leads out.
        "SELECT * FROM read_xlsx('link.xlsx')",
        "SELECT * FROM 'link.xlsx'",
        # The rest of the machine.
        "SELECT * FROM read_xlsx('/etc/passwd')",
    ]:
        msg = refused(cur, sql)
        assert DENIED in msg, f"{sql}: {msg}"
        assert SECRET not in msg, msg
        still_serving(srv, cur)
    # A write that reads outside is refused too and leaves nothing behind.
    msg = refused(cur, f"CREATE TABLE stolen AS SELECT * FROM read_xlsx('{outside}/secret.xlsx')")
    assert DENIED in msg, msg
    assert rows(cur, "SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'stolen'") == [{"n": 0}]
    still_serving(srv, cur)


def test_tables_made_from_a_workbook_reach_every_replica(tmp_path):
    replicas = 3
    data = tmp_path / "data"
    proc, uri = start_server(str(data), "--replicas", str(replicas))
    try:
        files = data / "files"
        make_book(f"{files}/book.xlsx")
        conn = adbc(uri)
        cur = conn.cursor()
        cur.execute("CREATE TABLE sales AS SELECT * FROM read_xlsx('book.xlsx')")
        cur.execute("CREATE TABLE notes AS SELECT * FROM read_xlsx('book.xlsx', sheet := 'Notes')")
        cur.execute("INSERT INTO sales SELECT * FROM 'book.xlsx' WHERE sold")
        # A replica never reads the file: it is gone before they catch up.
        os.remove(f"{files}/book.xlsx")
        cur.execute("INSERT INTO notes VALUES ('d', 'delta')")
        sync(uri)
        assert rows(cur, "SELECT count(*) AS n, sum(id) AS s FROM sales") == [{"n": 8, "s": 24.0}]
        assert rows(cur, "SELECT count(*) AS n FROM notes") == [{"n": 4}]
        cur.close()
        conn.close()
    finally:
        stop(proc)
    month_dir = os.path.join(data, MONTH)
    assert compare_month(month_dir, replicas) == []
    con = duckdb.connect()
    con.execute(f"ATTACH '{os.path.join(month_dir, 'node_0.db')}' AS p (READ_ONLY)")
    try:
        assert con.execute("""SELECT column_name, data_type FROM duckdb_columns()
                              WHERE database_name = 'p' AND table_name = 'sales'
                              ORDER BY column_index""").fetchall() == list(SALES_DUCK_TYPES.items())
        assert con.execute("SELECT count(*) FROM p.sales").fetchone()[0] == 8
        assert con.execute("SELECT count(*) FROM p.notes").fetchone()[0] == 4
        got = con.execute('SELECT id, product, price, sold, "when", "day" FROM p.sales ORDER BY id, sold').fetchall()
        want = sorted([tuple(r.values()) for r in SALES] + [tuple(r.values()) for r in SALES if r["sold"]],
                      key=lambda r: r[0])
        assert got == want
    finally:
        con.close()
