//! `events._native`: the compiled fast path of `events.wire.decode_record` for JSON bytes.
//!
//! Rules of this module:
//!
//! * `events.wire` and `events._decoders` are the reference. This decoder either returns exactly
//!   the `Record` they would return for the same bytes, or `None` ("defer"), and the Python
//!   decoder then decides: it accepts the record or raises the precise error. Nothing here
//!   raises for bad input, so every rejection keeps the Python decoder's message.
//! * It takes only what it can judge exactly: the frequent Rasa 3.6 tags, a non-empty string
//!   `sender_id` (agreeing with the record key when one is given), and no keys but the ones the
//!   tag reads. Anything else (rare tags, legacy forms, extra keys, duplicate keys, a number out
//!   of 64-bit range, a string with a lone surrogate, ...) defers.
//! * JSON objects and arrays inside a record (metadata, parse data, slot values, bot data) come
//!   out as `orjson.loads` (the Python decoder's parser) makes them: see `Json`.
//! * Caches save memory and time, never change values: equal `metadata` and bot `data` objects
//!   (same bytes) share one dict; names (action, policy, slot and loop names, input channels),
//!   bot texts, object keys and short strings inside objects share one string each. Events treat
//!   their dicts as read-only (see `events.model`), so sharing is safe.
//! * Events are built like `events.model.build_*` do: allocated by their type and their slots
//!   filled directly (a frozen dataclass's `__init__` costs more than parsing the record).
//! * `decode_batch` reads a whole consumed batch for the worker's fold in one call (the checks
//!   `processors.stream` makes before it decodes, the event, its history record: the record's
//!   own bytes when they decode to the event alone); what it does not take is None there, and
//!   the fold takes its record-by-record path for it. It may be handed what `skim` read ahead
//!   of the records in another thread (`skim.rs`): a record read there starts from it, and
//!   decodes to the same event as when parsed here.

mod arenas;
mod batches;
mod encode;
mod records;
mod skim;

use std::borrow::Cow;
use std::sync::{Mutex, MutexGuard};

use rustc_hash::FxHashMap as HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A top-level value as its JSON text, or `None` when the key is absent.
#[derive(Default, Clone, Copy)]
struct Raw<'a>(Option<&'a str>);

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|raw| Raw(Some(raw.get())))
    }
}

impl<'a> Raw<'a> {
    /// The JSON text, `None` when absent.
    fn text(self) -> Option<&'a str> {
        self.0
    }

    /// Absent or JSON null.
    fn is_null(self) -> bool {
        matches!(self.text(), None | Some("null"))
    }
}

macro_rules! record_fields {
    ($($name:ident = $bit:expr),* $(,)?) => {
        /// Every key a handled tag reads; any other key fails the parse, which defers.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Rec<'a> {
            $(#[serde(borrow, default)] $name: Raw<'a>,)*
        }

        /// How many keys a record may have.
        const FIELDS: usize = [$($bit),*].len();

        impl<'a> Rec<'a> {
            /// One bit per key present.
            fn present(&self) -> u32 {
                let mut bits = 0;
                $(if self.$name.0.is_some() { bits |= $bit; })*
                bits
            }

            /// Where each key's JSON text is in `data`, the bytes this was read from (see
            /// `skim::Spans`).
            fn spans(&self, data: &[u8]) -> skim::Spans {
                let base = data.as_ptr() as usize;
                let mut spans = [(0u32, 0u32); FIELDS];
                $(if let Some(text) = self.$name.0 {
                    // a JSON text is never empty, so a length of 0 stands for an absent key
                    spans[($bit as u32).trailing_zeros() as usize] =
                        ((text.as_ptr() as usize - base) as u32, text.len() as u32);
                })*
                spans
            }

            /// The record `spans` describes in `data`.
            ///
            /// # Safety
            /// `spans` must be what `spans` gave for a `Rec` read from these same bytes (each
            /// span is then inside `data` and valid UTF-8).
            unsafe fn from_spans(data: &'a [u8], spans: &skim::Spans) -> Self {
                let text = |(start, len): (u32, u32)| -> Raw<'a> {
                    if len == 0 {
                        return Raw(None);
                    }
                    let bytes = data.get_unchecked(start as usize..(start + len) as usize);
                    Raw(Some(std::str::from_utf8_unchecked(bytes)))
                };
                Rec { $($name: text(spans[($bit as u32).trailing_zeros() as usize]),)* }
            }
        }
    };
}

const SENDER_ID: u32 = 1;
const EVENT: u32 = 1 << 1;
const TIMESTAMP: u32 = 1 << 2;
const METADATA: u32 = 1 << 3;
const NAME: u32 = 1 << 4;
const POLICY: u32 = 1 << 5;
const CONFIDENCE: u32 = 1 << 6;
const ACTION_TEXT: u32 = 1 << 7;
const HIDE_RULE_TURN: u32 = 1 << 8;
const TEXT: u32 = 1 << 9;
const DATA: u32 = 1 << 10;
const VALUE: u32 = 1 << 11;
const USE_TEXT: u32 = 1 << 12;
const PARSE_DATA: u32 = 1 << 13;
const INPUT_CHANNEL: u32 = 1 << 14;
const MESSAGE_ID: u32 = 1 << 15;
const IS_INTERRUPTED: u32 = 1 << 16;

