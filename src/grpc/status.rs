//! The only mapping from [`Error`] to a gRPC status in the crate: its code, and the message a
//! client gets. Server faults ([`Error::Internal`]: I/O, tensors, the data loader, SQLite, a
//! panicked job thread) reach the client as a generic message; their detail is logged here.
//! Bad spec values travel as `google.rpc.BadRequest` field violations. The REST binding of the
//! inference protocol answers with the HTTP status of [`http_status`].

use tonic::{Code, Status};

use crate::Error;

/// What an INTERNAL status says to the client (the detail is in the server log).
pub const INTERNAL_MESSAGE: &str = "internal error; the server log has the details";

impl Error {
    /// The gRPC status code of this error.
    pub fn code(&self) -> Code {
        match self {
            Error::Invalid { .. } | Error::Problems(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::Conflict(_) => Code::AlreadyExists,
            Error::Precondition { .. } => Code::FailedPrecondition,
            Error::Overloaded(_) => Code::ResourceExhausted,
            Error::Deadline(_) => Code::DeadlineExceeded,
            Error::Unavailable { .. } => Code::Unavailable,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Denied(_) => Code::PermissionDenied,
            Error::Internal { .. } => Code::Internal,
        }
    }
}

/// The code and the message a client gets for `err`; an INTERNAL one is logged with its
/// detail and answered with [`INTERNAL_MESSAGE`].
pub fn code_and_message(err: &Error) -> (Code, String) {
    let code = err.code();
    if code == Code::Internal {
        tracing::error!(error = %err, "internal error");
        return (code, INTERNAL_MESSAGE.to_string());
    }
    (code, err.to_string())
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let (code, msg) = code_and_message(&err);
        let violations = err.field_violations();
        if violations.is_empty() {
            return Status::new(code, msg);
        }
        let mut details = tonic_types::ErrorDetails::new();
        for (field, description) in violations {
            details.add_bad_request_violation(field, description);
        }
        <Status as tonic_types::StatusExt>::with_error_details(code, msg, details)
    }
}

/// The HTTP status the REST binding answers a gRPC code with.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable | Code::Cancelled => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}
