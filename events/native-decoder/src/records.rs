//! `events._native.BatchReader`: Kafka record batches (message format v2, uncompressed) read
//! straight into Python records, for the worker's consumer (`streams.fetching` is the caller and
//! says where it is used).
//!
//! Rules of this module:
//!
//! * It reads what aiokafka's own reader (`aiokafka.record`) reads, and hands out the same
//!   values: a record is a named tuple with `aiokafka.structs.ConsumerRecord`'s fields.
//! * Batch-level decisions (aborted transactions, control batches, positions) stay in Python:
//!   every batch comes back with its header fields, and the records of a plain one.
//! * Whatever it does not read itself it leaves to aiokafka: a compressed batch comes back
//!   without records (Python reads that batch with aiokafka), a batch of an older format makes
//!   the whole answer `None` (Python reads all of it with aiokafka).
//! * A batch it cannot parse (or whose CRC is wrong, when asked to check) comes back with the
//!   reason, and Python raises aiokafka's `CorruptRecordException` when it reaches it, as
//!   aiokafka does.
//! * One deliberate difference: a header name that is not UTF-8 (Kafka does not check them)
//!   is decoded with U+FFFD for its bad bytes, where aiokafka's reader raises and stops the
//!   consumer.
//! * `Handout` hands a partition's records out one by one and keeps the consumer's position as
//!   it goes, by the rules of aiokafka's `PartitionRecords` (see its doc); Python decides
//!   which batches it holds.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple, PyType};

use crate::allocate;

/// Bytes of a v2 batch header up to and including `batchLength`.
const LOG_OVERHEAD: usize = 12;
/// Bytes of a whole v2 batch header, records count included.
const HEADER: usize = 61;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
/// `ConsumerRecord`'s fields: topic, partition, offset, timestamp, timestamp_type, key, value,
/// checksum, serialized_key_size, serialized_value_size, headers.
const RECORD_FIELDS: usize = 11;

/// A cursor over a batch's bytes; every read fails (None) rather than run past the end.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.data.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    fn i8(&mut self) -> Option<i8> {
        self.take(1).map(|b| b[0] as i8)
    }

    /// A zigzag varint of at most `max_bytes` bytes (5 for an int, 10 for a long).
    fn varint(&mut self, max_bytes: u32) -> Option<i64> {
        let mut raw: u64 = 0;
        for i in 0..max_bytes {
            let byte = *self.data.get(self.at)?;
            self.at += 1;
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        None
    }

    /// A varint length then that many bytes; a negative length is null.
    fn sized(&mut self) -> Option<Option<&'a [u8]>> {
        let n = self.varint(5)?;
        if n < 0 {
            return Some(None);
        }
        self.take(usize::try_from(n).ok()?).map(Some)
    }
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(bytes)
}

/// A v2 batch's header fields.
struct Header {
    base_offset: i64,
    attributes: i16,
    last_offset_delta: i32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    count: i32,
}

impl Header {
    fn read(batch: &[u8]) -> Header {
        Header {
            base_offset: be_i64(batch, 0),
            attributes: i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]),
            last_offset_delta: be_i32(batch, 23),
            first_timestamp: be_i64(batch, 27),
            max_timestamp: be_i64(batch, 35),
            producer_id: be_i64(batch, 43),
            count: be_i32(batch, 57),
        }
    }
}

/// Sizes up to this many bytes are shared int objects (`BatchReader::size`).
const SHARED_SIZES: usize = 1 << 14;

/// Reads fetched record batches into records of one named-tuple type.
///
/// A record is a handful of objects, made and freed for every record the worker reads: those
/// it can share, it shares. Equal sizes are one int object (as Python's small ints are), so
/// are equal timestamps of consecutive records of a batch, and a record (a tuple of immutable
/// values) is not tracked by the garbage collector, which could find no cycle through it (the
/// collector would untrack it at its first look).
#[pyclass(module = "events._native")]
pub struct BatchReader {
    record: Py<PyType>,
    no_headers: Py<PyTuple>,
    /// `sizes[n]`: the int `n`, once made.
    sizes: Vec<Option<Py<PyAny>>>,
}

/// One record's parts, borrowed from the batch.
struct Parts<'a> {
    offset: i64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
    /// The headers' bytes as they are in the record (equal bytes, equal headers).
    headers_raw: &'a [u8],
}