record_fields! {
    sender_id = SENDER_ID,
    event = EVENT,
    timestamp = TIMESTAMP,
    metadata = METADATA,
    name = NAME,
    policy = POLICY,
    confidence = CONFIDENCE,
    action_text = ACTION_TEXT,
    hide_rule_turn = HIDE_RULE_TURN,
    text = TEXT,
    data = DATA,
    value = VALUE,
    use_text_for_featurization = USE_TEXT,
    parse_data = PARSE_DATA,
    input_channel = INPUT_CHANNEL,
    message_id = MESSAGE_ID,
    is_interrupted = IS_INTERRUPTED,
}

/// The keys every record may have.
const COMMON: u32 = SENDER_ID | EVENT | TIMESTAMP | METADATA;

/// The Python-side name, the keys it may carry besides `COMMON`, and the slots it fills after
/// `timestamp` and `metadata`, for every tag this decoder handles.
const TAGS: &[(&str, &str, u32, &[&str])] = &[
    (
        "user",
        "UserUttered",
        TEXT | PARSE_DATA | INPUT_CHANNEL | MESSAGE_ID,
        &[
            "text",
            "intent",
            "entities",
            "parse_data",
            "input_channel",
            "message_id",
        ],
    ),
    (
        "user_featurization",
        "DefinePrevUserUtteredFeaturization",
        USE_TEXT,
        &["use_text_for_featurization"],
    ),
    ("bot", "BotUttered", TEXT | DATA, &["text", "data"]),
    (
        "action",
        "ActionExecuted",
        NAME | POLICY | CONFIDENCE | ACTION_TEXT | HIDE_RULE_TURN,
        &[
            "action_name",
            "policy",
            "confidence",
            "action_text",
            "hide_rule_turn",
        ],
    ),
    ("slot", "SlotSet", NAME | VALUE, &["key", "value"]),
    ("reset_slots", "AllSlotsReset", 0, &[]),
    ("restart", "Restarted", 0, &[]),
    ("rewind", "UserUtteranceReverted", 0, &[]),
    ("undo", "ActionReverted", 0, &[]),
    ("pause", "ConversationPaused", 0, &[]),
    ("resume", "ConversationResumed", 0, &[]),
    ("followup", "FollowupAction", NAME, &["action_name"]),
    ("session_started", "SessionStarted", 0, &[]),
    ("active_loop", "ActiveLoop", NAME, &["name"]),
    (
        "loop_interrupted",
        "LoopInterrupted",
        IS_INTERRUPTED,
        &["is_interrupted"],
    ),
    (
        "action_execution_rejected",
        "ActionExecutionRejected",
        NAME | POLICY | CONFIDENCE,
        &["action_name", "policy", "confidence"],
    ),
];

/// The keys Rasa writes first in a complete parse, in its order (`_decoders._PARSE_KEYS`).
const PARSE_KEYS: [&str; 5] = ["intent", "entities", "text", "message_id", "metadata"];

const CACHE_LIMIT: usize = 4096;

/// Names and bot texts longer than this are not shared (they would not repeat).
const LONG_NAME: usize = 256;

/// Metadata and bot data longer than this (as JSON) are not shared: the cache holds at most
/// `CACHE_LIMIT` of them.
const LONG_OBJECT: usize = 2048;

/// String values up to this length inside JSON objects are shared (longer ones rarely repeat).
const SHORT_TEXT: usize = 24;

type Shared = HashMap<Box<str>, Py<PyString>>;

/// Builds, straight from JSON text, the Python value `orjson.loads` returns for it: dicts (a
/// repeated key keeps its first place and its last value), lists, str, int (up to 64 bits,
/// beyond that a float, as orjson does), float (correctly rounded), bool, None. Object keys of
/// up to 64 bytes are shared strings, as in orjson, and so are string values of up to
/// `SHORT_TEXT` bytes (intent and entity names and the like repeat from record to record).
struct Json<'c, 'py> {
    py: Python<'py>,
    keys: Option<&'c mut Shared>,
}

impl<'c, 'py> Json<'c, 'py> {
    fn parse(
        py: Python<'py>,
        keys: Option<&'c mut Shared>,
        text: &str,
    ) -> Option<Bound<'py, PyAny>> {
        let mut reader = serde_json::Deserializer::from_str(text);
        let value = Json { py, keys }.deserialize(&mut reader).ok()?;
        reader.end().ok()?;
        Some(value)
    }

    /// A shared string for an object key or a short value (a new one past 64 bytes).
    fn key(&mut self, text: &str) -> Bound<'py, PyString> {
        let Some(keys) = self.keys.as_deref_mut().filter(|_| text.len() <= 64) else {
            return PyString::new(self.py, text);
        };
        if let Some(shared) = keys.get(text) {
            return shared.bind(self.py).clone();
        }
        let made = PyString::new(self.py, text);
        if keys.len() >= CACHE_LIMIT {
            keys.clear();
        }
        keys.insert(text.into(), made.clone().unbind());
        made
    }
}

