//! `events._native.BatchWriter`: Kafka record batches (message format v2, uncompressed) written
//! from Python `(key, value)` and `(key, value, headers)` tuples, for the worker's transactional
//! producer (`streams.worker.Outbox` is the caller and says where it is used).
//!
//! Rules of this module:
//!
//! * It writes the bytes aiokafka's own builder (`aiokafka.record.default_records`) writes for
//!   the same records, timestamp and producer state: base offset 0 (the broker sets it),
//!   partition leader epoch -1, no timestamp type, CRC-32C (hardware where the CPU has it) over
//!   the attributes and everything after them.
//! * It stands in for aiokafka's `BatchBuilder` in aiokafka's producer (`send_batch`), so it
//!   answers what the producer asks of one: `record_count`, `size`, `close`, `closed`,
//!   `_set_producer_state` (the producer id, epoch and first sequence, set when the batch is
//!   drained) and `_build` (the bytes, made once).
//! * A record's key may also be a `str` (a store's drained changes are keyed by text): it is
//!   written as its UTF-8, as `str.encode()` gives it.
//! * Records go in by the list, up to a size (`extend`): one call per batch, not per record.
//!   Like aiokafka's builder it always takes a batch's first record, however large.
//! * What is not a record (a wrong type, a header that is not a name and a value) raises
//!   `TypeError` naming the record's index and what was expected; nothing is written for it.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyString, PyTuple};

/// Bytes of a whole v2 batch header, records count included.
const HEADER: usize = 61;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const TRANSACTIONAL_BIT: i16 = 0x10;
const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// A record batch being written; `_build` ends it.
#[pyclass(module = "events._native")]
pub struct BatchWriter {
    /// The header's room (written by `_build`) and the records so far.
    buffer: Vec<u8>,
    count: i32,
    transactional: bool,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    first_timestamp: Option<i64>,
    max_timestamp: i64,
    closed: bool,
    built: Option<Py<PyBytes>>,
    /// One record's bytes after its length, reused.
    scratch: Vec<u8>,
}