fn parse_record<'a>(cursor: &mut Cursor<'a>, header: &Header) -> Option<Parts<'a>> {
    let length = usize::try_from(cursor.varint(5)?).ok()?;
    let end = cursor.at.checked_add(length)?;
    if end > cursor.data.len() {
        return None;
    }
    cursor.i8()?; // the record's attributes: unused
    let timestamp_delta = cursor.varint(10)?;
    let offset_delta = cursor.varint(5)?;
    let key = cursor.sized()?;
    let value = cursor.sized()?;
    let headers_at = cursor.at;
    let count = cursor.varint(5)?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = cursor.sized()??;
        headers.push((name, cursor.sized()?));
    }
    if cursor.at != end {
        return None;
    }
    let timestamp = if header.attributes & TIMESTAMP_TYPE_BIT != 0 {
        header.max_timestamp
    } else {
        header.first_timestamp.checked_add(timestamp_delta)?
    };
    Some(Parts {
        offset: header.base_offset.checked_add(offset_delta)?,
        timestamp,
        key,
        value,
        headers,
        headers_raw: &cursor.data[headers_at..end],
    })
}

/// Python `bytes` or None.
fn optional_bytes(py: Python<'_>, bytes: Option<&[u8]>) -> Py<PyAny> {
    match bytes {
        Some(b) => PyBytes::new(py, b).into_any().unbind(),
        None => py.None(),
    }
}

impl BatchReader {
    /// The size of `bytes` (-1: None) as an int, shared when it is small enough.
    fn size(&mut self, py: Python<'_>, bytes: Option<&[u8]>) -> PyResult<Py<PyAny>> {
        let Some(n) = bytes.map(<[u8]>::len).filter(|&n| n < SHARED_SIZES) else {
            let n = bytes.map_or(-1, |b| b.len() as i64);
            return Ok(n.into_pyobject(py)?.into_any().unbind());
        };
        if self.sizes.is_empty() {
            self.sizes.resize_with(SHARED_SIZES, || None);
        }
        if let Some(shared) = &self.sizes[n] {
            return Ok(shared.clone_ref(py));
        }
        let made = n.into_pyobject(py)?.into_any().unbind();
        self.sizes[n] = Some(made.clone_ref(py));
        Ok(made)
    }

    #[allow(clippy::too_many_arguments)]
    fn record<'py>(
        &mut self,
        py: Python<'py>,
        topic: &Bound<'py, PyAny>,
        partition: &Bound<'py, PyAny>,
        timestamp_type: &Bound<'py, PyAny>,
        parts: &Parts<'_>,
        last_headers: &mut Option<(Vec<u8>, Py<PyAny>)>,
        last_timestamp: &mut Option<(i64, Py<PyAny>)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let headers = if parts.headers.is_empty() {
            self.no_headers.clone_ref(py).into_any()
        } else if let Some((_, headers)) = last_headers
            .as_ref()
            .filter(|(raw, _)| raw.as_slice() == parts.headers_raw)
        {
            headers.clone_ref(py) // a batch's records mostly carry the same headers: share them
        } else {
            let mut items = Vec::with_capacity(parts.headers.len());
            for (name, value) in &parts.headers {
                // Kafka does not check header names; one that is not UTF-8 must not stop the
                // consumer (aiokafka's reader raises): its bad bytes become U+FFFD
                let name = String::from_utf8_lossy(name);
                let pair = PyTuple::new(
                    py,
                    [
                        PyString::new(py, &name).into_any().unbind(),
                        optional_bytes(py, *value),
                    ],
                )?;
                items.push(pair);
            }
            let headers = PyTuple::new(py, items)?.into_any().unbind();
            *last_headers = Some((parts.headers_raw.to_vec(), headers.clone_ref(py)));
            headers
        };
        let timestamp = match last_timestamp {
            Some((value, shared)) if *value == parts.timestamp => shared.clone_ref(py),
            _ => {
                let made = parts.timestamp.into_pyobject(py)?.into_any().unbind();
                *last_timestamp = Some((parts.timestamp, made.clone_ref(py)));
                made
            }
        };
        let fields: [Py<PyAny>; RECORD_FIELDS] = [
            topic.clone().unbind(),
            partition.clone().unbind(),
            parts.offset.into_pyobject(py)?.into_any().unbind(),
            timestamp,
            timestamp_type.clone().unbind(),
            optional_bytes(py, parts.key),
            optional_bytes(py, parts.value),
            py.None(),
            self.size(py, parts.key)?,
            self.size(py, parts.value)?,
            headers,
        ];
        let obj = allocate(py, &self.record, RECORD_FIELDS as isize)?;
        // SAFETY: `record` is a tuple subclass of RECORD_FIELDS fields (checked in `new`),
        // allocated with every item NULL; each is set once with a new reference. Its items are
        // strs, ints, bytes, None and tuples of those: no cycle can pass through it, so it
        // leaves the collector's lists (a tuple subclass is allocated tracked).
        unsafe {
            for (i, field) in fields.into_iter().enumerate() {
                ffi::PyTuple_SET_ITEM(obj, i as isize, field.into_ptr());
            }
            ffi::PyObject_GC_UnTrack(obj.cast());
            Ok(Bound::from_owned_ptr(py, obj))
        }
    }

    /// The records of a plain batch, or the reason it cannot be read.
    fn records<'py>(
        &mut self,
        py: Python<'py>,
        batch: &[u8],
        header: &Header,
        topic: &Bound<'py, PyAny>,
        partition: &Bound<'py, PyAny>,
    ) -> PyResult<Result<Bound<'py, PyList>, &'static str>> {
        let timestamp_type = i64::from(header.attributes & TIMESTAMP_TYPE_BIT != 0)
            .into_pyobject(py)?
            .into_any();
        let list = PyList::empty(py);
        let mut cursor = Cursor {
            data: batch,
            at: HEADER,
        };
        let (mut last_headers, mut last_timestamp) = (None, None);
        for _ in 0..header.count.max(0) {
            let Some(parts) = parse_record(&mut cursor, header) else {
                return Ok(Err("a record is cut short or malformed"));
            };
            let record = self.record(
                py,
                topic,
                partition,
                &timestamp_type,
                &parts,
                &mut last_headers,
                &mut last_timestamp,
            )?;
            list.append(record)?;
        }
        if cursor.at != batch.len() {
            return Ok(Err("bytes left over after the batch's records"));
        }
        Ok(Ok(list))
    }
}