fn python<E: serde::de::Error>(error: PyErr) -> E {
    E::custom(error)
}

impl<'de, 'py> DeserializeSeed<'de> for Json<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<Self::Value, D::Error> {
        reader.deserialize_any(self)
    }
}

/// An object key, shared through the cache.
struct Key<'j, 'c, 'py>(&'j mut Json<'c, 'py>);

impl<'de, 'py> DeserializeSeed<'de> for Key<'_, '_, 'py> {
    type Value = Bound<'py, PyString>;

    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<Self::Value, D::Error> {
        reader.deserialize_str(self)
    }
}

impl<'de, 'py> Visitor<'de> for Key<'_, '_, 'py> {
    type Value = Bound<'py, PyString>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(self.0.key(text))
    }
}

impl<'de, 'py> Visitor<'de> for Json<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.py.None().into_bound(self.py))
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.py, value).to_owned().into_any())
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
        let Ok(made) = value.into_pyobject(self.py);
        Ok(made.into_any())
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
        let Ok(made) = value.into_pyobject(self.py);
        Ok(made.into_any())
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Self::Value, E> {
        let Ok(made) = value.into_pyobject(self.py);
        Ok(made.into_any())
    }

    fn visit_str<E: serde::de::Error>(mut self, value: &str) -> Result<Self::Value, E> {
        if value.len() <= SHORT_TEXT {
            return Ok(self.key(value).into_any());
        }
        Ok(PyString::new(self.py, value).into_any())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut items: A) -> Result<Self::Value, A::Error> {
        let list = PyList::empty(self.py);
        while let Some(item) = items.next_element_seed(Json {
            py: self.py,
            keys: self.keys.as_deref_mut(),
        })? {
            list.append(item).map_err(python)?;
        }
        Ok(list.into_any())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut entries: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.py);
        while let Some(key) = entries.next_key_seed(Key(&mut self))? {
            let value = entries.next_value_seed(Json {
                py: self.py,
                keys: self.keys.as_deref_mut(),
            })?;
            dict.set_item(key, value).map_err(python)?;
        }
        Ok(dict.into_any())
    }
}

/// An event class and the byte offsets of its slots (`timestamp`, `metadata`, then its own).
struct Kind {
    cls: Py<PyType>,
    offsets: Vec<isize>,
    allowed: u32,
}

impl Kind {
    fn new(cls: &Bound<'_, PyType>, slots: &[&str], allowed: u32) -> PyResult<Self> {
        let mut offsets = Vec::with_capacity(slots.len() + 2);
        for name in ["timestamp", "metadata"].iter().chain(slots) {
            let descriptor = cls.getattr(*name)?;
            let kind = descriptor.get_type().name()?;
            if kind.to_cow()? != "member_descriptor" {
                return Err(PyValueError::new_err(format!(
                    "{}.{name} is a {kind}, not a slot",
                    cls.name()?
                )));
            }
            // SAFETY: a `member_descriptor` is a PyMemberDescrObject; pyo3-ffi types its
            // `d_member` as PyGetSetDef, but CPython stores a PyMemberDef there.
            let offset = unsafe {
                let member = (*(descriptor.as_ptr() as *mut ffi::PyMemberDescrObject)).d_member
                    as *const ffi::PyMemberDef;
                (*member).offset
            };
            offsets.push(offset);
        }
        let total: usize = cls
            .getattr("__mro__")?
            .try_iter()?
            .map(|klass| -> PyResult<usize> {
                let own = klass?.getattr("__dict__")?;
                match own.get_item("__slots__") {
                    Ok(names) => Ok(names.len()?),
                    Err(_) => Ok(0),
                }
            })
            .sum::<PyResult<usize>>()?;
        if total != offsets.len() {
            return Err(PyValueError::new_err(format!(
                "{} has {total} slots; the native decoder fills {}",
                cls.name()?,
                offsets.len()
            )));
        }
        Ok(Kind {
            cls: cls.clone().unbind(),
            offsets,
            allowed: allowed | COMMON,
        })
    }

    /// A new instance with every slot set, in the order of `offsets`.
    fn build<'py, const N: usize>(
        &self,
        py: Python<'py>,
        values: [Bound<'py, PyAny>; N],
    ) -> PyResult<Bound<'py, PyAny>> {
        assert_eq!(N, self.offsets.len(), "every slot is set");
        let obj = allocate(py, &self.cls, 0)?;
        // SAFETY: every slot of the new instance is NULL; each is set once with a new
        // reference, which the instance owns from then on.
        unsafe {
            for (value, offset) in values.into_iter().zip(&self.offsets) {
                let slot = (obj as *mut u8).offset(*offset) as *mut *mut ffi::PyObject;
                *slot = value.into_ptr();
            }
            // An event refers only to JSON values, names and numbers, never back to itself or to
            // anything that could refer to it: it can be in no reference cycle, so the cyclic
            // garbage collector need not walk it (CPython untracks such tuples and dicts too).
            ffi::PyObject_GC_UnTrack(obj.cast());
            Ok(Bound::from_owned_ptr(py, obj))
        }
    }
}

