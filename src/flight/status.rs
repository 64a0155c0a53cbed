//! Engine errors to gRPC statuses (DuckDB's message is kept verbatim).

use tonic::{Code, Status};

use crate::engine::{EngineError, ErrorClass};

pub fn to_status(e: EngineError) -> Status {
    let code = match e.class {
        ErrorClass::InvalidArgument => Code::InvalidArgument,
        ErrorClass::NotFound => Code::NotFound,
        ErrorClass::AlreadyExists => Code::AlreadyExists,
        ErrorClass::FailedPrecondition | ErrorClass::WrongNode => Code::FailedPrecondition,
        ErrorClass::Aborted => Code::Aborted,
        ErrorClass::ResourceExhausted => Code::ResourceExhausted,
        ErrorClass::PermissionDenied => Code::PermissionDenied,
        ErrorClass::Unauthenticated => Code::Unauthenticated,
        ErrorClass::Cancelled => Code::Cancelled,
        ErrorClass::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorClass::Unavailable => Code::Unavailable,
        ErrorClass::Internal => Code::Internal,
    };
    Status::new(code, e.message)
}

pub fn arrow_status(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("Arrow error: {e}"))
}