/// What `read` says of one batch.
#[derive(Default)]
struct Batch<'py> {
    base_offset: i64,
    next_offset: Option<i64>,
    producer_id: Option<i64>,
    transactional: bool,
    control: bool,
    abort: bool,
    problem: Option<&'static str>,
    records: Option<Bound<'py, PyList>>,
}

/// Is the control batch's first record an abort marker (control key version, type 0)?
fn abort_marker(batch: &[u8], header: &Header) -> Option<bool> {
    let mut cursor = Cursor {
        data: batch,
        at: HEADER,
    };
    let parts = parse_record(&mut cursor, header)?;
    let key = parts.key?;
    if key.len() < 4 {
        return None;
    }
    Some(i16::from_be_bytes([key[2], key[3]]) == 0)
}

impl BatchReader {
    /// One whole v2 batch: its header fields, and its records if it is a plain one.
    fn batch<'py>(
        &mut self,
        py: Python<'py>,
        batch: &[u8],
        topic: &Bound<'py, PyAny>,
        partition: &Bound<'py, PyAny>,
        check_crcs: bool,
    ) -> PyResult<Batch<'py>> {
        let mut out = Batch {
            base_offset: be_i64(batch, 0),
            ..Batch::default()
        };
        if batch.len() < HEADER {
            out.problem = Some("a batch shorter than its header");
            return Ok(out);
        }
        let crc = u32::from_be_bytes([
            batch[CRC_AT],
            batch[CRC_AT + 1],
            batch[CRC_AT + 2],
            batch[CRC_AT + 3],
        ]);
        if check_crcs && crc32c::crc32c(&batch[ATTRIBUTES_AT..]) != crc {
            out.problem = Some("Invalid CRC");
            return Ok(out);
        }
        let header = Header::read(batch);
        out.next_offset = Some(header.base_offset + i64::from(header.last_offset_delta) + 1);
        out.producer_id = (header.producer_id >= 0).then_some(header.producer_id);
        out.transactional = header.attributes & TRANSACTIONAL_BIT != 0;
        out.control = header.attributes & CONTROL_BIT != 0;
        if out.control {
            match abort_marker(batch, &header) {
                Some(abort) => out.abort = abort,
                None => out.problem = Some("a control batch without a marker"),
            }
        } else if header.attributes & COMPRESSION_MASK == 0 {
            match self.records(py, batch, &header, topic, partition)? {
                Ok(list) => out.records = Some(list),
                Err(reason) => out.problem = Some(reason),
            }
        }
        Ok(out)
    }
}