/// A new, zeroed instance of `cls` (`items` for a variable-size type such as a tuple), made by
/// the type's own allocator: every slot or item is NULL until the caller sets it.
fn allocate(py: Python<'_>, cls: &Py<PyType>, items: isize) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: `cls` is a live type object; `tp_alloc` is its allocator (or the generic one).
    let obj = unsafe {
        let tp = cls.as_ptr() as *mut ffi::PyTypeObject;
        (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc)(tp, items)
    };
    if obj.is_null() {
        return Err(PyErr::fetch(py));
    }
    Ok(obj)
}

/// Shared values: dicts by their JSON bytes, names and object keys by their text.
#[derive(Default)]
struct Caches {
    objects: HashMap<Box<[u8]>, Py<PyDict>>,
    names: Shared,
    keys: Shared,
}

/// The compiled decoder; `events.wire` makes one and asks it first.
#[pyclass(module = "events._native")]
struct Decoder {
    kinds: HashMap<&'static str, Kind>,
    /// Each event class (by its address) with how `encode` writes it and its slot offsets.
    encoders: HashMap<usize, encode::Layout>,
    record: Py<PyType>,
    caches: Mutex<Caches>,
    /// `events.wire.decode_record_python`, for whatever this decoder defers.
    fallback: Py<PyAny>,
    default_max_bytes: usize,
    /// The `now` of a call without one (made once, not per record).
    zero: Py<PyAny>,
}

/// Defer: return `Ok(None)` when a reader could not judge the value.
macro_rules! take {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

/// A JSON string's text, or `None` when it is not a string this decoder can read.
fn string(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.starts_with('"') {
        return None;
    }
    serde_json::from_str::<Cow<'_, str>>(raw).ok()
}

/// A JSON number as Python reads it: int stays int (64-bit only), float stays float (finite).
fn number<'py>(py: Python<'py>, raw: &str) -> Option<Bound<'py, PyAny>> {
    let first = *raw.as_bytes().first()?;
    if first != b'-' && !first.is_ascii_digit() {
        return None;
    }
    if raw.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        let value: f64 = raw.parse().ok()?;
        value
            .is_finite()
            .then(|| value.into_pyobject(py).ok())
            .flatten()
            .map(Bound::into_any)
    } else {
        let value: i64 = raw.parse().ok()?;
        value.into_pyobject(py).ok().map(Bound::into_any)
    }
}

/// `true`/`false`; `null` only where the default is `None`; the default when absent.
fn flag<'py>(py: Python<'py>, raw: Raw<'_>, default: Option<bool>) -> Option<Bound<'py, PyAny>> {
    let value = match raw.text() {
        None => default,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some("null") if default.is_none() => None,
        Some(_) => return None,
    };
    Some(match value {
        Some(b) => PyBool::new(py, b).to_owned().into_any(),
        None => py.None().into_bound(py),
    })
}

/// One `decode` call: the decoder and its caches, locked once for the whole record (a busy
/// lock, from another thread, only means nothing is shared this time).
struct Pass<'d> {
    decoder: &'d Decoder,
    caches: Option<MutexGuard<'d, Caches>>,
}

