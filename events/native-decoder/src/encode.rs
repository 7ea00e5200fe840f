//! The compiled fast path of `events.wire.encode_kept`: an event as the JSON bytes
//! `dumps_kept(encode_event(event))` makes, written straight from the event's slots.
//!
//! Rules of this module:
//!
//! * The bytes are exactly the Python encoder's (`events.wire` is the reference; the tests hold
//!   the two equal), or the answer is `None` and the Python encoder writes them.
//! * It takes the events of the tags the decoder builds (`TAGS`) whose values are exactly what
//!   JSON decoding makes: `dict` (with `str` keys), `list`, `str`, 64-bit `int`, finite `float`,
//!   `bool`, `None`. Anything else (a tuple, a subclass, a big int, NaN, a string with a lone
//!   surrogate, nesting deeper than `MAX_DEPTH`) defers.
//! * Numbers and strings are written as orjson writes them: floats in the shortest form that
//!   reads back the same, in decimal notation for exponents from -5 to 15 and scientific
//!   (`1e+16`, `1.5e-7`) beyond (the `zmij` crate writes them so); strings as UTF-8 with `"`,
//!   `\` and control characters escaped.

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};

/// Deeper JSON values defer (orjson refuses nesting beyond 254 levels).
const MAX_DEPTH: usize = 128;

/// How a tag's event is written after `"event"`, `"timestamp"` and a non-empty `"metadata"`:
/// its JSON keys with the byte offset of the slot each comes from, then whether an empty
/// `metadata` is written last (the user and bot encoders write it whatever it holds).
pub(crate) struct Layout {
    tag: &'static str,
    timestamp: isize,
    metadata: isize,
    keys: Vec<(&'static str, isize)>,
    metadata_last: bool,
}

impl Layout {
    /// The layout of `tag`, as `events.wire`'s encoders write it; `slots` are the names of the
    /// class's slots the decoder fills, `offsets` theirs (after `timestamp` and `metadata`).
    pub(crate) fn new(tag: &'static str, slots: &[&str], offsets: &[isize]) -> PyResult<Self> {
        let (keys, metadata_last): (&[(&'static str, &str)], bool) = match tag {
            "user" => (
                &[
                    ("text", "text"),
                    ("parse_data", "parse_data"),
                    ("input_channel", "input_channel"),
                    ("message_id", "message_id"),
                ],
                true,
            ),
            "bot" => (&[("text", "text"), ("data", "data")], true),
            "action" => (
                &[
                    ("name", "action_name"),
                    ("policy", "policy"),
                    ("confidence", "confidence"),
                    ("action_text", "action_text"),
                    ("hide_rule_turn", "hide_rule_turn"),
                ],
                false,
            ),
            "slot" => (&[("name", "key"), ("value", "value")], false),
            "followup" => (&[("name", "action_name")], false),
            "action_execution_rejected" => (
                &[
                    ("name", "action_name"),
                    ("policy", "policy"),
                    ("confidence", "confidence"),
                ],
                false,
            ),
            // the key is the slot's name
            "user_featurization" => (
                &[("use_text_for_featurization", "use_text_for_featurization")],
                false,
            ),
            "active_loop" => (&[("name", "name")], false),
            "loop_interrupted" => (&[("is_interrupted", "is_interrupted")], false),
            _ => (&[], false),
        };
        let keys = keys
            .iter()
            .map(
                |(key, name)| match slots.iter().position(|slot| slot == name) {
                    Some(at) => Ok((*key, offsets[at + 2])),
                    None => Err(PyValueError::new_err(format!(
                        "the {tag} event has no slot {name}"
                    ))),
                },
            )
            .collect::<PyResult<_>>()?;
        Ok(Layout {
            tag,
            timestamp: offsets[0],
            metadata: offsets[1],
            keys,
            metadata_last,
        })
    }
}

/// The value in the slot at `offset` of `event` (None if the slot is empty).
fn slot<'py>(event: &Bound<'py, PyAny>, offset: isize) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `offset` is the offset of a slot of `event`'s exact type (the caller looked the
    // type up); a slot holds a PyObject pointer or NULL, borrowed from the event.
    unsafe {
        let item = *((event.as_ptr() as *mut u8).offset(offset) as *mut *mut ffi::PyObject);
        (!item.is_null()).then(|| Bound::from_borrowed_ptr(event.py(), item))
    }
}

/// The event's JSON, or `None` to defer. `layout` is its exact type's.
pub(crate) fn event(event: &Bound<'_, PyAny>, layout: &Layout) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"event\":");
    string(&mut out, layout.tag);
    out.extend_from_slice(b",\"timestamp\":");
    value(&mut out, &slot(event, layout.timestamp)?, 0)?;
    let metadata = slot(event, layout.metadata)?;
    let empty = metadata.cast_exact::<PyDict>().ok()?.is_empty();
    if !empty {
        out.extend_from_slice(b",\"metadata\":");
        value(&mut out, &metadata, 0)?;
    }
    for (key, offset) in &layout.keys {
        out.push(b',');
        string(&mut out, key);
        out.push(b':');
        value(&mut out, &slot(event, *offset)?, 0)?;
    }
    if empty && layout.metadata_last {
        out.extend_from_slice(b",\"metadata\":{}");
    }
    out.push(b'}');
    Some(out)
}

/// Write one JSON value; `None` to defer.
fn value(out: &mut Vec<u8>, obj: &Bound<'_, PyAny>, depth: usize) -> Option<()> {
    if obj.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(text) = obj.cast_exact::<PyString>() {
        string(out, text.to_str().ok()?);
    } else if obj.is_exact_instance_of::<PyBool>() {
        out.extend_from_slice(if obj.is_truthy().ok()? {
            b"true"
        } else {
            b"false"
        });
    } else if obj.is_exact_instance_of::<PyInt>() {
        let mut buffer = itoa::Buffer::new();
        let text = match obj.extract::<i64>() {
            Ok(number) => buffer.format(number),
            Err(_) => buffer.format(obj.extract::<u64>().ok()?),
        };
        out.extend_from_slice(text.as_bytes());
    } else if let Ok(number) = obj.cast_exact::<PyFloat>() {
        float(out, number.value())?;
    } else if let Ok(dict) = obj.cast_exact::<PyDict>() {
        if depth >= MAX_DEPTH {
            return None;
        }
        out.push(b'{');
        for (i, (key, item)) in dict.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, key.cast_exact::<PyString>().ok()?.to_str().ok()?);
            out.push(b':');
            value(out, &item, depth + 1)?;
        }
        out.push(b'}');
    } else if let Ok(list) = obj.cast_exact::<PyList>() {
        if depth >= MAX_DEPTH {
            return None;
        }
        out.push(b'[');
        for (i, item) in list.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            value(out, &item, depth + 1)?;
        }
        out.push(b']');
    } else {
        return None;
    }
    Some(())
}

/// A JSON string as orjson writes it.
fn string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(found) = bytes[start..].iter().position(|&b| ESCAPE[b as usize]) {
        let at = start + found;
        out.extend_from_slice(&bytes[start..at]);
        let b = bytes[at];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
        }
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The bytes a JSON string escapes: `"`, `\` and the control characters.
const ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// A finite float as orjson writes it (see the module rules); `None` for NaN and infinities.
fn float(out: &mut Vec<u8>, number: f64) -> Option<()> {
    if !number.is_finite() {
        return None;
    }
    let mut buffer = zmij::Buffer::new();
    out.extend_from_slice(buffer.format_finite(number).as_bytes());
    Some(())
}
