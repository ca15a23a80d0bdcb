//! The `distblob._native` extension module: thin bindings over the core, and the one place where
//! Rust errors become Python exceptions.

mod buffer;
mod hashers;
mod scan;
mod upload;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::error::Error;

// Exceptions are defined in Python (`distblob.errors`) so that the Python API owns them; the
// native module raises those very classes.
pyo3::import_exception!(distblob.errors, HashStateError);

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        match err {
            Error::HashState(why) => HashStateError::new_err(why),
            // OSError(errno, strerror, filename) picks the matching subclass
            // (FileNotFoundError, PermissionError, ...) from the errno.
            Error::Io { path, source } => match source.raw_os_error() {
                Some(errno) => PyOSError::new_err((errno, source.to_string(), path)),
                // No path: the error is about what the caller passed (a source that changed
                // while it was read), which the caller names better.
                None if path.is_empty() => PyOSError::new_err(source.to_string()),
                None => PyOSError::new_err(format!("{path}: {source}")),
            },
            Error::State(why) => PyValueError::new_err(why),
        }
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<hashers::Sha256>()?;
    m.add_class::<hashers::Sha384>()?;
    m.add_class::<hashers::Sha512>()?;
    m.add_class::<hashers::Blake3>()?;
    m.add_class::<upload::UploadFile>()?;
    m.add_function(wrap_pyfunction!(upload::hash_file, m)?)?;
    m.add_function(wrap_pyfunction!(upload::write_file_atomic, m)?)?;
    m.add_function(wrap_pyfunction!(upload::sync_filesystem, m)?)?;
    m.add_function(wrap_pyfunction!(upload::put_blob, m)?)?;
    m.add_function(wrap_pyfunction!(upload::put_blob_fd, m)?)?;
    m.add_function(wrap_pyfunction!(scan::scan_repositories, m)?)?;
    m.add_function(wrap_pyfunction!(scan::scan_blobs, m)?)?;
    m.add_function(wrap_pyfunction!(scan::read_references, m)?)?;
    m.add_function(wrap_pyfunction!(scan::delete_files, m)?)?;
    m.add("GIL_RELEASE_THRESHOLD", buffer::GIL_RELEASE_THRESHOLD)?;
    Ok(())
}