impl Pass<'_> {
    /// A string or null (`_decoders._text`); `share` makes equal texts one string object.
    fn text<'py>(
        &mut self,
        py: Python<'py>,
        raw: Raw<'_>,
        share: bool,
    ) -> Option<Bound<'py, PyAny>> {
        if raw.is_null() {
            return Some(py.None().into_bound(py));
        }
        let text = string(raw.text()?)?;
        Some(if share {
            self.share(py, &text)
        } else {
            PyString::new(py, &text).into_any()
        })
    }

    /// One string object for equal names and bot texts (up to `LONG_NAME` bytes).
    fn share<'py>(&mut self, py: Python<'py>, text: &str) -> Bound<'py, PyAny> {
        if text.len() > LONG_NAME {
            return PyString::new(py, text).into_any();
        }
        let caches = &mut self.caches;
        if let Some(shared) = caches.as_ref().and_then(|c| c.names.get(text)) {
            return shared.bind(py).clone().into_any();
        }
        let made = PyString::new(py, text);
        if let Some(caches) = caches.as_mut() {
            if caches.names.len() >= CACHE_LIMIT {
                caches.names.clear();
            }
            caches.names.insert(text.into(), made.clone().unbind());
        }
        made.into_any()
    }

    /// Any JSON value, exactly as `orjson.loads` (the Python decoder's parser) reads it.
    fn any<'py>(&mut self, py: Python<'py>, raw: &str) -> Option<Bound<'py, PyAny>> {
        Json::parse(py, self.caches.as_mut().map(|c| &mut c.keys), raw)
    }

    /// An object or null (null and absent: a new `{}`).
    fn object<'py>(&mut self, py: Python<'py>, raw: Raw<'_>) -> Option<Bound<'py, PyAny>> {
        if raw.is_null() {
            return Some(PyDict::new(py).into_any());
        }
        let text = raw.text()?;
        if !text.starts_with('{') {
            return None;
        }
        self.any(py, text)
    }

    /// An object or null, equal objects shared (`metadata`, bot `data`) unless longer than
    /// `LONG_OBJECT` bytes of JSON (the cache's memory stays bounded).
    fn shared_object<'py>(&mut self, py: Python<'py>, raw: Raw<'_>) -> Option<Bound<'py, PyAny>> {
        let shareable = |text: &&str| text.starts_with('{') && text.len() <= LONG_OBJECT;
        let Some(text) = raw.text().filter(shareable) else {
            return self.object(py, raw);
        };
        if let Some(shared) = self
            .caches
            .as_ref()
            .and_then(|c| c.objects.get(text.as_bytes()))
        {
            return Some(shared.bind(py).clone().into_any());
        }
        let parsed = self.any(py, text)?;
        if let (Some(caches), Ok(dict)) = (self.caches.as_mut(), parsed.cast::<PyDict>()) {
            if caches.objects.len() >= CACHE_LIMIT {
                caches.objects.clear();
            }
            caches
                .objects
                .insert(text.as_bytes().into(), dict.clone().unbind());
        }
        Some(parsed)
    }

    /// Any JSON value (scalars without the general parser).
    fn value<'py>(&mut self, py: Python<'py>, raw: &str) -> Option<Bound<'py, PyAny>> {
        match raw {
            "null" => Some(py.None().into_bound(py)),
            "true" => Some(PyBool::new(py, true).to_owned().into_any()),
            "false" => Some(PyBool::new(py, false).to_owned().into_any()),
            _ if raw.starts_with('"') => Some(PyString::new(py, &string(raw)?).into_any()),
            _ => number(py, raw).or_else(|| self.any(py, raw)),
        }
    }

    /// The timestamp: a number kept as given, falsy or absent or null -> `now`.
    fn timestamp<'py>(
        &mut self,
        py: Python<'py>,
        raw: Raw<'_>,
        now: &Bound<'py, PyAny>,
    ) -> Option<Bound<'py, PyAny>> {
        if raw.is_null() {
            return Some(now.clone());
        }
        let value = number(py, raw.text()?)?;
        Some(if value.is_truthy().ok()? {
            value
        } else {
            now.clone()
        })
    }

    /// A number or null (`_decoders._number`).
    fn optional_number<'py>(&mut self, py: Python<'py>, raw: Raw<'_>) -> Option<Bound<'py, PyAny>> {
        if raw.is_null() {
            return Some(py.None().into_bound(py));
        }
        number(py, raw.text()?)
    }

    /// The user event's fields after `timestamp` and `metadata` (`_decoders._user`).
    fn user<'py>(
        &mut self,
        py: Python<'py>,
        rec: &Rec<'_>,
        metadata: &Bound<'py, PyAny>,
    ) -> PyResult<Option<[Bound<'py, PyAny>; 6]>> {
        let text = take!(self.text(py, rec.text, false));
        let message_id = take!(self.text(py, rec.message_id, false));
        let channel = take!(self.text(py, rec.input_channel, true));
        let raw = take!(rec.parse_data.text());
        if !raw.starts_with('{') {
            return Ok(None);
        }
        let parse = take!(self.any(py, raw));
        let parse = take!(parse.cast_into::<PyDict>().ok());
        let intent = match parse.get_item("intent")? {
            None => PyDict::new(py).into_any(),
            Some(value) if value.is_none() => PyDict::new(py).into_any(),
            Some(value) if value.is_instance_of::<PyDict>() => value,
            Some(_) => return Ok(None),
        };
        let entities = match parse.get_item("entities")? {
            None => PyList::empty(py).into_any(),
            Some(value) if value.is_none() => PyList::empty(py).into_any(),
            Some(value) => {
                let list = take!(value.cast::<PyList>().ok());
                if !list.iter().all(|item| item.is_instance_of::<PyDict>()) {
                    return Ok(None);
                }
                value
            }
        };
        let complete = parse.len() >= PARSE_KEYS.len()
            && parse.keys().iter().zip(PARSE_KEYS).all(|(key, expected)| {
                key.cast::<PyString>()
                    .is_ok_and(|k| k.to_str().is_ok_and(|k| k == expected))
            });
        let full = if complete {
            parse.clone()
        } else {
            let full = PyDict::new(py);
            full.set_item("intent", &intent)?;
            full.set_item("entities", &entities)?;
            full.set_item("text", &text)?;
            full.set_item("message_id", &message_id)?;
            full.set_item("metadata", metadata)?;
            full.update(parse.as_mapping())?;
            full
        };
        Ok(Some([
            text,
            intent,
            entities,
            full.into_any(),
            channel,
            message_id,
        ]))
    }

    fn event<'py>(
        &mut self,
        py: Python<'py>,
        tag: &str,
        rec: &Rec<'_>,
        now: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let decoder = self.decoder;
        let kind = take!(decoder.kinds.get(tag));
        if rec.present() & !kind.allowed != 0 {
            return Ok(None);
        }
        let ts = take!(self.timestamp(py, rec.timestamp, now));
        let md = take!(self.shared_object(py, rec.metadata));
        let event = match tag {
            "user" => {
                let [text, intent, entities, full, channel, message_id] =
                    take!(self.user(py, rec, &md)?);
                kind.build(
                    py,
                    [ts, md, text, intent, entities, full, channel, message_id],
                )?
            }
            "user_featurization" => {
                let flag = take!(flag(py, rec.use_text_for_featurization, None));
                kind.build(py, [ts, md, flag])?
            }
            "bot" => {
                let text = take!(self.text(py, rec.text, true)); // templated: texts repeat
                let data = take!(self.shared_object(py, rec.data));
                kind.build(py, [ts, md, text, data])?
            }
            "action" => {
                if rec.name.is_null() && rec.action_text.is_null() {
                    return Ok(None);
                }
                let name = take!(self.text(py, rec.name, true));
                let policy = take!(self.text(py, rec.policy, true));
                let confidence = take!(self.optional_number(py, rec.confidence));
                let action_text = take!(self.text(py, rec.action_text, false));
                let hide = take!(flag(py, rec.hide_rule_turn, Some(false)));
                kind.build(py, [ts, md, name, policy, confidence, action_text, hide])?
            }
            "slot" => {
                let key = take!(rec.name.text().and_then(string).filter(|k| !k.is_empty()));
                let name = self.share(py, &key);
                let value = take!(self.value(py, take!(rec.value.text())));
                kind.build(py, [ts, md, name, value])?
            }
            "followup" | "active_loop" => {
                let name = take!(self.text(py, rec.name, true));
                kind.build(py, [ts, md, name])?
            }
            "loop_interrupted" => {
                let interrupted = take!(flag(py, rec.is_interrupted, Some(false)));
                kind.build(py, [ts, md, interrupted])?
            }
            "action_execution_rejected" => {
                let name = take!(self.text(py, rec.name, true));
                let policy = take!(self.text(py, rec.policy, true));
                let confidence = take!(self.optional_number(py, rec.confidence));
                kind.build(py, [ts, md, name, policy, confidence])?
            }
            _ => kind.build(py, [ts, md])?,
        };
        Ok(Some(event))
    }
}

