//! Errors of the runtime, each with the C status it maps to.

use std::fmt;

/// Status codes of the C API. The numbers are fixed forever; new codes are only appended.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum piddm_status {
    PIDDM_OK = 0,
    /// A required pointer argument was NULL.
    PIDDM_ERR_NULL = 1,
    /// An argument is out of range (batch 0, negative steps, unknown device, ...).
    PIDDM_ERR_INVALID_ARGUMENT = 2,
    /// A buffer length does not match the model's shape and the batch.
    PIDDM_ERR_SIZE = 3,
    /// An input holds NaN or Inf.
    PIDDM_ERR_NONFINITE = 4,
    /// A file could not be read.
    PIDDM_ERR_IO = 5,
    /// A file is not a (complete, compatible) PIDDM model.
    PIDDM_ERR_FORMAT = 6,
    /// ONNX Runtime could not be loaded or failed.
    PIDDM_ERR_RUNTIME = 7,
    /// The requested device (CUDA) is not available.
    PIDDM_ERR_DEVICE = 8,
    /// An internal error (a bug): caught at the boundary instead of crashing the caller.
    PIDDM_ERR_PANIC = 9,
    /// The caller was built against another layout of a piddm struct (its `size` field is not one
    /// this library knows), or against an earlier ABI: rebuild it against this piddm.h.
    PIDDM_ERR_ABI = 10,
}

pub use piddm_status as Status;

#[derive(Debug, Clone)]
pub struct Error {
    pub status: Status,
    pub message: String,
}

impl Error {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Error {
            status,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// The message a caught panic carries ("" if it is not a string).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

macro_rules! err {
    ($status:ident, $($arg:tt)*) => {
        $crate::error::Error::new($crate::error::Status::$status, format!($($arg)*))
    };
}
pub(crate) use err;

impl From<ort::Error> for Error {
    fn from(e: ort::Error) -> Self {
        Error::new(Status::PIDDM_ERR_RUNTIME, format!("ONNX Runtime: {e}"))
    }
}