#[pymethods]
impl BatchReader {
    /// `record` is a named tuple type with `ConsumerRecord`'s eleven fields (and no instance
    /// dict, as a named tuple has none: its records are left out of the collector).
    #[new]
    fn new(record: &Bound<'_, PyType>) -> PyResult<Self> {
        let py = record.py();
        let fields = record
            .getattr("_fields")
            .and_then(|fields| fields.len())
            .ok();
        let dict_offset: isize = record.getattr("__dictoffset__")?.extract()?;
        if !record.is_subclass(&py.get_type::<PyTuple>())?
            || fields != Some(RECORD_FIELDS)
            || dict_offset != 0
        {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "record must be a {RECORD_FIELDS}-field named tuple (with no instance dict)"
            )));
        }
        Ok(BatchReader {
            record: record.clone().unbind(),
            no_headers: PyTuple::empty(py).unbind(),
            sizes: Vec::new(),
        })
    }

    /// The complete batches at the start of `data` (a fetch response's records of one
    /// partition), in order, each as a tuple: (base_offset, next_offset, producer_id or None,
    /// is_transactional, is_control, is_abort_marker, problem or None, records or None, start,
    /// end). `records` is None for a control batch, a compressed batch (read
    /// `data[start:end]` with aiokafka) and a batch with a problem. The answer is None when a
    /// batch is of an older format than v2 (read all of `data` with aiokafka). A last batch cut
    /// short (the fetch size ends inside it) is left out, as aiokafka leaves it.
    fn read<'py>(
        &mut self,
        py: Python<'py>,
        data: &Bound<'py, PyBytes>,
        topic: &Bound<'py, PyAny>,
        partition: &Bound<'py, PyAny>,
        check_crcs: bool,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let bytes = data.as_bytes();
        let batches = PyList::empty(py);
        let mut at = 0usize;
        while bytes.len() - at >= LOG_OVERHEAD {
            let length = be_i32(bytes, at + 8);
            let Some(end) = usize::try_from(length)
                .ok()
                .and_then(|n| (at + LOG_OVERHEAD).checked_add(n))
            else {
                return Ok(None); // a negative length: let aiokafka say what it makes of it
            };
            if end > bytes.len() {
                break;
            }
            let batch = &bytes[at..end];
            if batch.len() <= MAGIC_AT || batch[MAGIC_AT] != 2 {
                return Ok(None);
            }
            let item = self.batch(py, batch, topic, partition, check_crcs)?;
            // the fields `read` documents, in order (None for what the batch does not have)
            let item = (
                item.base_offset,
                item.next_offset,
                item.producer_id,
                item.transactional,
                item.control,
                item.abort,
                item.problem,
                item.records,
                at,
                end,
            )
                .into_pyobject(py)?;
            batches.append(item)?;
            at = end;
        }
        Ok(Some(batches))
    }
}

/// A partition's fetched records handed out one by one, with the position after each (the
/// per-record part of aiokafka's `PartitionRecords`, compiled: the fetcher asks for every
/// record).
///
/// `items` is what Python kept of the fetch, in order: a list of records (a batch's, each a
/// tuple with the offset third) or an int (the position to move to: past a batch, or past one
/// that is skipped). A record before the position is skipped (a batch can start before the
/// fetch offset); handing one out moves the position just past it. An int moves the position
/// only when the next record is asked for, as aiokafka moves past a batch only then. `error`
/// (an exception) is raised once everything before it is handed out, then the handout ends.
#[pyclass(module = "events._native")]
pub struct Handout {
    items: Py<PyList>,
    item: usize,
    records: Option<Py<PyList>>,
    at: usize,
    position: i64,
    error: Option<Py<PyAny>>,
}

#[pymethods]
impl Handout {
    #[new]
    #[pyo3(signature = (items, position, error=None))]
    fn new(items: &Bound<'_, PyList>, position: i64, error: Option<&Bound<'_, PyAny>>) -> Self {
        Handout {
            items: items.clone().unbind(),
            item: 0,
            records: None,
            at: 0,
            position,
            error: error.map(|e| e.clone().unbind()),
        }
    }

    /// The consumer's position: the offset of the next record to read.
    #[getter]
    fn position(&self) -> i64 {
        self.position
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        loop {
            if let Some(records) = &self.records {
                let records = records.bind(py);
                while self.at < records.len() {
                    let record = records.get_item(self.at)?;
                    self.at += 1;
                    let offset: i64 = record.cast::<PyTuple>()?.get_borrowed_item(2)?.extract()?;
                    if offset >= self.position {
                        self.position = offset + 1;
                        return Ok(Some(record));
                    }
                }
                self.records = None;
            }
            let items = self.items.bind(py);
            if self.item >= items.len() {
                return match self.error.take() {
                    Some(error) => Err(PyErr::from_value(error.into_bound(py))),
                    None => Ok(None),
                };
            }
            let item = items.get_item(self.item)?;
            self.item += 1;
            match item.cast_into::<PyList>() {
                Ok(records) => {
                    self.records = Some(records.unbind());
                    self.at = 0;
                }
                Err(jump) => self.position = jump.into_inner().extract()?,
            }
        }
    }
}