#[pymethods]
impl Decoder {
    /// `Decoder(classes, record, fallback, default_max_bytes)`: `classes` maps class names to
    /// the event classes of `events.model`, `record` is `events.wire.Record`, `fallback` is
    /// `events.wire.decode_record_python` and `default_max_bytes` its default size limit.
    #[new]
    fn new(
        classes: &Bound<'_, PyDict>,
        record: &Bound<'_, PyType>,
        fallback: Py<PyAny>,
        default_max_bytes: usize,
    ) -> PyResult<Self> {
        let mut kinds = HashMap::default();
        let mut encoders = HashMap::default();
        for (tag, class_name, allowed, slots) in TAGS {
            let cls = classes
                .get_item(class_name)?
                .ok_or_else(|| PyValueError::new_err(format!("no class {class_name}")))?;
            let kind = Kind::new(cls.cast::<PyType>()?, slots, *allowed)?;
            let layout = encode::Layout::new(tag, slots, &kind.offsets)?;
            encoders.insert(cls.as_ptr() as usize, layout);
            kinds.insert(*tag, kind);
        }
        let tuple = record.py().get_type::<PyTuple>();
        let fields = record
            .getattr("_fields")
            .and_then(|fields| fields.len())
            .ok();
        if !record.is_subclass(&tuple)? || fields != Some(2) {
            return Err(PyValueError::new_err(
                "record must be a 2-field named tuple",
            ));
        }
        Ok(Decoder {
            kinds,
            encoders,
            record: record.clone().unbind(),
            caches: Mutex::new(Caches::default()),
            fallback,
            default_max_bytes,
            zero: 0.0f64.into_pyobject(record.py())?.into_any().unbind(),
        })
    }

    /// `events.decode_record` itself: this decoder for JSON bytes within the size limit, the
    /// Python decoder (`fallback`) for everything it defers and every other input.
    #[pyo3(signature = (data, *, now=None, max_bytes=None, conversation_id=None))]
    fn decode_record<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        now: Option<Bound<'py, PyAny>>,
        max_bytes: Option<Bound<'py, PyAny>>,
        conversation_id: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = match &max_bytes {
            None => Some(self.default_max_bytes),
            Some(value) => value.extract::<usize>().ok(),
        };
        let key = match &conversation_id {
            None => Some(None),
            Some(value) => value
                .cast::<PyString>()
                .ok()
                .and_then(|k| k.to_str().ok())
                .map(Some),
        };
        if let (Ok(bytes), Some(limit), Some(key)) = (data.cast_exact::<PyBytes>(), limit, key) {
            let raw = bytes.as_bytes();
            if raw.len() <= limit {
                let stamp = match &now {
                    Some(now) if !now.is_none() => now.clone(),
                    _ => self.zero.bind(py).clone(),
                };
                if let Some(record) = self.decode(py, raw, stamp, key)? {
                    return Ok(record);
                }
            }
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item("now", now)?;
        if let Some(max_bytes) = max_bytes {
            kwargs.set_item("max_bytes", max_bytes)?;
        }
        kwargs.set_item("conversation_id", conversation_id)?;
        self.fallback.bind(py).call((data,), Some(&kwargs))
    }

