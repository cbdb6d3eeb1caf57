//! Kafka record batches (message format v2) decoded into records in one call.
//!
//! The Kafka client decodes a fetch lazily, one Python generator step and one dataclass
//! per record, about 3 µs each here: more than half of what a plain consumer spends per
//! record, and as much as the worker's compiled step itself. This decodes a partition's
//! fetched bytes at once into small records with the client record's attributes.
//!
//! Only the common case is taken: complete batches of format v2, uncompressed, neither
//! transactional nor control batches, each with a valid CRC-32C. For anything else
//! (older formats, compression, transactions, a corrupt batch) it returns None and the
//! client's own decoder takes the whole fetch, with its own checks and errors.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

/// Bytes before a batch's length field ends (base offset, length).
const LOG_OVERHEAD: usize = 12;
/// A v2 batch header, base offset to the record count.
const HEADER: usize = 61;
/// Where the CRC-covered part of a batch starts (its attributes).
const CRC_FROM: usize = 21;
const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE: i16 = 0x08;
const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;

/// A record as the Kafka client's `ConsumerRecord` has it (the attributes the worker and
/// its dead letters read, and the rest for anything else that might).
#[pyclass(module = "sessionwatch_native", frozen)]
pub struct Record {
    #[pyo3(get)]
    topic: Py<PyString>,
    #[pyo3(get)]
    partition: i32,
    #[pyo3(get)]
    offset: i64,
    #[pyo3(get)]
    timestamp: i64,
    #[pyo3(get)]
    timestamp_type: i32,
    #[pyo3(get)]
    key: Option<Py<PyBytes>>,
    #[pyo3(get)]
    value: Option<Py<PyBytes>>,
    #[pyo3(get)]
    serialized_key_size: i64,
    #[pyo3(get)]
    serialized_value_size: i64,
    #[pyo3(get)]
    headers: Py<PyTuple>,
}

impl Record {
    /// The value, without a Python attribute look-up.
    pub fn value<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.value.as_ref().map(|v| v.bind(py).clone())
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }
}

#[pymethods]
impl Record {
    /// The client record's CRC field, which format v2 keeps per batch only.
    #[getter]
    fn checksum(&self) -> Option<i64> {
        None
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Record(topic={:?}, partition={}, offset={})",
            self.topic.bind(py).to_string_lossy(),
            self.partition,
            self.offset
        )
    }
}

