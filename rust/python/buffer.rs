//! Borrowing a Python buffer without copying it, with the GIL released for large inputs.
//!
//! The module is built against the stable ABI (`abi3-py311` in Cargo.toml): `PyObject_GetBuffer`
//! and `PyBuffer_Release`, behind `PyUntypedBuffer`, are in the limited API from CPython 3.11 on.

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;

/// Inputs of at least this many bytes are processed with the GIL released; below it, releasing
/// and re-taking the GIL costs more than it lets other threads gain. hashlib and blake3-py use
/// the same figure.
pub const GIL_RELEASE_THRESHOLD: usize = 2048;

/// A contiguous read-only view of a Python object's buffer (bytes, bytearray, memoryview, mmap,
/// array, numpy arrays...). The exporter keeps the memory alive and its size fixed until the view
/// is dropped.
pub struct Borrowed {
    view: PyUntypedBuffer,
}

impl Borrowed {
    /// Borrows `obj`'s buffer. A non-contiguous one (a strided memoryview) raises `BufferError`,
    /// as hashlib does; an object with no buffer raises `TypeError`.
    pub fn new(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let view = PyUntypedBuffer::get(obj)?;
        if !view.is_c_contiguous() {
            return Err(PyBufferError::new_err(
                "the buffer is not C-contiguous; pass a contiguous copy",
            ));
        }
        Ok(Borrowed { view })
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.view.len_bytes()
    }

    /// Runs `f` on the bytes, with the GIL released when there are enough of them to be worth
    /// it. The memory is read while other Python threads may run: like hashlib, we accept that a
    /// thread mutating a bytearray it is also hashing gets an unspecified digest.
    pub fn with_slice<R, F>(&self, py: Python<'_>, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R + Send,
        R: Send,
    {
        let len = self.len();
        if len == 0 {
            return f(&[]);
        }
        // The pointer crosses into the detached closure as an integer: it is not `Send`, but
        // what it points to is pinned by `self.view` for as long as this call runs.
        let addr = self.view.buf_ptr() as usize;
        let run = move || {
            // SAFETY: `addr` and `len` describe the contiguous memory of a buffer export that
            // `self.view` holds until after this closure returns, and `len > 0` so the pointer
            // is not null. Exporters keep the memory valid and unresized while exported.
            let slice = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
            f(slice)
        };
        if len >= GIL_RELEASE_THRESHOLD {
            py.detach(run)
        } else {
            run()
        }
    }

    /// Like [`Borrowed::with_slice`], but always releases the GIL: for calls that do I/O,
    /// which may block whatever the size.
    pub fn with_slice_detached<R, F>(&self, py: Python<'_>, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R + Send,
        R: Send,
    {
        if self.len() >= GIL_RELEASE_THRESHOLD {
            self.with_slice(py, f)
        } else {
            py.detach(|| self.with_slice_unlocked(f))
        }
    }

    fn with_slice_unlocked<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        let len = self.len();
        if len == 0 {
            return f(&[]);
        }
        // SAFETY: as in `with_slice`: the export held by `self.view` pins this memory for the
        // duration of the call, and `len > 0` so the pointer is not null.
        let slice = unsafe { std::slice::from_raw_parts(self.view.buf_ptr() as *const u8, len) };
        f(slice)
    }
}