/// A zigzag varint, as Kafka's record format writes every signed number and length.
fn varint(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

fn varint_size(value: i64) -> usize {
    let raw = ((value << 1) ^ (value >> 63)) as u64;
    let bits = 64 - (raw | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// `bytes`, `bytearray` or None as a length (-1 for None) and its bytes.
fn sized(out: &mut Vec<u8>, item: &Bound<'_, PyAny>, index: usize, what: &str) -> PyResult<()> {
    if item.is_none() {
        varint(out, -1);
        return Ok(());
    }
    if let Ok(bytes) = item.cast::<PyBytes>() {
        let data = bytes.as_bytes();
        varint(out, data.len() as i64);
        out.extend_from_slice(data);
        return Ok(());
    }
    if let Ok(array) = item.cast::<PyByteArray>() {
        let data = array.to_vec();
        varint(out, data.len() as i64);
        out.extend_from_slice(&data);
        return Ok(());
    }
    Err(not_a_record(
        index,
        &format!("{what} bytes or None"),
        &item.get_type().name()?.to_string(),
    ))
}

/// A key: a `str` as its UTF-8, else as `sized` writes it.
fn key(out: &mut Vec<u8>, item: &Bound<'_, PyAny>, index: usize) -> PyResult<()> {
    let Ok(text) = item.cast::<PyString>() else {
        return sized(out, item, index, "key as str,");
    };
    let data = text.to_str().map_err(|_| {
        not_a_record(
            index,
            "a key str that UTF-8 can encode",
            "one with a lone surrogate",
        )
    })?;
    varint(out, data.len() as i64);
    out.extend_from_slice(data.as_bytes());
    Ok(())
}

fn not_a_record(index: usize, expected: &str, got: &str) -> PyErr {
    PyTypeError::new_err(format!("record {index}: expected {expected}, got {got}"))
}

impl BatchWriter {
    /// Record `index` (a tuple), as the batch's next record, into `scratch` (from its
    /// attributes on: its length goes before it).
    fn encode(
        &mut self,
        item: &Bound<'_, PyAny>,
        index: usize,
        timestamp_delta: i64,
    ) -> PyResult<()> {
        let tuple = item.cast::<PyTuple>().map_err(|_| {
            not_a_record(
                index,
                "a (key, value) or (key, value, headers) tuple",
                &item.get_type().name().map_or("?".into(), |n| n.to_string()),
            )
        })?;
        let fields = tuple.len();
        if fields != 2 && fields != 3 {
            return Err(not_a_record(
                index,
                "a (key, value) or (key, value, headers) tuple",
                &format!("a tuple of {fields}"),
            ));
        }
        let out = &mut self.scratch;
        out.clear();
        out.push(0); // attributes: none per record
        varint(out, timestamp_delta);
        varint(out, i64::from(self.count)); // the offset delta
        key(out, &tuple.get_item(0)?, index)?;
        sized(out, &tuple.get_item(1)?, index, "value as")?;
        let headers = if fields == 3 {
            Some(tuple.get_item(2)?)
        } else {
            None
        };
        match headers {
            Some(headers) if !headers.is_none() => {
                let count = headers.len().map_err(|_| {
                    not_a_record(index, "headers as a sequence of (name, value)", "no length")
                })?;
                varint(out, count as i64);
                let mut written = 0;
                for header in headers.try_iter()? {
                    let header = header?;
                    written += 1;
                    let pair = header.cast::<PyTuple>().ok().filter(|p| p.len() == 2);
                    let Some(pair) = pair else {
                        return Err(not_a_record(
                            index,
                            "each header as a (name, value) tuple",
                            &header.get_type().name()?.to_string(),
                        ));
                    };
                    let name = pair.get_item(0)?;
                    let Ok(name) = name.cast::<PyString>() else {
                        return Err(not_a_record(
                            index,
                            "a header name as str",
                            &name.get_type().name()?.to_string(),
                        ));
                    };
                    let name = name.to_str()?.as_bytes();
                    varint(out, name.len() as i64);
                    out.extend_from_slice(name);
                    sized(out, &pair.get_item(1)?, index, "a header value as")?;
                }
                if written != count {
                    let got = format!("{count} by its length but {written} when read");
                    return Err(not_a_record(index, "headers of one length", &got));
                }
            }
            _ => varint(out, 0),
        }
        Ok(())
    }
}

#[pymethods]
impl BatchWriter {
    /// An empty batch; `transactional` marks it as written in a transaction.
    #[new]
    #[pyo3(signature = (transactional=false))]
    fn new(transactional: bool) -> Self {
        BatchWriter {
            buffer: vec![0; HEADER],
            count: 0,
            transactional,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: 0,
            first_timestamp: None,
            max_timestamp: i64::MIN,
            closed: false,
            built: None,
            scratch: Vec::new(),
        }
    }

    /// Append `records[start:]` stamped `timestamp_ms`, in order, while the batch stays under
    /// `limit` bytes (its first record goes in whatever its size); how many went in.
    fn extend(
        &mut self,
        records: &Bound<'_, PyList>,
        start: usize,
        limit: usize,
        timestamp_ms: i64,
    ) -> PyResult<usize> {
        if self.closed {
            return Err(PyValueError::new_err(
                "the batch is closed; records go in a new one",
            ));
        }
        let first = *self.first_timestamp.get_or_insert(timestamp_ms);
        let delta = timestamp_ms - first;
        let mut taken = 0;
        for index in start..records.len() {
            let item = records.get_item(index)?;
            self.encode(&item, index, delta)?;
            let length = self.scratch.len();
            let needed = varint_size(length as i64) + length;
            // a batch is full once a record would take it to `limit` (aiokafka's rule)
            if self.count > 0 && self.buffer.len() + needed >= limit {
                break;
            }
            varint(&mut self.buffer, length as i64);
            self.buffer.extend_from_slice(&self.scratch);
            self.count += 1;
            taken += 1;
        }
        if taken > 0 {
            self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        } else if self.count == 0 {
            self.first_timestamp = None;
        }
        Ok(taken)
    }

    fn record_count(&self) -> i32 {
        self.count
    }

    /// The batch's bytes so far (header included), or built.
    fn size(&self, py: Python<'_>) -> usize {
        match &self.built {
            Some(built) => built.bind(py).as_bytes().len(),
            None => self.buffer.len(),
        }
    }

    fn close(&mut self) {
        self.closed = true;
    }

    fn closed(&self) -> bool {
        self.closed
    }

    /// Set by aiokafka's producer when it drains the batch (idempotence, transactions).
    fn _set_producer_state(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
    }

    /// The batch's bytes: its header written and checksummed, once.
    fn _build<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.closed = true;
        if let Some(built) = &self.built {
            return built.bind(py).clone();
        }
        let buffer = &mut self.buffer;
        let length = (buffer.len() - 12) as i32;
        let attributes = if self.transactional {
            TRANSACTIONAL_BIT
        } else {
            0
        };
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(&0i64.to_be_bytes()); // base offset: the broker's
        header.extend_from_slice(&length.to_be_bytes());
        header.extend_from_slice(&NO_PARTITION_LEADER_EPOCH.to_be_bytes());
        header.push(2); // magic
        header.extend_from_slice(&0u32.to_be_bytes()); // the CRC, below
        header.extend_from_slice(&attributes.to_be_bytes());
        header.extend_from_slice(&(self.count - 1).max(0).to_be_bytes()); // last offset delta
                                                                          // an empty batch's times are -1, as aiokafka's compiled builder writes them
        header.extend_from_slice(&self.first_timestamp.unwrap_or(-1).to_be_bytes());
        let max_timestamp = self.first_timestamp.map_or(-1, |_| self.max_timestamp);
        header.extend_from_slice(&max_timestamp.to_be_bytes());
        header.extend_from_slice(&self.producer_id.to_be_bytes());
        header.extend_from_slice(&self.producer_epoch.to_be_bytes());
        header.extend_from_slice(&self.base_sequence.to_be_bytes());
        header.extend_from_slice(&self.count.to_be_bytes());
        buffer[..HEADER].copy_from_slice(&header);
        let crc = crc32c::crc32c(&buffer[ATTRIBUTES_AT..]);
        buffer[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
        let built = PyBytes::new(py, buffer);
        self.built = Some(built.clone().unbind());
        self.buffer = Vec::new();
        built
    }
}