/// A cursor over one batch's records; every read is bounds-checked (None: malformed).
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// A zig-zag varint of at most 64 bits.
    fn varlong(&mut self) -> Option<i64> {
        let mut raw: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            raw |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
        Some((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    fn varint(&mut self) -> Option<i32> {
        i32::try_from(self.varlong()?).ok()
    }

    /// `n` bytes, or None for a negative length (a null field).
    fn bytes(&mut self, n: i32) -> Option<Option<&'a [u8]>> {
        if n < 0 {
            return Some(None);
        }
        let end = self.at.checked_add(n as usize)?;
        let out = self.buf.get(self.at..end)?;
        self.at = end;
        Some(Some(out))
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// One record decoded from a batch, before it becomes a Python object.
struct Raw<'a> {
    offset: i64,
    timestamp: i64,
    timestamp_type: i32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// The records of one complete batch, or None when it is not the common case.
fn batch_records<'a>(batch: &'a [u8], check_crcs: bool, out: &mut Vec<Raw<'a>>) -> Option<i64> {
    if batch.len() < HEADER || batch[16] != 2 {
        return None;
    }
    let attributes = be_i16(batch, 21);
    if attributes & (COMPRESSION_MASK | TRANSACTIONAL | CONTROL) != 0 {
        return None;
    }
    if check_crcs && crc32c::crc32c(&batch[CRC_FROM..]) != be_i32(batch, 17) as u32 {
        return None;
    }
    let base_offset = be_i64(batch, 0);
    let last_offset_delta = be_i32(batch, 23);
    let base_timestamp = be_i64(batch, 27);
    let max_timestamp = be_i64(batch, 35);
    let count = be_i32(batch, 57);
    let log_append = attributes & TIMESTAMP_TYPE != 0;
    let mut cur = Cursor { buf: batch, at: HEADER };
    for _ in 0..count.max(0) {
        let length = usize::try_from(cur.varint()?).ok()?;
        let end = cur.at.checked_add(length)?;
        if end > batch.len() {
            return None;
        }
        let mut rec = Cursor { buf: &batch[..end], at: cur.at };
        rec.byte()?; // attributes: unused in v2
        let timestamp_delta = rec.varlong()?;
        let offset_delta = rec.varint()?;
        let key_len = rec.varint()?;
        let key = rec.bytes(key_len)?;
        let value_len = rec.varint()?;
        let value = rec.bytes(value_len)?;
        let n_headers = rec.varint()?;
        let mut headers = Vec::new();
        for _ in 0..n_headers.max(0) {
            let name_len = rec.varint()?;
            let name = rec.bytes(name_len)??;
            let value_len = rec.varint()?;
            headers.push((name, rec.bytes(value_len)?));
        }
        if rec.at != end {
            return None;
        }
        cur.at = end;
        out.push(Raw {
            offset: base_offset.checked_add(i64::from(offset_delta))?,
            timestamp: if log_append {
                max_timestamp
            } else {
                base_timestamp.checked_add(timestamp_delta)?
            },
            timestamp_type: i32::from(log_append),
            key,
            value,
            headers,
        });
    }
    if cur.at != batch.len() {
        return None;
    }
    base_offset.checked_add(i64::from(last_offset_delta) + 1)
}

/// Decodes the record batches of a partition's fetch (`buffer`, fetched from
/// `fetch_offset`) into records of `topic` and `partition` with offsets from
/// `fetch_offset` on, as the Kafka client would yield them, and the offset to fetch next
/// once all are taken. None when anything in it is not the common case (module doc).
#[pyfunction]
#[pyo3(signature = (buffer, fetch_offset, check_crcs, topic, partition))]
pub fn decode_batches<'py>(
    py: Python<'py>,
    buffer: &[u8],
    fetch_offset: i64,
    check_crcs: bool,
    topic: Bound<'py, PyString>,
    partition: i32,
) -> PyResult<Option<(Bound<'py, PyList>, i64)>> {
    let mut raws = Vec::new();
    let mut next = fetch_offset;
    let mut at = 0;
    // As the client's MemoryRecords: a batch cut off at the end of the fetch is left for
    // the next one.
    while buffer.len() - at >= LOG_OVERHEAD {
        let length = be_i32(buffer, at + 8);
        let Ok(length) = usize::try_from(length) else {
            return Ok(None);
        };
        let end = at + LOG_OVERHEAD + length;
        if end > buffer.len() {
            break;
        }
        match batch_records(&buffer[at..end], check_crcs, &mut raws) {
            Some(after) => next = next.max(after),
            None => return Ok(None),
        }
        at = end;
    }
    let records = PyList::empty(py);
    let no_headers = PyTuple::empty(py).unbind();
    let topic = topic.unbind();
    for raw in raws {
        if raw.offset < fetch_offset {
            continue; // the start of the batch that holds the fetch offset
        }
        let headers = if raw.headers.is_empty() {
            no_headers.clone_ref(py)
        } else {
            let mut items = Vec::with_capacity(raw.headers.len());
            for (name, value) in raw.headers {
                let Ok(name) = std::str::from_utf8(name) else {
                    return Ok(None); // the client's decoder raises its own error
                };
                let name = PyString::new(py, name);
                let value = value.map(|v| PyBytes::new(py, v).into_any());
                items.push((name, value));
            }
            PyTuple::new(py, items)?.unbind()
        };
        let record = Record {
            topic: topic.clone_ref(py),
            partition,
            offset: raw.offset,
            timestamp: raw.timestamp,
            timestamp_type: raw.timestamp_type,
            key: raw.key.map(|k| PyBytes::new(py, k).unbind()),
            value: raw.value.map(|v| PyBytes::new(py, v).unbind()),
            serialized_key_size: raw.key.map_or(-1, |k| k.len() as i64),
            serialized_value_size: raw.value.map_or(-1, |v| v.len() as i64),
            headers,
        };
        records.append(Bound::new(py, record)?)?;
    }
    Ok(Some((records, next)))
}

/// Kafka's default partitioner hash (`org.apache.kafka.common.utils.Utils.murmur2`), as
/// the Kafka client's pure-Python `murmur2` reckons it: 10-30 µs a key there, a share
/// of every alert the worker sends and of every event `produce` sends.
#[pyfunction]
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_B28C;
    const M: u32 = 0x5BD1_E995;
    const R: u32 = 24;
    let length = data.len();
    // Java hashes an int length: the same for any key Kafka takes (under 2 GiB).
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}
