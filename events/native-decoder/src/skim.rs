//! Reading ahead: the top-level keys of fetched records found by the decoder's reader thread,
//! while the worker's thread does other work, so that the fold's decoding starts from them.
//!
//! Rules of this module:
//!
//! * `skim(records)` takes the `value` of each record (bytes; anything else is left to the
//!   decoder as it is) and hands their addresses to the reader thread, which reads each as a
//!   `Rec` (the same serde parse `Decoder.parse` makes) and keeps only where each key's JSON
//!   text is (`Spans`), or that the bytes are not such a record. The thread runs without the GIL
//!   and touches no Python object: it reads bytes that the `Skimmed` keeps alive (a reference to
//!   each value), and a `bytes` object never changes.
//! * One reader thread per process, started by the first `skim` (and again in a process forked
//!   from one that had it: a fork has no thread of its parent's), reads the calls' records in
//!   the order they came. Where no thread can be started, `skim` reads the records itself.
//! * A `Skimmed` waits for its records to be read before it lets its values go (`Drop`; not in
//!   a forked process, whose copy of the bytes no thread reads), and the first lookup waits for
//!   them without the GIL.
//! * Nothing is decided here: a record's spans are used only for the very value object they
//!   were read from (the decoder compares the object, not its bytes), and every span is then
//!   inside those bytes and valid UTF-8, as the thread's parse left it. Any record without
//!   spans is parsed by the decoder as before, so a record decodes the same either way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

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
    /// Where the reader puts what it found (None: nothing is read).
    slot: Option<Arc<Slot>>,
    /// How many of its records a decode took from it.
    used: AtomicUsize,
}

/// What the reader found for one `skim` call, once it has read them.
struct Slot {
    found: OnceLock<Vec<Found>>,
    read: Mutex<bool>,
    done: Condvar,
    /// The process whose reader thread reads them.
    process: u32,
}

impl Slot {
    fn fill(&self, found: Vec<Found>) {
        let _ = self.found.set(found);
        *self.read.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.done.notify_all();
    }

    /// Block until the records are read (unless no thread of this process reads them).
    fn wait(&self) {
        if self.process != std::process::id() {
            return; // a forked copy: its parent's thread does not read this memory
        }
        let mut read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        while !*read {
            read = self.done.wait(read).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Addresses and lengths of the values to read (None: not bytes).
type Places = Vec<Option<(usize, usize)>>;

/// One `skim` call's work for the reader: what to read, and where to put what it finds.
type Work = (Places, Arc<Slot>);

/// The process's reader thread: its process id and where to send it work.
static READER: Mutex<Option<(u32, Sender<Work>)>> = Mutex::new(None);

/// Have the reader thread read `places` into `slot`; the work back if there is no thread.
fn send(work: Work) -> Result<(), Work> {
    let mut reader = READER.lock().unwrap_or_else(PoisonError::into_inner);
    let process = std::process::id();
    if !matches!(&*reader, Some((owner, _)) if *owner == process) {
        let (sender, work_to_do) = mpsc::channel::<Work>();
        let started = std::thread::Builder::new()
            .name("trackerflow-read-ahead".into())
            .spawn(move || {
                for (places, slot) in work_to_do {
                    let found = std::panic::catch_unwind(|| read(places)).unwrap_or_default();
                    slot.fill(found);
                }
            });
        if started.is_err() {
            *reader = None;
            return Err(work);
        }
        *reader = Some((process, sender));
    }
    let Some((_, sender)) = reader.as_ref() else {
        return Err(work);
    };
    sender.send(work).map_err(|failed| {
        *reader = None; // the thread is gone: the next call starts another
        failed.0
    })
}

/// What the reader finds at `places`.
fn read(places: Places) -> Vec<Found> {
    places
        .into_iter()
        .map(|place| {
            let (address, len) = place?;
            // SAFETY: the `Skimmed` holds a reference to the bytes object at `address` until
            // this is done (its `Drop` waits for it), and a bytes object's contents never
            // change.
            let data = unsafe { std::slice::from_raw_parts(address as *const u8, len) };
            let rec = serde_json::from_slice::<Rec<'_>>(data).ok()?;
            Some(rec.spans(data))
        })
        .collect()
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
            slot: None,
            used: AtomicUsize::new(0),
        });
    }
    let name = pyo3::intern!(py, "value");
    let size = records.len().unwrap_or(0);
    let mut values = Vec::with_capacity(size);
    let mut places = Vec::with_capacity(size);
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
    let slot = Arc::new(Slot {
        found: OnceLock::new(),
        read: Mutex::new(false),
        done: Condvar::new(),
        process: std::process::id(),
    });
    if let Err((places, slot)) = send((places, slot.clone())) {
        slot.fill(self::read(places)); // no thread: read them now
    }
    Ok(Skimmed {
        count: values.len(),
        values,
        slot: Some(slot),
        used: AtomicUsize::new(0),
    })
}

impl Skimmed {
    /// How many records it holds.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// What the reader found (waiting for it without the GIL); empty if nothing was read.
    fn found(&self, py: Python<'_>) -> &[Found] {
        let Some(slot) = &self.slot else {
            return &[];
        };
        if slot.found.get().is_none() {
            py.detach(|| slot.wait());
        }
        slot.found.get().map_or(&[], Vec::as_slice)
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
        // the reader reads the values: it must be done with them before they may go
        if let Some(slot) = &self.slot {
            slot.wait();
        }
    }
}