    /// The bytes `events.wire.encode_kept` keeps for `event` (exactly the Python encoder's), or
    /// None when the Python encoder must write them (see `encode.rs`).
    fn encode<'py>(
        &self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
    ) -> Option<Bound<'py, PyBytes>> {
        let layout = self.encoders.get(&(event.get_type().as_ptr() as usize))?;
        let bytes = encode::event(event, layout)?;
        Some(PyBytes::new(py, &bytes))
    }

    /// The `Record` in `data` (one JSON object), or None when the Python decoder must decide.
    ///
    /// `now` stands in for a falsy timestamp; `conversation_id` (the record key, empty or None
    /// when unknown) must equal the `sender_id` when given.
    #[pyo3(signature = (data, now, conversation_id=None))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        now: Bound<'py, PyAny>,
        conversation_id: Option<&str>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut caches = self.caches.try_lock().ok();
        let Some((sender, event)) = self.parse(
            py,
            &mut caches,
            data,
            &now,
            conversation_id,
            skim::Ahead::Unknown,
        )?
        else {
            return Ok(None);
        };
        drop(caches);
        let sender = PyString::new(py, &sender);
        self.pair(py, sender.into_any(), event).map(Some)
    }

    /// What `processors.stream.StreamFolder.process_batch` reads of each consumed record, for a
    /// batch at once: for each of `records` (objects with `key`, `value`, `timestamp` in
    /// milliseconds and `headers`), the tuple `(conversation_id, event, kept)` when this decoder
    /// takes it, else None.
    ///
    /// It takes a record keyed by UTF-8 bytes, whose value is JSON bytes of at most `max_bytes`
    /// that `decode` reads with `now` = `timestamp / 1000` and the key as the conversation id,
    /// and without a header named `control` (such a record is a control, not an event).
    /// `kept` is the history record: the record's value itself when the event has the value's
    /// own timestamp (then `events.wire.decode_event` reads the value as this event: it ignores
    /// `sender_id`), else `encode`'s bytes, or None when the Python encoder must write them. A
    /// None item is decided by the Python path, which gives every error its message.
    ///
    /// `skims`: what `skim` returned for these records, in order, the first from its record
    /// `start` on (see `Skimmed::ahead`: a record is taken from there only if its value is the
    /// very object read).
    #[pyo3(signature = (records, max_bytes, control, skims=None, start=0))]
    fn decode_batch<'py>(
        &self,
        py: Python<'py>,
        records: &Bound<'py, PyAny>,
        max_bytes: usize,
        control: &str,
        skims: Option<Vec<PyRef<'py, skim::Skimmed>>>,
        start: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let mut batch = Batch {
            caches: self.caches.try_lock().ok(),
            conversations: HashMap::default(),
            key: pyo3::intern!(py, "key"),
            value: pyo3::intern!(py, "value"),
            timestamp: pyo3::intern!(py, "timestamp"),
            headers: pyo3::intern!(py, "headers"),
            max_bytes,
            control,
        };
        // the records read ahead, in order: from `start` in the first of `skims`
        let skims = skims.unwrap_or_default();
        let (mut which, mut index) = (0, start);
        for record in records.try_iter()? {
            while which < skims.len() && index >= skims[which].len() {
                (which, index) = (which + 1, 0);
            }
            let skimmed = skims.get(which).map(|skimmed| (&**skimmed, index));
            index += 1;
            let item = match self.ready(py, &mut batch, &record?, skimmed)? {
                Some(item) => item.into_any(),
                None => py.None().into_bound(py),
            };
            out.append(item)?;
        }
        Ok(out)
    }
}

/// One `decode_batch` call: what its records share.
struct Batch<'d, 'a, 'py> {
    caches: Option<MutexGuard<'d, Caches>>,
    /// One string object per conversation id: its events in the batch share it, and so do the
    /// dicts that key by it (a lookup compares the object, not its text).
    conversations: HashMap<String, Bound<'py, PyAny>>,
    key: &'a Bound<'py, PyString>,
    value: &'a Bound<'py, PyString>,
    timestamp: &'a Bound<'py, PyString>,
    headers: &'a Bound<'py, PyString>,
    max_bytes: usize,
    control: &'a str,
}

