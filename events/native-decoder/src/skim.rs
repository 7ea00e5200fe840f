//! Reading ahead: the top-level keys of fetched records found by a thread of their own, while
//! the worker's thread does other work, so that the fold's decoding starts from them.
//!
//! Rules of this module:
//!
//! * `skim(records)` takes the `value` of each record (bytes; anything else is left to the
//!   decoder as it is) and hands their addresses to a new thread, which reads each as a `Rec`
//!   (the same serde parse `Decoder.parse` makes) and keeps only where each key's JSON text is
//!   (`Spans`), or that the bytes are not such a record. The thread runs without the GIL and
//!   touches no Python object: it reads bytes that the `Skimmed` keeps alive (a reference to
//!   each value), and a `bytes` object never changes.
//! * A `Skimmed` waits for its thread before it lets its values go (`Drop`), and the first
//!   lookup waits for the thread's result without the GIL.
//! * Nothing is decided here: a record's spans are used only for the very value object they
//!   were read from (the decoder compares the object, not its bytes), and every span is then
//!   inside those bytes and valid UTF-8, as the thread's parse left it. Any record without
//!   spans is parsed by the decoder as before, so a record decodes the same either way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::{Rec, FIELDS};

/// Where each key of a record is: (start, length) of its JSON text in the record's bytes, by
/// the key's bit (a length of 0: the key is absent).
pub(crate) type Spans = [(u32, u32); FIELDS];

/// What the thread found for one value: its spans, or None when the bytes are not a record the
/// decoder reads (its own parse would fail the same way).
type Found = Option<Spans>;

/// The records of one `skim` call, read ahead.
#[pyclass(frozen, module = "events._native")]
pub struct Skimmed {
    /// Each record's value (None: not bytes), kept alive while the thread reads it (none if
    /// nothing is read).
    values: Vec<Option<Py<PyBytes>>>,
    /// How many records it stands for.
    count: usize,
    work: Mutex<Option<JoinHandle<Vec<Found>>>>,
    found: OnceLock<Vec<Found>>,
    /// How many of its records a decode took from it.
    used: AtomicUsize,
}

/// What the decoder learns of one record from a `Skimmed`.
pub(crate) enum Ahead<'s> {
    /// Not read ahead (or not this value): parse it.
    Unknown,
    /// The bytes are not a record the decoder reads.
    Unreadable,
    Spans(&'s Spans),
}

/// `skim(records, read=True)`: start reading the records' values ahead (see the module rules);
/// a record without a `value` attribute is left to the decoder like any value that is not
/// bytes. With `read=False` nothing is read (no thread: too few records to be worth one); the
/// `Skimmed` only stands for them, so that the ones after them are found in order.
#[pyfunction]
#[pyo3(signature = (records, read=true))]
pub fn skim(py: Python<'_>, records: &Bound<'_, PyAny>, read: bool) -> PyResult<Skimmed> {
    if !read {
        return Ok(Skimmed {
            values: Vec::new(),
            count: records.len()?,
            work: Mutex::new(None),
            found: OnceLock::from(Vec::new()),
            used: AtomicUsize::new(0),
        });
    }
    let name = pyo3::intern!(py, "value");
    let mut values = Vec::new();
    let mut places = Vec::new();
    for record in records.try_iter()? {
        let value = record?.getattr(name).ok();
        match value.as_ref().map(|value| value.cast_exact::<PyBytes>()) {
            Some(Ok(bytes)) => {
                let data = bytes.as_bytes();
                places.push(Some((data.as_ptr() as usize, data.len())));
                values.push(Some(bytes.clone().unbind()));
            }
            _ => {
                places.push(None);
                values.push(None);
            }
        }
    }
    let read = move || -> Vec<Found> {
        places
            .into_iter()
            .map(|place| {
                let (address, len) = place?;
                // SAFETY: the `Skimmed` holds a reference to the bytes object at `address`
                // until this thread is joined (its `Drop` joins it first), and a bytes object's
                // contents never change.
                let data = unsafe { std::slice::from_raw_parts(address as *const u8, len) };
                let rec = serde_json::from_slice::<Rec<'_>>(data).ok()?;
                Some(rec.spans(data))
            })
            .collect()
    };
    let found = OnceLock::new();
    let work = match std::thread::Builder::new()
        .name("trackerflow-skim".into())
        .spawn(read)
    {
        Ok(handle) => Some(handle),
        Err(_) => {
            // no thread now: nothing is read ahead, the decoder parses as it would
            let _ = found.set(Vec::new());
            None
        }
    };
    Ok(Skimmed {
        count: values.len(),
        values,
        work: Mutex::new(work),
        found,
        used: AtomicUsize::new(0),
    })
}

impl Skimmed {
    /// How many records it holds.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The thread's result (waiting for it without the GIL); empty if it failed.
    fn found(&self, py: Python<'_>) -> &[Found] {
        if let Some(found) = self.found.get() {
            return found;
        }
        let handle = self
            .work
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let result = match handle {
            Some(handle) => py.detach(|| handle.join()).unwrap_or_default(),
            None => Vec::new(), // another thread took it: read nothing ahead this time
        };
        let _ = self.found.set(result);
        self.found.get().map_or(&[], Vec::as_slice)
    }

    /// What was read ahead for record `index`, if `value` is the very object it was read from.
    pub(crate) fn ahead(
        &self,
        py: Python<'_>,
        index: usize,
        value: &Bound<'_, PyBytes>,
    ) -> Ahead<'_> {
        match self.values.get(index) {
            Some(Some(kept)) if kept.as_ptr() == value.as_ptr() => {}
            _ => return Ahead::Unknown,
        }
        let ahead = match self.found(py).get(index) {
            Some(Some(spans)) => Ahead::Spans(spans),
            Some(None) => Ahead::Unreadable,
            None => return Ahead::Unknown,
        };
        self.used.fetch_add(1, Ordering::Relaxed);
        ahead
    }
}

#[pymethods]
impl Skimmed {
    fn __len__(&self) -> usize {
        self.len()
    }

    /// How many of its records a decode has taken from it (not parsed again).
    #[getter]
    fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

impl Drop for Skimmed {
    fn drop(&mut self) {
        // the thread reads the values: it must be done before they may go
        let work = self.work.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = work.take() {
            let _ = handle.join();
        }
    }
}
