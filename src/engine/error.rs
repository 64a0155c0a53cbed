//! Engine errors: a protocol-neutral class plus DuckDB's message. The Flight
//! layer maps the class to a gRPC code, the HTTP layer to a status code.

use crate::duck::{DuckError, DuckErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Aborted,
    ResourceExhausted,
    PermissionDenied,
    /// No (valid) credentials.
    Unauthenticated,
    Cancelled,
    DeadlineExceeded,
    Unavailable,
    Internal,
    /// A replica could not answer (a write, or a catalog it has not caught
    /// up with yet): the engine retries on the primary. Never reaches a
    /// client as such.
    WrongNode,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub class: ErrorClass,
    pub message: String,
}

impl EngineError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::NotFound, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::PermissionDenied, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Internal, message)
    }
}

/// What a guard trigger says when a client writes the bookkeeping tables.
pub const BOOKKEEPING_REFUSAL: &str =
    "schema __duckflock is the server's own bookkeeping, which clients may not write";

impl From<DuckError> for EngineError {
    fn from(e: DuckError) -> Self {
        use DuckErrorKind::*;
        let class = match e.kind {
            // A table function's refusal to open a file (read_xlsx) comes
            // back from DuckDB as a binder error carrying the sandbox's.
            Binder if e.message.contains("Permission Error: ") => ErrorClass::PermissionDenied,
            // A setting changed through a function (`CALL enable_logging()`)
            // meets DuckDB's `lock_configuration`, which reports it as input.
            InvalidInput if e.message.contains("the configuration has been locked") => {
                ErrorClass::PermissionDenied
            }
            // A guard trigger of the bookkeeping tables (`capture::guard`).
            InvalidInput if e.message.contains(BOOKKEEPING_REFUSAL) => ErrorClass::PermissionDenied,
            Parser | Binder | Conversion | InvalidInput | NotImplemented => {
                ErrorClass::InvalidArgument
            }
            // DuckDB uses one class for missing and duplicate catalog entries.
            Catalog if e.message.contains("does not exist") => ErrorClass::NotFound,
            Catalog if e.message.contains("already exists") => ErrorClass::AlreadyExists,
            Catalog => ErrorClass::InvalidArgument,
            // A duplicate key is an attempt to create what already exists;
            // other violations (NOT NULL, CHECK, FOREIGN KEY) are preconditions.
            Constraint if e.message.to_ascii_lowercase().contains("duplicate key") => {
                ErrorClass::AlreadyExists
            }
            Constraint => ErrorClass::FailedPrecondition,
            Transaction => ErrorClass::Aborted,
            OutOfMemory => ErrorClass::ResourceExhausted,
            Permission => ErrorClass::PermissionDenied,
            Interrupt => ErrorClass::Cancelled,
            Io | Internal | Other => ErrorClass::Internal,
        };
        EngineError::new(class, e.message)
    }
}

pub type EngineResult<T> = Result<T, EngineError>;