impl Decoder {
    /// The sender id and event in `data`, or None to defer (see `decode`).
    fn parse<'d, 'py>(
        &'d self,
        py: Python<'py>,
        caches: &mut Option<MutexGuard<'d, Caches>>,
        data: &[u8],
        now: &Bound<'py, PyAny>,
        conversation_id: Option<&str>,
        ahead: skim::Ahead<'_>,
    ) -> PyResult<Option<(String, Bound<'py, PyAny>)>> {
        let rec = match ahead {
            // SAFETY: the spans were read from these very bytes (see `Skimmed::ahead`)
            skim::Ahead::Spans(spans) => unsafe { Rec::from_spans(data, spans) },
            skim::Ahead::Unreadable => return Ok(None),
            skim::Ahead::Unknown => match serde_json::from_slice::<Rec<'_>>(data) {
                Ok(rec) => rec,
                Err(_) => return Ok(None),
            },
        };
        let sender = take!(rec
            .sender_id
            .text()
            .and_then(string)
            .filter(|s| !s.is_empty()));
        if conversation_id.is_some_and(|key| !key.is_empty() && key != sender) {
            return Ok(None);
        }
        let tag = take!(rec.event.text().and_then(string));
        let mut pass = Pass {
            decoder: self,
            caches: caches.take(),
        };
        let event = pass.event(py, &tag, &rec, now);
        *caches = pass.caches.take();
        let event = take!(event?);
        Ok(Some((sender.into_owned(), event)))
    }

    /// A new `Record(sender, event)`.
    fn pair<'py>(
        &self,
        py: Python<'py>,
        first: Bound<'py, PyAny>,
        second: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let obj = allocate(py, &self.record, 2)?;
        // SAFETY: `record` is a tuple subclass of two fields (checked in `new`), allocated with
        // both items NULL; each is set once with a new reference.
        unsafe {
            ffi::PyTuple_SET_ITEM(obj, 0, first.into_ptr());
            ffi::PyTuple_SET_ITEM(obj, 1, second.into_ptr());
            Ok(Bound::from_owned_ptr(py, obj))
        }
    }

    /// One record of `decode_batch`, or None to defer.
    fn ready<'d, 'py>(
        &'d self,
        py: Python<'py>,
        batch: &mut Batch<'d, '_, 'py>,
        record: &Bound<'py, PyAny>,
        skimmed: Option<(&skim::Skimmed, usize)>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let key = record.getattr(batch.key)?;
        let Some(key) = key
            .cast_exact::<PyBytes>()
            .ok()
            .and_then(|key| std::str::from_utf8(key.as_bytes()).ok())
            .filter(|key| !key.is_empty())
        else {
            return Ok(None);
        };
        let value = record.getattr(batch.value)?;
        let Ok(value) = value.cast_exact::<PyBytes>() else {
            return Ok(None);
        };
        let data = value.as_bytes();
        if data.len() > batch.max_bytes {
            return Ok(None);
        }
        let headers = record.getattr(batch.headers)?;
        if headers.is_truthy()? {
            let Ok(headers) = headers.try_iter() else {
                return Ok(None);
            };
            for header in headers {
                // not a (name, value) pair, a name that is not exactly a str, or the control
                // header: the Python path
                let pair = header
                    .ok()
                    .filter(|header| header.len().is_ok_and(|n| n == 2));
                let name = pair.map(|pair| pair.get_item(0)).transpose().ok().flatten();
                let plain = name.is_some_and(|name| {
                    name.cast_exact::<PyString>()
                        .ok()
                        .and_then(|name| name.to_str().ok().map(|name| name != batch.control))
                        .unwrap_or(false)
                });
                if !plain {
                    return Ok(None);
                }
            }
        }
        // `timestamp / 1000.0` as Python computes it, for an int or a float (anything else: the
        // Python path); an int too large for a float is left to it too
        let timestamp = record.getattr(batch.timestamp)?;
        if !(timestamp.is_exact_instance_of::<PyInt>()
            || timestamp.is_exact_instance_of::<PyFloat>())
        {
            return Ok(None);
        }
        let Ok(millis) = timestamp.extract::<f64>() else {
            return Ok(None);
        };
        let now = PyFloat::new(py, millis / 1000.0).into_any();
        let ahead = match skimmed {
            Some((skimmed, index)) => skimmed.ahead(py, index, value),
            None => skim::Ahead::Unknown,
        };
        let Some((_, event)) = self.parse(py, &mut batch.caches, data, &now, Some(key), ahead)?
        else {
            return Ok(None);
        };
        // the record's own bytes decode to this event when it has its own timestamp (`now`
        // stood in for none): they are its history record, with no new bytes written
        let kept = if !event.getattr(batch.timestamp)?.is(&now) {
            value.clone().into_any()
        } else {
            match self.encode(py, &event) {
                Some(bytes) => bytes.into_any(),
                None => py.None().into_bound(py),
            }
        };
        let conversation = match batch.conversations.get(key) {
            Some(shared) => shared.clone(),
            None => {
                let made = PyString::new(py, key).into_any();
                batch.conversations.insert(key.to_owned(), made.clone());
                made
            }
        };
        Ok(Some(PyTuple::new(py, [conversation, event, kept])?))
    }
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Decoder>()?;
    module.add_class::<records::BatchReader>()?;
    module.add_class::<records::Handout>()?;
    module.add_class::<batches::BatchWriter>()?;
    module.add_class::<skim::Skimmed>()?;
    module.add_function(wrap_pyfunction!(skim::skim, module)?)?;
    module.add_function(wrap_pyfunction!(arenas::prefault_arenas, module)?)
}
