//! `UploadFile` and the file helpers for Python. Every call that touches the disk releases the
//! GIL, however small: a write may block on a busy or full disk, and other threads must go on.

use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::buffer::Borrowed;
use super::hashers::lock;
use crate::error::Error;
use crate::hash::any::Algorithm;
use crate::upload::{self, DirectMode, UploadFile as Core, WritebackMode};

/// An upload's data file: each write goes to disk and into the running hash in one call.
#[pyclass(frozen, module = "distblob._native", name = "UploadFile")]
pub struct UploadFile {
    /// `None` once closed.
    inner: Mutex<Option<Core>>,
}

impl UploadFile {
    fn with<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Core) -> crate::Result<R> + Send,
    ) -> PyResult<R> {
        py.detach(|| {
            let mut guard = lock(&self.inner);
            let core = guard
                .as_mut()
                .ok_or_else(|| Error::State("the upload file is closed".into()))?;
            f(core)
        })
        .map_err(PyErr::from)
    }
}

fn algorithm(name: &str) -> PyResult<Algorithm> {
    Algorithm::parse(name).map_err(|e| PyValueError::new_err(e.to_string()))
}

#[pymethods]
impl UploadFile {
    #[new]
    #[pyo3(signature = (path, *, create, algorithm = "sha256", state = None, writeback = false, paced = true, direct = "off"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: &str,
        create: bool,
        algorithm: &str,
        state: Option<&[u8]>,
        writeback: bool,
        paced: bool,
        direct: &str,
    ) -> PyResult<Self> {
        let algorithm = self::algorithm(algorithm)?;
        let direct = DirectMode::parse(direct).ok_or_else(|| {
            PyValueError::new_err(format!("direct is 'auto', 'on' or 'off', not {direct:?}"))
        })?;
        let mode = match (writeback, paced) {
            (false, _) => WritebackMode::Off,
            (true, false) => WritebackMode::Started,
            (true, true) => WritebackMode::Paced,
        };
        let core = py.detach(|| {
            Core::open(path, create, algorithm, state, mode).map(|core| core.with_direct(direct))
        })?;
        Ok(UploadFile {
            inner: Mutex::new(Some(core)),
        })
    }

    #[getter]
    fn size(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |core| Ok(core.size()))
    }

    #[getter]
    fn position(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |core| Ok(core.position()))
    }

    #[getter]
    fn hashed(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |core| Ok(core.hashed()))
    }

    #[getter]
    fn algorithm(&self, py: Python<'_>) -> PyResult<&'static str> {
        self.with(py, |core| Ok(core.algorithm().name()))
    }

    #[getter]
    fn direct(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |core| Ok(core.direct()))
    }

    #[getter]
    fn direct_written(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |core| Ok(core.direct_written()))
    }

    #[getter]
    fn closed(&self) -> bool {
        lock(&self.inner).is_none()
    }

    fn seek(&self, py: Python<'_>, position: u64) -> PyResult<()> {
        self.with(py, |core| core.seek(position))
    }

    #[pyo3(signature = (data, /))]
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let data = Borrowed::new(data)?;
        let addr_len = data.len();
        if addr_len == 0 {
            return Ok(0);
        }
        data.with_slice_detached(py, |bytes| {
            let mut guard = lock(&self.inner);
            let core = guard
                .as_mut()
                .ok_or_else(|| Error::State("the upload file is closed".into()))?;
            core.write(bytes)
        })
        .map_err(PyErr::from)
    }

    #[pyo3(signature = (fd, limit = None))]
    fn read_from_fd(&self, py: Python<'_>, fd: i32, limit: Option<u64>) -> PyResult<u64> {
        self.with(py, |core| core.read_from_fd(fd, limit))
    }

    fn catch_up(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |core| core.catch_up())
    }

    fn hexdigest(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |core| core.hexdigest())
    }

    fn marshal_state<'py>(&self, py: Python<'py>) -> PyResult<Option<(u64, Bound<'py, PyBytes>)>> {
        let state = self.with(py, |core| Ok(core.marshal_state()))?;
        Ok(state.map(|(offset, bytes)| (offset, PyBytes::new(py, &bytes))))
    }

    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |core| core.sync())
    }

    /// Closes the file; idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| lock(&self.inner).take());
    }
}

/// The hex digest of a file from `offset` on.
#[pyfunction]
#[pyo3(signature = (path, algorithm = "sha256", offset = 0))]
pub fn hash_file(py: Python<'_>, path: &str, algorithm: &str, offset: u64) -> PyResult<String> {
    let algorithm = self::algorithm(algorithm)?;
    Ok(py.detach(|| upload::hash_file(path, algorithm, offset))?)
}

/// Writes `data` to `path` through `tmp` and a rename; `durable` syncs file and directories.
#[pyfunction]
#[pyo3(signature = (path, tmp, data, durable))]
pub fn write_file_atomic(
    py: Python<'_>,
    path: &str,
    tmp: &str,
    data: &Bound<'_, PyAny>,
    durable: bool,
) -> PyResult<()> {
    let data = Borrowed::new(data)?;
    Ok(data.with_slice_detached(py, |bytes| {
        upload::write_file_atomic(path, tmp, bytes, durable)
    })?)
}

/// `syncfs` on the filesystem holding `path`.
#[pyfunction]
pub fn sync_filesystem(py: Python<'_>, path: &str) -> PyResult<()> {
    Ok(py.detach(|| upload::sync_filesystem(path))?)
}

/// Hashes and stores a small blob and its repository link in one call; `(hex, stored)`. With
/// `expected` (a hex digest) nothing is written unless the data hashes to it.
#[pyfunction]
#[pyo3(signature = (data, algorithm, blob_template, link_template, durable, *, expected = None))]
pub fn put_blob(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    algorithm: &str,
    blob_template: &str,
    link_template: &str,
    durable: bool,
    expected: Option<&str>,
) -> PyResult<(String, bool)> {
    let algorithm = self::algorithm(algorithm)?;
    let data = Borrowed::new(data)?;
    let outcome = data.with_slice_detached(py, |bytes| {
        upload::put_blob(
            bytes,
            algorithm,
            blob_template,
            link_template,
            durable,
            expected,
        )
    })?;
    Ok((outcome.hex, outcome.stored))
}

/// Stores the rest of the file `fd` as a blob and links it, in one call: the kernel copies it
/// into an unnamed file that is hashed as stored, then named. `(hex, size, stored)`, or `None`
/// (nothing read) when the filesystem has no `O_TMPFILE`.
#[pyfunction]
#[pyo3(signature = (fd, algorithm, blob_template, link_template, durable, *, expected_size = None))]
pub fn put_blob_fd(
    py: Python<'_>,
    fd: i32,
    algorithm: &str,
    blob_template: &str,
    link_template: &str,
    durable: bool,
    expected_size: Option<u64>,
) -> PyResult<Option<(String, u64, bool)>> {
    let algorithm = self::algorithm(algorithm)?;
    let outcome = py.detach(|| {
        upload::put_blob_fd(
            fd,
            expected_size,
            algorithm,
            blob_template,
            link_template,
            durable,
        )
    })?;
    Ok(outcome.map(|(outcome, size)| (outcome.hex, size, outcome.stored)))
}
