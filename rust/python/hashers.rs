//! `Sha256`, `Sha384`, `Sha512` and `Blake3` for Python, in hashlib's shape.
//!
//! Each class is `frozen` with a `Mutex` inside: methods take `&self`, so two Python threads
//! sharing a hasher never meet PyO3's runtime borrow errors, and the lock is taken only inside
//! the GIL-free section (and dropped before the GIL is taken back), so a thread waiting for it
//! never holds the GIL that the lock's owner may need.

use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};

use super::buffer::Borrowed;
use crate::hash::blake3::{Blake3 as Blake3Core, Threads};
use crate::hash::sha2::{Sha2, Sha256Variant, Sha384Variant, Sha512Variant, Variant};

/// Locks a hasher's state. A panic while it was held cannot leave a half-updated state (update
/// never panics midway), so a poisoned lock is simply taken over.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shared body of `Sha256`, `Sha384` and `Sha512`: everything but the class names.
macro_rules! sha2_class {
    ($class:ident, $name:literal, $variant:ty) => {
        #[doc = concat!("Streaming ", $name, " whose state can be saved in Go's format.")]
        #[pyclass(frozen, module = "distblob._native", name = $name)]
        pub struct $class {
            state: Mutex<Sha2<$variant>>,
        }

        impl $class {
            fn wrap(state: Sha2<$variant>) -> Self {
                $class {
                    state: Mutex::new(state),
                }
            }
        }

        #[pymethods]
        impl $class {
            #[new]
            #[pyo3(signature = (data = None))]
            fn new(py: Python<'_>, data: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
                let hasher = Self::wrap(Sha2::new());
                if let Some(data) = data {
                    hasher.update(py, data)?;
                }
                Ok(hasher)
            }

            #[classattr]
            fn name() -> &'static str {
                <$variant>::NAME
            }

            #[classattr]
            fn digest_size() -> usize {
                <$variant>::OUTPUT
            }

            #[classattr]
            fn block_size() -> usize {
                <$variant>::BLOCK
            }

            #[getter]
            fn size(&self) -> u64 {
                lock(&self.state).len()
            }

            #[pyo3(signature = (data, /))]
            fn update(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
                let data = Borrowed::new(data)?;
                data.with_slice(py, |bytes| lock(&self.state).update(bytes));
                Ok(())
            }

            fn digest<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
                PyBytes::new(py, &lock(&self.state).finalize())
            }

            fn hexdigest(&self) -> String {
                hex::encode(lock(&self.state).finalize())
            }

            fn copy(&self) -> Self {
                Self::wrap(lock(&self.state).clone())
            }

            fn marshal_binary<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
                PyBytes::new(py, &lock(&self.state).marshal())
            }

            #[classmethod]
            #[pyo3(signature = (data, /))]
            fn unmarshal_binary(
                _cls: &Bound<'_, PyType>,
                py: Python<'_>,
                data: &Bound<'_, PyAny>,
            ) -> PyResult<Self> {
                let data = Borrowed::new(data)?;
                let state = data.with_slice(py, Sha2::<$variant>::unmarshal)?;
                Ok(Self::wrap(state))
            }

            fn __repr__(&self) -> String {
                format!("<distblob {} hasher, size={}>", $name, self.size())
            }
        }
    };
}

sha2_class!(Sha256, "Sha256", Sha256Variant);
sha2_class!(Sha384, "Sha384", Sha384Variant);
sha2_class!(Sha512, "Sha512", Sha512Variant);

fn threads_of(max_threads: i64) -> PyResult<Threads> {
    match max_threads {
        -1 => Ok(Threads::Auto),
        n if n >= 1 => Ok(Threads::Max(n as usize)),
        n => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "max_threads must be at least 1 or Blake3.AUTO, not {n}"
        ))),
    }
}

/// BLAKE3, optionally multithreaded, with a state that can be saved and restored.
#[pyclass(frozen, module = "distblob._native", name = "Blake3")]
pub struct Blake3 {
    state: Mutex<Blake3Core>,
}

impl Blake3 {
    fn wrap(state: Blake3Core) -> Self {
        Blake3 {
            state: Mutex::new(state),
        }
    }
}

#[pymethods]
impl Blake3 {
    /// `max_threads=Blake3.AUTO` (-1) uses one thread per core.
    #[classattr]
    const AUTO: i64 = -1;

    #[new]
    #[pyo3(signature = (data = None, *, max_threads = 1))]
    fn new(py: Python<'_>, data: Option<&Bound<'_, PyAny>>, max_threads: i64) -> PyResult<Self> {
        let threads = threads_of(max_threads)?;
        let hasher = Self::wrap(Blake3Core::new(threads));
        if let Some(data) = data {
            hasher.update(py, data)?;
        }
        Ok(hasher)
    }

    #[classattr]
    fn name() -> &'static str {
        "blake3"
    }

    #[classattr]
    fn digest_size() -> usize {
        32
    }

    #[classattr]
    fn block_size() -> usize {
        64
    }

    #[getter]
    fn size(&self) -> u64 {
        lock(&self.state).len()
    }

    #[getter]
    fn max_threads(&self) -> i64 {
        match lock(&self.state).threads() {
            Threads::Auto => -1,
            Threads::Max(n) => n as i64,
        }
    }

    #[pyo3(signature = (data, /))]
    fn update(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = Borrowed::new(data)?;
        data.with_slice(py, |bytes| lock(&self.state).update(bytes));
        Ok(())
    }

    #[pyo3(signature = (length = 32))]
    fn digest<'py>(&self, py: Python<'py>, length: usize) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &lock(&self.state).finalize(length))
    }

    #[pyo3(signature = (length = 32))]
    fn hexdigest(&self, length: usize) -> String {
        hex::encode(lock(&self.state).finalize(length))
    }

    fn copy(&self) -> Self {
        Self::wrap(lock(&self.state).clone())
    }

    fn marshal_binary<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &lock(&self.state).marshal())
    }

    #[classmethod]
    #[pyo3(signature = (data, /, *, max_threads = 1))]
    fn unmarshal_binary(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        max_threads: i64,
    ) -> PyResult<Self> {
        let threads = threads_of(max_threads)?;
        let data = Borrowed::new(data)?;
        let state = data.with_slice(py, |bytes| Blake3Core::unmarshal(bytes, threads))?;
        Ok(Self::wrap(state))
    }

    fn __repr__(&self) -> String {
        format!("<distblob Blake3 hasher, size={}>", self.size())
    }
}
