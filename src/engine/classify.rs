//! What a statement is, decided by DuckDB's parser (the prepared statement's
//! type), never by looking at the SQL text.

use crate::duck::StatementType;

use super::error::EngineError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// Reads only: may run on any node of the month.
    Read,
    /// Changes data or schema: runs on the month's primary.
    Write,
    /// BEGIN / COMMIT / ROLLBACK in SQL.
    Transaction,
    /// Refused for every client.
    Forbidden(&'static str),
}

pub fn classify(t: StatementType) -> StatementKind {
    use StatementType::*;
    match t {
        Select | Explain | Call | Pragma => StatementKind::Read,
        Insert | Update | Delete | MergeInto | Create | CreateFunc | Alter | Drop | Multi
        | Analyze | Vacuum => StatementKind::Write,
        Transaction => StatementKind::Transaction,
        Attach | Detach => {
            StatementKind::Forbidden("ATTACH/DETACH is not allowed: each month is its own catalog")
        }
        Load | UpdateExtensions => {
            StatementKind::Forbidden("INSTALL/LOAD of extensions is not allowed")
        }
        Set | VariableSet => {
            StatementKind::Forbidden("changing server settings with SET/RESET is not allowed")
        }
        // DuckDB's allowed_directories cannot tell reads from writes: a
        // COPY … TO could overwrite the files users query in place.
        Copy | CopyDatabase | Export => StatementKind::Forbidden(
            "COPY/EXPORT is not allowed through SQL (it could write into the files dirs, \
             which SQL may only read): write a query's result with the `export` action \
             (Flight SQL DoAction, or POST /api/v1/export) into the export dir; read files \
             in place with read_csv/read_parquet/read_json/read_xlsx or FROM 'file', and \
             load them with CREATE TABLE … AS or INSERT … SELECT FROM read_…",
        ),
        Prepare | Execute => StatementKind::Forbidden(
            "SQL PREPARE/EXECUTE is not allowed: use Flight SQL prepared statements",
        ),
        Other => StatementKind::Forbidden("this statement type is not supported"),
    }
}

/// The error for a statement kind a caller may not run.
pub fn refuse(kind: StatementKind) -> Option<EngineError> {
    match kind {
        StatementKind::Forbidden(why) => Some(EngineError::forbidden(why)),
        StatementKind::Transaction => Some(EngineError::invalid(
            "BEGIN/COMMIT/ROLLBACK in SQL are not supported: use Flight SQL transactions (BeginTransaction/EndTransaction, e.g. ADBC autocommit=False)",
        )),
        _ => None,
    }
}
