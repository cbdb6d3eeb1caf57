//! Compiled fast path for `sessionwatch replay`: routine requests without the interpreter.
//!
//! Most of a recorded log is routine: a transaction on a live session from the place and
//! browser it logged in with, within its timeouts. The Python engine already takes those
//! through a shortcut (`Engine._routine`) whose every condition is the negation of one
//! indicator's trigger; this module is the same shortcut, compiled, applied to raw lines,
//! with the behaviour model's per-request upkeep between checkpoints when a model is on.
//!
//! The contract is one-sided: for each line it either applies exactly what the Python
//! path would (the session's `last`, `last_ip`, `node`, a deduplicated `ip_change` count,
//! the behaviour profile's counters and the user's paths and hours, the event and lag
//! counters) or hands the line back. It hands back whenever
//! it is not certain: anything but a strictly valid transaction of a known, filed session
//! meeting every routine condition, a time stamp string outside the plain RFC 3339 shape,
//! an address in other than canonical form, the very first event, a line that makes a
//! sweep of expired state due. Event time (the watermark) moves first, for any valid
//! line, as `Engine.process` moves it before looking at the event.
//!
//! The Python objects stay the state. What a routine line reads of a session is copied
//! here the first time it is needed and kept, keyed by the fingerprint's digest as the
//! store keys it (never a raw session ID); a session's updates are written back when
//! something is about to read it (the store asks before it hands the session out or a
//! sweep reads it, and for all before a census: `MemoryStore.defer_writes`), and the
//! copy of anything written through the store or dropped is forgotten
//! (`MemoryStore.watch`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::marker::PhantomData;
use std::net::Ipv6Addr;

use blake2b_simd::{Params, State};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyString, PyTuple};
use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};

mod kafka;
mod scan;
mod tally;

/// Mirrors `detector.events.MAX_LINE_BYTES`: longer lines are the Python path's to refuse.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Mirrors the `[1970, 2100)` event-time range of `detector.events.validate`.
const MAX_EPOCH: f64 = 4_102_444_800.0;
/// Mirrors `detector.events.MAX_AHEAD_S`: a later event time than `now` plus this is the
/// Python path's to refuse.
const MAX_AHEAD_S: f64 = 300.0;
/// Mirrors `detector.fingerprint.FINGERPRINT_PREFIX` (already-hashed IDs).
const FP_PREFIX: &str = "sw-fp:";

/// A JSON string, borrowed from the line when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// `ts`: epoch seconds (a JSON number) or an RFC 3339 string, as msgspec's `datetime | float`.
enum Ts<'a> {
    Num(f64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Ts<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Ts<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ts<'a>, E> {
                Ok(Ts::Num(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ts<'a>, E> {
                Ok(Ts::Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ts<'a>, E> {
                Ok(Ts::Num(v as f64))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Ts<'a>, E> {
                Ok(Ts::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ts<'a>, E> {
                Ok(Ts::Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[derive(PartialEq)]
enum Scheme {
    Https,
    Http,
}

impl<'de> Deserialize<'de> for Scheme {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Str::deserialize(d)?.0.as_ref() {
            "https" => Ok(Scheme::Https),
            "http" => Ok(Scheme::Http),
            other => Err(de::Error::custom(format!("unknown scheme {other}"))),
        }
    }
}

/// Present in the record, even as `null` (which a non-optional field refuses).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The fields of `detector.events.Event`, with msgspec's types; unknown keys are ignored
/// (they are extra evidence, as in msgspec), a duplicated known key is an error.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    event_id: Str<'a>,
    #[serde(borrow)]
    ts: Ts<'a>,
    #[serde(rename = "type", borrow)]
    kind: Str<'a>,
    #[serde(default, borrow)]
    session_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    user: Option<Str<'a>>,
    #[serde(default, borrow)]
    ip: Option<Str<'a>>,
    #[serde(default, borrow)]
    user_agent: Option<Str<'a>>,
    #[serde(default, deserialize_with = "present")]
    scheme: Option<Scheme>,
    #[serde(default, borrow)]
    url: Option<Str<'a>>,
    #[serde(default, borrow)]
    node: Option<Str<'a>>,
    #[serde(default, deserialize_with = "present")]
    #[allow(dead_code)]
    guest: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[allow(dead_code)]
    remember_me: Option<bool>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    previous_session_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    new_session_id: Option<Str<'a>>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    actor: Option<Str<'a>>,
    #[serde(default)]
    geo_lat: Option<f64>,
    #[serde(default)]
    geo_lon: Option<f64>,
    #[serde(default)]
    asn: Option<i64>,
    #[serde(default)]
    response_bytes: Option<u64>,
    /// The engine's own epoch field: a record that names it is the Python path's.
    #[serde(rename = "~sessionwatch.epoch", default, deserialize_with = "present")]
    own_epoch: Option<IgnoredAny>,
}

fn two(b: &[u8]) -> Option<i64> {
    match b {
        [x @ b'0'..=b'9', y @ b'0'..=b'9'] => Some(((x - b'0') * 10 + (y - b'0')) as i64),
        _ => None,
    }
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|±HH:MM)` to epoch seconds exactly as Python's
/// `datetime.timestamp()` rounds it (microseconds / 10**6); any other shape is None.
fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = two(&b[0..2])? * 100 + two(&b[2..4])?;
    let (month, day) = (two(&b[5..7])?, two(&b[8..10])?);
    let (hour, minute, second) = (two(&b[11..13])?, two(&b[14..16])?, two(&b[17..19])?);
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros: i64 = 0;
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 6 {
            return None;
        }
        for &c in &rest[1..=digits] {
            micros = micros * 10 + (c - b'0') as i64;
        }
        micros *= 10_i64.pow((6 - digits) as u32);
        rest = &rest[1 + digits..];
    }
    let offset = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (two(&[*h1, *h2])?, two(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let total = secs * 1_000_000 + micros;
    // Exact as a double (any event time in range is): one correctly rounded division,
    // as Python's int / int. Beyond 2**53 the conversion itself would round first.
    if total.unsigned_abs() >= 1 << 53 {
        return None;
    }
    Some(total as f64 / 1e6)
}

/// An address's bytes (4 or 16) when it is in canonical form, which `inet_pton` (the
/// Python path's parser) accepts; any other spelling is the Python path's to judge.
fn packed(ip: &str) -> Option<(usize, [u8; 16])> {
    let mut out = [0u8; 16];
    if ip.contains(':') {
        let addr: Ipv6Addr = ip.parse().ok()?;
        if addr.to_string() != ip {
            return None;
        }
        out = addr.octets();
        Some((16, out))
    } else {
        out[..4].copy_from_slice(&dotted_quad(ip.as_bytes())?);
        Some((4, out))
    }
}

/// Canonical dotted decimal: four parts of 0-255 without leading zeros (what an
/// `Ipv4Addr` prints), without formatting one to compare.
fn dotted_quad(s: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let (mut part, mut value, mut digits) = (0usize, 0u32, 0u32);
    for &c in s {
        match c {
            b'0'..=b'9' => {
                if digits == 1 && value == 0 {
                    return None; // a leading zero
                }
                value = value * 10 + u32::from(c - b'0');
                digits += 1;
                if value > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 && part < 3 => {
                out[part] = value as u8;
                part += 1;
                (value, digits) = (0, 0);
            }
            _ => return None,
        }
    }
    if digits == 0 || part != 3 {
        return None;
    }
    out[3] = value as u8;
    Some(out)
}

/// The policy prefix of an address of `size` bytes: its whole bytes and remaining bits.
fn prefix_cut(size: usize, v4: u32, v6: u32) -> (usize, usize) {
    let bits = if size == 4 { v4 } else { v6 } as usize;
    (bits / 8, bits % 8)
}

/// `IpLadder.network_key` equality: same family and the same first `prefix` bits.
fn same_prefix(a: &(usize, [u8; 16]), b: &(usize, [u8; 16]), v4: u32, v6: u32) -> bool {
    if a.0 != b.0 {
        return false;
    }
    let (whole, rest) = prefix_cut(a.0, v4, v6);
    a.1[..whole] == b.1[..whole]
        && (rest == 0 || a.1[whole] >> (8 - rest) == b.1[whole] >> (8 - rest))
}

/// `IpLadder.place_key` of an address's bytes: `allowed` for an allow-listed one, else
/// its length byte and the policy prefix of its bytes (the last partial byte shifted).
fn place_key(allow: &[(usize, u128, u128)], addr: &(usize, [u8; 16]), v4: u32, v6: u32) -> Vec<u8> {
    if allowed(allow, addr) {
        return b"allowed".to_vec();
    }
    let (size, bytes) = addr;
    let (whole, rest) = prefix_cut(*size, v4, v6);
    let mut key = Vec::with_capacity(whole + 2);
    key.push(*size as u8);
    key.extend_from_slice(&bytes[..whole]);
    if rest != 0 {
        key.push(bytes[whole] >> (8 - rest));
    }
    key
}

/// `features._path_shape` for ASCII URLs (None: the Python function decides, since
/// `str.isdigit` knows more digits than ASCII's): the path without query or fragment,
/// its last segment `{id}` when a record id (16+ hex digits and dashes, or digits).
fn path_shape(url: &str) -> Option<String> {
    if !url.is_ascii() {
        return None;
    }
    let path = &url[..url.find(['?', '#']).unwrap_or(url.len())];
    let (head, last) = match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    };
    let hex_id = !head.is_empty()
        && last.len() >= 16
        && last.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-');
    let number = !last.is_empty() && last.bytes().all(|c| c.is_ascii_digit());
    Some(if hex_id || number {
        format!("{head}/{{id}}")
    } else {
        path.to_owned()
    })
}

/// What the behaviour model's per-request upkeep needs from Python (features.py).
struct Upkeep {
    /// Users filed for expiry (a write to any other is the Python path's).
    users_filed: Py<PySet>,
    path_shape: PyObject,
    flush_hours: PyObject,
    burst_gap: f64,
    max_paths: usize,
    thursday: i64,
    /// Checkpoints (a window closed, a row scored) here too; None: they are Python's.
    checkpoints: Option<Checkpoints>,
}

/// What a checkpoint needs (`features._checkpoint`, `OfflineModel.score_one`): the one
/// offline model's forest, threshold and training range, and the feature constants.
/// Only when that model is the scorer's only one and nothing records rows or scores.
struct Checkpoints {
    forest: Py<Forest>,
    /// `CompiledForest._denominator` (0: every score is 1).
    denominator: f64,
    threshold: f64,
    limit: Vec<f64>,
    spread: Vec<f64>,
    /// `offline.ONE_SIDED`, the features whose excess raises the score.
    one_sided: Vec<usize>,
    /// `features.SLOW`.
    slow: f64,
    /// `features._NEAR`: kernel weights in eighths (any day, same weekday) per offset.
    near: Vec<(i64, i64)>,
    /// `features._KERNEL_SUM`.
    kernel_sum: f64,
    /// What a login's profile needs (`features.open_profile`).
    opening: Opening,
}

/// `features.Baseline` and `features.Profile`, `useragent.classify`, the scorer's
/// `min_user_sessions`, `features.MAX_NETWORKS`/`MAX_BROWSERS`.
struct Opening {
    baseline_cls: PyObject,
    profile_cls: PyObject,
    classify: PyObject,
    min_sessions: i64,
    max_networks: usize,
    max_browsers: usize,
}

/// What a login's first request does to the user's baseline (`open_profile`, then
/// `observe` and the checkpoint of request 1), decided before anything changes.
struct FirstRequest<'py> {
    base: Option<Bound<'py, PyAny>>,
    browser: String,
    network: Bound<'py, PyBytes>,
    scored: bool,
    new_network: bool,
    new_browser: bool,
    start_rarity: f64,
    base_gap: Bound<'py, PyAny>,
    base_bytes: Option<f64>,
    shape: Option<Bound<'py, PyAny>>,
    new_path: bool,
    log_bytes: Option<f64>,
    sessions: i64,
    events: i64,
    how: i64,
}

/// A closed window's new baseline values (None: unchanged).
struct Closed {
    log_gap: Option<f64>,
    log_bytes: Option<f64>,
}

/// C's `pow`, as Python's `float ** float` calls it (kept opaque to the optimiser, which
/// may otherwise rewrite a power of a constant into another function).
fn c_pow(x: f64, y: f64) -> f64 {
    std::hint::black_box(x).powf(std::hint::black_box(y))
}

/// Python's `max(a, b)` of two floats: `a` unless `b` is greater.
fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// URLs whose path shapes are kept (as `features._SHAPE_CACHE_MAX`).
const SHAPE_CACHE_MAX: usize = 65_536;

/// Features in a row (`features.FEATURES`).
const ROW: usize = 10;

/// Integers below this convert to doubles exactly (Python's int / int is then the same).
const EXACT: i64 = 1 << 53;

impl Checkpoints {
    /// `features._checkpoint` for a window closed at `ts` (`c`: its counters, this
    /// request included) and, when `scored`, `OfflineModel.score_one` of its row. Reads
    /// only. None when the score reaches the threshold (the alert is the Python path's)
    /// or a number is beyond what converts exactly.
    #[allow(clippy::too_many_arguments)]
    fn close(
        &self,
        py: Python<'_>,
        prof: &Prof,
        c: &[i64; PROF_FIELDS.len()],
        base: &Bound<'_, PyAny>,
        ts: f64,
        age_s: f64,
        b: &Upkeep,
        scored: bool,
    ) -> PyResult<Option<Closed>> {
        let (mut pace, mut burst, mut volume) = (0.0, 0.0, 0.0);
        let mut closed = Closed {
            log_gap: None,
            log_bytes: None,
        };
        let gaps = c[P_GAPS];
        if gaps != 0 {
            let lg = py_max((ts - prof.since) / gaps as f64, 0.5).ln();
            pace = py_max(0.0, prof.base_gap - lg);
            burst = c[P_FAST] as f64 / gaps as f64;
            let old: f64 = base.getattr(intern!(py, "log_gap"))?.extract()?;
            closed.log_gap = Some(self.drift(old, lg, gaps));
        }
        let sized = c[P_SIZED];
        if sized != 0 {
            if c[P_BYTES] >= EXACT {
                return Ok(None);
            }
            let lb = (c[P_BYTES] as f64 / sized as f64).ln_1p();
            if let Some(base_bytes) = prof.base_bytes {
                volume = py_max(0.0, lb - base_bytes);
            }
            let old: Option<f64> = base.getattr(intern!(py, "log_bytes"))?.extract()?;
            closed.log_bytes = Some(match old {
                None => lb,
                Some(old) => self.drift(old, lb, sized),
            });
        }
        if !scored {
            return Ok(Some(closed));
        }
        let events: i64 = base.getattr(intern!(py, "events"))?.extract()?;
        let hours = base
            .getattr(intern!(py, "hours"))?
            .downcast_into::<PyDict>()?;
        let own = prof
            .obj
            .bind(py)
            .getattr(intern!(py, "own_hours"))?
            .downcast_into::<PyDict>()?;
        let Some(rarity) = self.hour_rarity(&hours, events, hour_of_week(ts, b.thursday), &own)?
        else {
            return Ok(None);
        };
        let row: [f64; ROW] = [
            pace,
            burst,
            c[P_NEW] as f64 / c[P_REQUESTS] as f64,
            rarity,
            prof.start_rarity,
            f64::from(u8::from(prof.new_network)),
            f64::from(u8::from(prof.new_browser)),
            volume,
            (py_max(age_s, 0.0) / 60.0).ln_1p(),
            (c[P_N] as f64).ln_1p(),
        ];
        Ok(if self.alerts(&row)? {
            None
        } else {
            Some(closed)
        })
    }

    /// A baseline moved towards `new` by `n` requests' weight (`features._checkpoint`:
    /// `old + (1 - (1 - SLOW) ** n) * (new - old)`).
    fn drift(&self, old: f64, new: f64, n: i64) -> f64 {
        old + (1.0 - c_pow(1.0 - self.slow, n as f64)) * (new - old)
    }

    /// `OfflineModel.score_one(row) >= threshold`: the forest's score raised by the
    /// row's excess over the training range.
    fn alerts(&self, row: &[f64; ROW]) -> PyResult<bool> {
        let forest = if self.denominator == 0.0 {
            1.0
        } else {
            c_pow(2.0, -self.forest.get().sum(row)? / self.denominator)
        };
        let mut excess = 0.0;
        for &i in &self.one_sided {
            excess += py_max(0.0, (row[i] - self.limit[i]) / self.spread[i]);
        }
        let score = if excess != 0.0 {
            1.0 - (1.0 - forest) * c_pow(2.0, -excess)
        } else {
            forest
        };
        Ok(score >= self.threshold)
    }

    /// A login's first request with the model on (`Engine._behave` with no profile):
    /// None when its row alerts or a number leaves what is exact here (Python's then).
    /// Request 1 is a checkpoint; its hour rarity equals the start's (the request's own
    /// hour is added to the user's hours and left out again), no gap, age 0.
    #[allow(clippy::too_many_arguments)]
    fn first_request<'py>(
        &self,
        py: Python<'py>,
        b: &Upkeep,
        shapes: &mut HashMap<String, Py<PyString>>,
        user: Option<&Bound<'py, PyAny>>,
        ev: &Raw<'_>,
        ts: f64,
        network: &[u8],
    ) -> PyResult<Option<FirstRequest<'py>>> {
        let o = &self.opening;
        let base = match user {
            Some(u) => Some(u.getattr(intern!(py, "baseline"))?).filter(|b| !b.is_none()),
            None => None,
        };
        let fresh;
        let read = match &base {
            Some(b) => b,
            None => {
                fresh = o.baseline_cls.bind(py).call0()?;
                &fresh
            }
        };
        let Ok(sessions) = read.getattr(intern!(py, "sessions"))?.extract::<i64>() else {
            return Ok(None);
        };
        let Ok(events) = read.getattr(intern!(py, "events"))?.extract::<i64>() else {
            return Ok(None);
        };
        let browser = match ev.user_agent.as_ref().filter(|ua| !ua.0.is_empty()) {
            Some(ua) => {
                let (family, system): (String, String) =
                    o.classify.bind(py).call1((ua.0.as_ref(),))?.extract()?;
                format!("{family}/{system}")
            }
            None => String::new(),
        };
        let network = PyBytes::new(py, network);
        let scored = sessions >= o.min_sessions;
        let networks = read.getattr(intern!(py, "networks"))?;
        let browsers = read.getattr(intern!(py, "browsers"))?;
        let new_network = !network.as_bytes().is_empty() && !networks.contains(&network)?;
        let new_browser = !browser.is_empty() && !browsers.contains(browser.as_str())?;
        let how = hour_of_week(ts, b.thursday);
        let start_rarity = if scored {
            let hours = read
                .getattr(intern!(py, "hours"))?
                .downcast_into::<PyDict>()?;
            match self.hour_rarity(&hours, events, how, &PyDict::new(py))? {
                Some(r) => r,
                None => return Ok(None),
            }
        } else {
            0.0
        };
        let (_, shape, new_path) = b.path_of(py, shapes, read, ev)?;
        let base_gap = read.getattr(intern!(py, "log_gap"))?;
        let base_bytes: Option<f64> = read.getattr(intern!(py, "log_bytes"))?.extract()?;
        // The checkpoint of request 1: no gap; the bytes of this one request.
        let (mut volume, mut log_bytes) = (0.0, None);
        if let Some(size) = ev.response_bytes {
            if size >= EXACT as u64 {
                return Ok(None);
            }
            let lb = (size as f64).ln_1p();
            if let Some(bb) = base_bytes {
                volume = py_max(0.0, lb - bb);
            }
            log_bytes = Some(match base_bytes {
                None => lb,
                Some(old) => self.drift(old, lb, 1),
            });
        }
        if scored {
            let row: [f64; ROW] = [
                0.0,
                0.0,
                f64::from(u8::from(new_path)),
                start_rarity,
                start_rarity,
                f64::from(u8::from(new_network)),
                f64::from(u8::from(new_browser)),
                volume,
                0.0f64.ln_1p(),
                1.0f64.ln_1p(),
            ];
            if self.alerts(&row)? {
                return Ok(None);
            }
        }
        Ok(Some(FirstRequest {
            base,
            browser,
            network,
            scored,
            new_network,
            new_browser,
            start_rarity,
            base_gap,
            base_bytes,
            shape,
            new_path,
            log_bytes,
            sessions,
            events,
            how,
        }))
    }

    /// Applies a decided first request: the user's baseline as `open_profile`, `observe`
    /// and `_checkpoint` leave it, and the session's profile after request 1.
    fn open<'py>(
        &self,
        py: Python<'py>,
        b: &Upkeep,
        u: &Bound<'py, PyAny>,
        first: FirstRequest<'py>,
        ts: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let o = &self.opening;
        let base = match first.base {
            Some(base) => base,
            None => {
                let base = o.baseline_cls.bind(py).call0()?;
                u.setattr(intern!(py, "baseline"), &base)?;
                base
            }
        };
        base.setattr(intern!(py, "sessions"), first.sessions + 1)?;
        // features._remember: the baseline's lists are tuples (untracked by the collector).
        let remember = |name: &Bound<'py, PyString>, item: &Bound<'py, PyAny>, limit: usize| {
            let items = base.getattr(name)?.downcast_into::<PyTuple>()?;
            let skip = (items.len() + 1).saturating_sub(limit);
            let mut kept: Vec<Bound<'py, PyAny>> = items.iter().skip(skip).collect();
            kept.push(item.clone());
            base.setattr(name, PyTuple::new(py, kept)?)
        };
        if first.new_network {
            remember(
                intern!(py, "networks"),
                first.network.as_any(),
                o.max_networks,
            )?;
        }
        if first.new_browser {
            let browser = PyString::new(py, &first.browser);
            remember(intern!(py, "browsers"), browser.as_any(), o.max_browsers)?;
        }
        if let (Some(shape), true) = (&first.shape, first.new_path) {
            let paths = base
                .getattr(intern!(py, "paths"))?
                .downcast_into::<PyDict>()?;
            b.note_path(py, &paths, shape)?;
        }
        // flush_hours at the checkpoint: this request's hour.
        let hours = base
            .getattr(intern!(py, "hours"))?
            .downcast_into::<PyDict>()?;
        let before: i64 = match hours.get_item(first.how)? {
            Some(n) => n.extract()?,
            None => 0,
        };
        hours.set_item(first.how, before + 1)?;
        base.setattr(intern!(py, "events"), first.events + 1)?;
        if let Some(log_bytes) = first.log_bytes {
            base.setattr(intern!(py, "log_bytes"), log_bytes)?;
        }
        let own = PyDict::new(py);
        own.set_item(first.how, 1)?;
        let kw = PyDict::new(py);
        kw.set_item(intern!(py, "scored"), first.scored)?;
        kw.set_item(intern!(py, "base_gap"), first.base_gap)?;
        kw.set_item(intern!(py, "base_bytes"), first.base_bytes)?;
        kw.set_item(intern!(py, "new_network"), first.new_network)?;
        kw.set_item(intern!(py, "new_browser"), first.new_browser)?;
        kw.set_item(intern!(py, "start_rarity"), first.start_rarity)?;
        kw.set_item(intern!(py, "n"), 1)?;
        kw.set_item(intern!(py, "since"), ts)?;
        kw.set_item(intern!(py, "hour"), first.how)?;
        kw.set_item(intern!(py, "own_hours"), own)?;
        o.profile_cls.bind(py).call((), Some(&kw))
    }

    /// `features.hour_rarity(hours, events, ts, own)` for the hour of week `how`: the
    /// sums are integers (eighths), so the same double. None beyond exact conversion.
    fn hour_rarity(
        &self,
        hours: &Bound<'_, PyDict>,
        events: i64,
        how: i64,
        own: &Bound<'_, PyDict>,
    ) -> PyResult<Option<f64>> {
        let mut left = i128::from(events);
        for (_, n) in own.iter() {
            left -= i128::from(n.extract::<i64>()?);
        }
        if left <= 0 {
            return Ok(Some(1.0));
        }
        let (mut week8, mut day8) = (0i128, 0i128);
        for (h, n) in hours.iter() {
            let mine = match own.get_item(&h)? {
                Some(m) => m.extract::<i64>()?,
                None => 0,
            };
            let count = i128::from(n.extract::<i64>()?) - i128::from(mine);
            if count != 0 {
                let (w8, wk8) = self.near[(h.extract::<i64>()? - how).rem_euclid(168) as usize];
                day8 += i128::from(w8) * count;
                week8 += i128::from(wk8) * count;
            }
        }
        for (h, n) in own.iter() {
            if !hours.contains(&h)? {
                let n = i128::from(n.extract::<i64>()?);
                let (w8, wk8) = self.near[(h.extract::<i64>()? - how).rem_euclid(168) as usize];
                day8 -= i128::from(w8) * n;
                week8 -= i128::from(wk8) * n;
            }
        }
        let exact = i128::from(EXACT);
        if week8.abs() >= exact || day8.abs() >= exact || left >= exact {
            return Ok(None);
        }
        let (week, day) = (week8 as f64 / 8.0, day8 as f64 / 8.0);
        let intensity = (84.0 * week + 12.0 * day) / (self.kernel_sum * left as f64);
        if intensity <= 0.0 {
            return Ok(Some(1.0));
        }
        Ok(Some(if intensity < 1.0 {
            0.8 * {
                let v = -(intensity + 0.001).log10() / 3.0;
                if v < 1.0 {
                    v
                } else {
                    1.0
                }
            }
        } else {
            0.0
        }))
    }
}

/// `features.hour_of_week`: `(int(ts // 3600) + thursday) % 168` with CPython's float
/// floor division (fmod, then a correction), so the same hour at every boundary.
fn hour_of_week(ts: f64, thursday: i64) -> i64 {
    let rem = ts % 3600.0;
    let div = (ts - rem) / 3600.0;
    let mut floor = div.floor();
    if div - floor > 0.5 {
        floor += 1.0;
    }
    (floor as i64 + thursday).rem_euclid(168)
}

/// The worker's loader of a line's bundle (`bundle_line`), the two values it passes on,
/// and in a run the store's view, which loads most records' bundles without it.
type Load<'a, 'py> = (
    &'a Bound<'py, PyAny>,
    &'a Bound<'py, PyAny>,
    &'a Bound<'py, PyAny>,
    Option<&'a StoreView<'py>>,
);

/// The worker's store as a run reads and writes it directly (`BundleStore.run_view`,
/// whose doc says when its `load` has nothing else to do) and the engine's
/// `expiry_terms`. Everything it does is what the store's `load` and `changing` would
/// do; any other record goes to them.
struct StoreView<'py> {
    store: Bound<'py, PyAny>,
    marks: Bound<'py, PyDict>,
    next_sweep: Bound<'py, PyDict>,
    loaded: Bound<'py, PyDict>,
    pending: Bound<'py, PyDict>,
    scanning: bool,
    /// `Engine._sweep_every_s`: the store's `sweep` is a no-op, so the engine's sweep
    /// clock moves here by it (`Engine.sweep_to`).
    sweep_every: f64,
    retention: f64,
    keep_remembered: f64,
    idle: f64,
    guest_idle: f64,
    /// The current bundle (key, token, bundle) of the last record loaded here, not yet
    /// made the store's: its four attributes are set only before Python code that reads
    /// them runs (`settle`), not for every record (a quarter of a load's instructions).
    current: RefCell<Option<Current<'py>>>,
}

/// A bundle's key, its record's token and the bundle.
type Current<'py> = (Bound<'py, PyBytes>, Bound<'py, PyAny>, Bound<'py, PyAny>);

impl<'py> StoreView<'py> {
    fn new(
        view: &Bound<'py, PyAny>,
        terms: (f64, f64, f64, f64),
        sweep_every: f64,
    ) -> PyResult<Self> {
        let (store, marks, next_sweep, loaded, pending, scanning): (
            Bound<'py, PyAny>,
            Bound<'py, PyDict>,
            Bound<'py, PyDict>,
            Bound<'py, PyDict>,
            Bound<'py, PyDict>,
            bool,
        ) = view.extract()?;
        let (retention, keep_remembered, idle, guest_idle) = terms;
        Ok(Self {
            store,
            marks,
            next_sweep,
            loaded,
            pending,
            scanning,
            sweep_every,
            retention,
            keep_remembered,
            idle,
            guest_idle,
            current: RefCell::new(None),
        })
    }

    /// Makes the last record's bundle the store's current one, as its `load` leaves it:
    /// before anything that reads the store's current bundle runs (`changing`, the
    /// store's own `load`, a login's writes, the engine for a record handed back) and at
    /// the end of a run.
    fn settle(&self, py: Python<'py>) -> PyResult<()> {
        let Some((key, token, bundle)) = self.current.borrow_mut().take() else {
            return Ok(());
        };
        let store = &self.store;
        store.setattr(intern!(py, "_key"), key)?;
        store.setattr(intern!(py, "_token"), token)?;
        store.setattr(intern!(py, "_bundle"), bundle)?;
        store.setattr(intern!(py, "_dirty"), false)
    }

    /// `Engine.session_expiry(s) <= now`, the same sums in the same order.
    fn expired(&self, py: Python<'py>, s: &Bound<'py, PyAny>, now: f64) -> PyResult<bool> {
        let until = if !s.getattr(intern!(py, "ended"))?.is_none() {
            s.getattr(intern!(py, "ended_at"))?.extract::<f64>()? + self.retention
        } else {
            let last = s.getattr(intern!(py, "last"))?.extract::<f64>()?;
            if s.getattr(intern!(py, "remember_me"))?.is_truthy()? {
                last + self.keep_remembered
            } else if s.getattr(intern!(py, "guest"))?.is_truthy()? {
                last + self.guest_idle + self.retention
            } else {
                last + self.idle + self.retention
            }
        };
        Ok(until <= now)
    }

    /// The record's bundle as `load_for_native` would return it, or None when the store's
    /// own `load` must (it also returns None for a record applied before).
    fn load(
        &self,
        py: Python<'py>,
        routing: &str,
        ts: f64,
        msg: &Bound<'py, PyAny>,
        token: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if self.scanning {
            return Ok(None);
        }
        let (partition, offset) = place(py, msg)?;
        let Some(mark) = self.marks.get_item(&partition)? else {
            return Ok(None); // the partition's first event since a rebalance
        };
        let mut now: f64 = mark.extract()?;
        if ts > now {
            self.marks.set_item(&partition, ts)?;
            now = ts;
        }
        match self.next_sweep.get_item(&partition)? {
            Some(due) if now < due.extract::<f64>()? => {}
            _ => return Ok(None),
        }
        let key = PyBytes::new(py, routing.as_bytes());
        let Some(bundle) = self.loaded.get_item(&key)? else {
            return Ok(None);
        };
        if offset <= bundle.getattr(intern!(py, "offset"))?.extract::<i64>()? {
            return Ok(None); // applied before
        }
        let sessions = bundle.getattr(intern!(py, "sessions"))?.downcast_into::<PyDict>()?;
        for (_, s) in sessions.iter() {
            if self.expired(py, &s, now)? {
                return Ok(None);
            }
        }
        // The store's current bundle, as its load makes it, once something reads it
        // (`settle`): the engine's calls back (a login's) read the bundle through the
        // store.
        let pending = self.pending.get_item(&key)?;
        *self.current.borrow_mut() = Some((key, token.clone(), bundle.clone()));
        match pending {
            Some(entry) => {
                let tok = intern!(py, "token");
                if !entry.getattr(tok)?.is(token) {
                    entry.setattr(tok, token)?;
                }
            }
            // Its first change since it was written: `changing` files it.
            None => {
                self.settle(py)?;
                self.store.call_method1(intern!(py, "changing"), (offset,))?;
            }
        }
        Ok(Some(bundle))
    }
}

/// A record's partition (as the store's dictionaries key it) and offset: read directly
/// from a record the extension decoded (kafka.rs), through attributes from any other.
fn place<'py>(py: Python<'py>, msg: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, i64)> {
    let partition = match msg.downcast::<kafka::Record>() {
        Ok(record) => record.get().partition().into_pyobject(py)?.into_any(),
        Err(_) => msg.getattr(intern!(py, "partition"))?,
    };
    Ok((partition, offset_of(py, msg)?))
}

/// A record's offset, as :func:`place` reads it.
fn offset_of(py: Python<'_>, msg: &Bound<'_, PyAny>) -> PyResult<i64> {
    match msg.downcast::<kafka::Record>() {
        Ok(record) => Ok(record.get().offset()),
        Err(_) => msg.getattr(intern!(py, "offset"))?.extract(),
    }
}

/// What `run` returns for one line: applied here, or the Python path's.
enum Outcome {
    Applied,
    HandBack,
}
use Outcome::{Applied, HandBack};

macro_rules! need {
    ($cond:expr) => {
        if !$cond {
            return Ok(HandBack);
        }
    };
}

/// A session's login address, parsed once.
struct Place {
    text: String,
    /// Its bytes when in canonical form (else the Python ladder decides).
    packed: Option<(usize, [u8; 16])>,
    /// Inside an allow-listed range.
    allowed: bool,
}

/// Bits of `Shadow::dirty`: fields changed here and not yet written to the Python object.
const D_LAST: u8 = 1;
const D_LAST_IP: u8 = 2;
const D_NODE: u8 = 4;
const D_RAISED: u8 = 8;
const D_PROFILE: u8 = 16;

/// Copies of sessions (and of users) `bundle_line` keeps at most: all are dropped at this
/// many (most belong to bundles the worker has written and let go since).
const MAX_BUNDLE_COPIES: usize = 1 << 15;

/// Entries of `FastPath::dirty` after which `run` writes every copy back: a copy read
/// back (clean) and changed again is listed again, so this bounds the list.
const MAX_DIRTY: usize = 1 << 16;

/// What the routine conditions read of one session, copied from its `SessionState` the
/// first time a line needs it. Routine updates land here and are written to the object
/// (`Shadow::write_back`) when something is about to read it; a session the Python side
/// writes (the store records it) is dropped here and read again when next needed. Reading
/// a dozen attributes of a cold Python object per line (each value another object,
/// another cache miss) was most of a routine line's cost.
struct Shadow {
    obj: Py<PyAny>,
    guest: bool,
    remember_me: bool,
    start: f64,
    last: f64,
    /// `user` when truthy (otherwise the line's own user field counts).
    user: Option<String>,
    /// `login_ua` when truthy, with the object for `same_browser`.
    login_ua: Option<(Py<PyAny>, String)>,
    /// The last user agent `same_browser` tolerated against `login_ua` (a pure function).
    tolerated_ua: Option<String>,
    login_ip: Option<Place>,
    last_ip: Option<String>,
    login_asn: Option<i64>,
    node: Option<String>,
    /// `raised["ip_change"]`, when present.
    ip_change: Option<i64>,
    /// The behaviour profile's counters, once a line with a model on needed them.
    prof: Option<Prof>,
    /// `raised` holds `behaviour_anomaly` (the session is not scored again).
    behaviour_raised: bool,
    dirty: u8,
}

impl Shadow {
    /// Writes the pending changes to the session's object.
    fn write_back(&mut self, py: Python<'_>) -> PyResult<()> {
        let dirty = std::mem::take(&mut self.dirty);
        if dirty == 0 {
            return Ok(());
        }
        let obj = self.obj.bind(py);
        if dirty & D_LAST != 0 {
            obj.setattr(intern!(py, "last"), self.last)?;
        }
        if dirty & D_LAST_IP != 0 {
            if let Some(ip) = &self.last_ip {
                obj.setattr(intern!(py, "last_ip"), PyString::new(py, ip))?;
            }
        }
        if dirty & D_NODE != 0 {
            if let Some(node) = &self.node {
                obj.setattr(intern!(py, "node"), PyString::new(py, node))?;
            }
        }
        if dirty & D_PROFILE != 0 {
            if let Some(prof) = &mut self.prof {
                prof.sync(py)?;
            }
        }
        if dirty & D_RAISED != 0 {
            if let Some(count) = self.ip_change {
                obj.getattr(intern!(py, "raised"))?
                    .downcast_into::<PyDict>()?
                    .set_item(intern!(py, "ip_change"), count)?;
            }
        }
        Ok(())
    }
}

/// The behaviour profile's per-request counters (`features.Profile`), copied like the
/// session's own fields; `synced` is what the object holds now.
struct Prof {
    obj: Py<PyAny>,
    now: [i64; PROF_FIELDS.len()],
    synced: [i64; PROF_FIELDS.len()],
    /// The window's start (`since`), moved by a checkpoint; and what the object holds.
    since: f64,
    since_synced: f64,
    /// Fixed when the profile opened: the user was mature, the user's usual gap and
    /// bytes then, the login's network and browser new, the start's hour rarity.
    scored: bool,
    base_gap: f64,
    base_bytes: Option<f64>,
    new_network: bool,
    new_browser: bool,
    start_rarity: f64,
}

/// The profile fields kept in `Prof`, in its arrays' order.
const PROF_FIELDS: [&str; 9] = [
    "n",
    "w_requests",
    "w_gaps",
    "w_fast",
    "w_new",
    "w_bytes",
    "w_sized",
    "hour",
    "hour_count",
];
/// `PROF_FIELDS` as interned Python strings, made once: a `&str` name would be turned
/// into a new string and interned again on every attribute access.
fn prof_names(py: Python<'_>) -> &[Py<PyString>; PROF_FIELDS.len()] {
    static NAMES: GILOnceCell<[Py<PyString>; PROF_FIELDS.len()]> = GILOnceCell::new();
    NAMES.get_or_init(py, || {
        PROF_FIELDS.map(|name| PyString::intern(py, name).unbind())
    })
}

const P_N: usize = 0;
const P_REQUESTS: usize = 1;
const P_GAPS: usize = 2;
const P_FAST: usize = 3;
const P_NEW: usize = 4;
const P_BYTES: usize = 5;
const P_SIZED: usize = 6;
const P_HOUR: usize = 7;
const P_HOUR_COUNT: usize = 8;

impl Prof {
    /// None when a counter is beyond 64 bits (Python's ints are not): the Python path's.
    fn load(profile: Bound<'_, PyAny>) -> PyResult<Option<Self>> {
        let py = profile.py();
        let mut now = [0i64; PROF_FIELDS.len()];
        for (value, name) in now.iter_mut().zip(prof_names(py)) {
            match profile.getattr(name.bind(py))?.extract() {
                Ok(v) => *value = v,
                Err(_) => return Ok(None),
            }
        }
        let since: f64 = profile.getattr(intern!(py, "since"))?.extract()?;
        Ok(Some(Prof {
            since,
            since_synced: since,
            scored: profile.getattr(intern!(py, "scored"))?.extract()?,
            base_gap: profile.getattr(intern!(py, "base_gap"))?.extract()?,
            base_bytes: profile.getattr(intern!(py, "base_bytes"))?.extract()?,
            new_network: profile.getattr(intern!(py, "new_network"))?.extract()?,
            new_browser: profile.getattr(intern!(py, "new_browser"))?.extract()?,
            start_rarity: profile.getattr(intern!(py, "start_rarity"))?.extract()?,
            obj: profile.unbind(),
            now,
            synced: now,
        }))
    }

    /// Writes the fields that changed since the last write to the object.
    fn sync(&mut self, py: Python<'_>) -> PyResult<()> {
        let obj = self.obj.bind(py);
        let names = prof_names(py);
        for ((now, synced), name) in self.now.iter().zip(self.synced.iter_mut()).zip(names) {
            if now != synced {
                obj.setattr(name.bind(py), *now)?;
                *synced = *now;
            }
        }
        if self.since != self.since_synced {
            obj.setattr(intern!(py, "since"), self.since)?;
            self.since_synced = self.since;
        }
        Ok(())
    }
}

/// A user's entry, copied on first need like a session's: its lock-out and deactivation
/// state, `(blocked now, since)` each.
struct Account {
    obj: Py<PyAny>,
    /// The user's name as a Python string (made once: its hash is then cached).
    key: Py<PyString>,
    locked: (bool, Option<f64>),
    inactive: (bool, Option<f64>),
}

impl Account {
    /// Never locked out nor deactivated.
    fn open(&self) -> bool {
        self.locked.1.is_none() && self.inactive.1.is_none()
    }

    /// Neither `locked_out_activity` nor `inactive_user_activity` fires for a request at
    /// `ts` of a session started at `start` (`indicators.account._after`, not first sight).
    fn quiet(&self, start: f64, ts: f64, skew: f64) -> bool {
        [self.locked, self.inactive]
            .iter()
            .all(|&(blocked, since)| match since {
                None => true,
                Some(since) => ts <= since + skew || (!blocked && start > since),
            })
    }
}

/// Hashes a fingerprint by its first 8 bytes: it is already a keyed digest.
#[derive(Default)]
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
}

type Digest = [u8; 16];
type DigestMap<V> = HashMap<Digest, V, BuildHasherDefault<DigestHasher>>;

/// The fingerprint's text: 32 lowercase hex digits, as `hexdigest()` writes them.
fn hex(d: &Digest) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in d.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
    out
}

/// The digest behind a fingerprint's text, or None for any other key (never one of ours).
fn unhex(text: &str) -> Option<Digest> {
    let b = text.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Some(out)
}

/// `IpLadder.allowed` for an address's bytes, over the ladder's (length, mask, network).
fn allowed(allow: &[(usize, u128, u128)], addr: &(usize, [u8; 16])) -> bool {
    let (size, bytes) = addr;
    let value = bytes[..*size]
        .iter()
        .fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
    allow
        .iter()
        .any(|&(n, mask, net)| n == *size && value & mask == net)
}

/// The store's key for a digest (`Fingerprinter`'s hex text) as a Python string.
fn fp_string<'py>(py: Python<'py>, key: &Digest) -> Bound<'py, PyString> {
    PyString::new(py, std::str::from_utf8(&hex(key)).unwrap_or_default())
}

/// A Python `str` attribute that is truthy, as Rust text; None for None or "".
fn truthy_text(obj: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    Ok(text(obj)?.filter(|t| !t.is_empty()))
}

/// A Python `str | None` attribute as Rust text.
fn text(obj: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if obj.is_none() {
        return Ok(None);
    }
    Ok(Some(obj.downcast::<PyString>()?.to_str()?.to_owned()))
}

/// What a plain login is checked for, and how its state is made (`Engine.login_shortcut`).
struct LoginRules {
    session_cls: PyObject,
    user_cls: PyObject,
    put_session: PyObject,
    put_user: PyObject,
    /// `weak_session_id`: the estimate and the minimum bits (None: rule off).
    weak: Option<(Py<Entropy>, f64)>,
    /// `concurrent_sessions`: the limit, the user idle timeout, life span and clock skew
    /// (`Engine._live_sessions`); None: rule off.
    concurrency: Option<(usize, f64, f64, f64)>,
}

/// `LoginRules` as Python hands them over: (SessionState, UserState, store.put_session,
/// store.put_user), the weak-ID rule, the concurrency rule.
impl Upkeep {
    /// The user's paths, the request's path shape, and whether it is new for the user
    /// (read only: `note_path` records it).
    #[allow(clippy::type_complexity)]
    fn path_of<'py>(
        &self,
        py: Python<'py>,
        shapes: &mut HashMap<String, Py<PyString>>,
        base: &Bound<'py, PyAny>,
        ev: &Raw<'_>,
    ) -> PyResult<(Bound<'py, PyDict>, Option<Bound<'py, PyAny>>, bool)> {
        let paths = base
            .getattr(intern!(py, "paths"))?
            .downcast_into::<PyDict>()?;
        let shape = match &ev.url {
            Some(url) => {
                let url = url.0.as_ref();
                Some(match shapes.get(url) {
                    Some(shape) => shape.bind(py).clone().into_any(),
                    None => match path_shape(url) {
                        Some(shape) => {
                            if shapes.len() >= SHAPE_CACHE_MAX {
                                shapes.clear();
                            }
                            let shape = PyString::new(py, &shape);
                            shapes.insert(url.to_owned(), shape.clone().unbind());
                            shape.into_any()
                        }
                        None => self.path_shape.bind(py).call1((url,))?,
                    },
                })
            }
            None => None,
        };
        let new_path = match &shape {
            Some(shape) => !paths.contains(shape)?,
            None => false,
        };
        Ok((paths, shape, new_path))
    }

    /// `features.observe`'s note of a new path: the oldest one goes past MAX_PATHS.
    fn note_path(
        &self,
        py: Python<'_>,
        paths: &Bound<'_, PyDict>,
        shape: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        paths.set_item(shape, py.None())?;
        if paths.len() > self.max_paths {
            if let Some((oldest, _)) = paths.iter().next() {
                paths.del_item(oldest)?; // habits change
            }
        }
        Ok(())
    }
}

/// `Checkpoints` as Python passes it: forest, denominator, threshold, limit, spread,
/// one-sided features, SLOW, _NEAR, _KERNEL_SUM, and `Opening`'s fields in order.
type CheckpointArgs = (
    Py<Forest>,
    f64,
    f64,
    Vec<f64>,
    Vec<f64>,
    Vec<usize>,
    f64,
    Vec<(i64, i64)>,
    f64,
    (PyObject, PyObject, PyObject, i64, usize, usize),
);

type LoginArgs = (
    (PyObject, PyObject, PyObject, PyObject),
    Option<(Py<Entropy>, f64)>,
    Option<(usize, f64, f64, f64)>,
);

/// The user's entry (None: no such user), copied from the store on first need.
fn cached_account<'a>(
    py: Python<'_>,
    accounts: &'a mut HashMap<String, Option<Account>>,
    users: &Py<PyDict>,
    name: &str,
) -> PyResult<Option<&'a Account>> {
    if !accounts.contains_key(name) {
        let entry = account_of(py, users, name)?;
        accounts.insert(name.to_owned(), entry);
    }
    Ok(accounts.get(name).and_then(Option::as_ref))
}

/// The engine's event time (watermark) and when its next sweep is due; None before its
/// first event, which is the Python path's (it sets the start).
fn event_clock(engine: &Bound<'_, PyAny>) -> PyResult<Option<(f64, f64)>> {
    let py = engine.py();
    if engine.getattr(intern!(py, "started_at"))?.is_none() {
        return Ok(None);
    }
    Ok(Some((
        engine.getattr(intern!(py, "watermark"))?.extract()?,
        engine.getattr(intern!(py, "_next_sweep"))?.extract()?,
    )))
}

/// With a bundle: makes the copy of `name`'s entry the bundle's user entry (`user`),
/// whatever the name (`BundleStore.get_user`); a copy holds while it is the same object
/// (see `FastPath::ensure`).
fn bundle_account(
    py: Python<'_>,
    accounts: &mut HashMap<String, Option<Account>>,
    user: Option<&PyObject>,
    name: &str,
) -> PyResult<()> {
    let held = match (accounts.get(name), user) {
        (Some(Some(acc)), Some(u)) => acc.obj.is(u),
        (Some(None), None) => true,
        _ => false,
    };
    if !held {
        let entry = match user {
            Some(u) => Some(account_from(py, u.bind(py).clone(), name)?),
            None => None,
        };
        accounts.insert(name.to_owned(), entry);
    }
    Ok(())
}

/// A user's entry as the store holds it (None: no such user).
fn account_of(py: Python<'_>, users: &Py<PyDict>, name: &str) -> PyResult<Option<Account>> {
    Ok(match users.bind(py).get_item(name)? {
        Some(u) => Some(account_from(py, u, name)?),
        None => None,
    })
}

/// A user's entry from its `UserState` object.
fn account_from(py: Python<'_>, u: Bound<'_, PyAny>, name: &str) -> PyResult<Account> {
    Ok(Account {
        key: PyString::new(py, name).unbind(),
        locked: (
            u.getattr(intern!(py, "locked"))?.extract()?,
            u.getattr(intern!(py, "locked_at"))?.extract()?,
        ),
        inactive: (
            u.getattr(intern!(py, "inactive"))?.extract()?,
            u.getattr(intern!(py, "deactivated_at"))?.extract()?,
        ),
        obj: u.unbind(),
    })
}

/// The routine-request shortcut over one engine's in-memory store (see the module doc).
#[pyclass(module = "sessionwatch_native")]
struct FastPath {
    /// BLAKE2b keyed and personalised as the Python Fingerprinter, key block absorbed.
    mac: State,
    engine: PyObject,
    sessions: Py<PyDict>,
    users: Py<PyDict>,
    filed: Py<PySet>,
    /// Sessions and users the Python side wrote or dropped since this path last looked
    /// (`MemoryStore.watch`): their copies here are stale.
    written_sessions: Py<PySet>,
    written_users: Py<PySet>,
    shadows: DigestMap<Shadow>,
    accounts: HashMap<String, Option<Account>>,
    /// Shadows with changes not yet written to their objects.
    dirty: Vec<Digest>,
    same_place: PyObject,
    same_browser: PyObject,
    /// The ladder's allow-listed ranges: (address length, mask, network).
    allow: Vec<(usize, u128, u128)>,
    trust_same_asn: bool,
    behaviour: Option<Upkeep>,
    /// URL -> its path shape, as made for the user's paths (a string's hash is cached,
    /// so a repeated URL costs one lookup here and no hashing there). Emptied when full.
    shapes: HashMap<String, Py<PyString>>,
    login: Option<LoginRules>,
    idle_q: f64,
    guest_idle_q: f64,
    span_q: f64,
    guest_span_q: f64,
    /// The clock skew allowed after a lock-out or deactivation.
    skew: f64,
    prefix_v4: u32,
    prefix_v6: u32,
    bounds: Vec<f64>,
    /// Events applied here since the last `take_counts`, per lag bucket.
    counts: Vec<u64>,
    lag_sum: f64,
    /// Logins among the events applied since the last `take_counts`.
    logins: u64,
    /// Lines applied here in all.
    #[pyo3(get)]
    applied: u64,
    /// Behaviour windows closed here (checkpoints applied without the Python path).
    #[pyo3(get)]
    closed: u64,
    /// Set by `bundle_line`: the state is one routing key's bundle, loaded by the
    /// worker's store for this line (no expiry filing; copies kept across lines are
    /// checked against the bundle's objects before use).
    in_bundle: bool,
    /// The bundle's user entry (`Bundle.user`, which `BundleStore.get_user` hands out
    /// whatever the name asked for) while `in_bundle`.
    bundle_user: Option<PyObject>,
    /// `bundle_line` asked the worker's store to load the line's bundle.
    loaded: bool,
    /// The bundle the store loaded for the current line (`bundle_run` moves its offset
    /// on once the line is applied).
    bundle: Option<PyObject>,
}

impl FastPath {
    /// One record of `bundle_line` or `bundle_run`, the engine's event clock read by
    /// the caller.
    fn bundle_step<'py>(
        &mut self,
        py: Python<'py>,
        line: &[u8],
        load: Load<'_, 'py>,
        watermark: &mut f64,
        next_sweep: &mut f64,
        now: f64,
    ) -> PyResult<Outcome> {
        self.forget_written(py)?;
        if self.shadows.len() >= MAX_BUNDLE_COPIES {
            self.flush(py)?; // pending changes first: they are the bundles' only record
            self.shadows.clear();
        }
        if self.accounts.len() >= MAX_BUNDLE_COPIES {
            self.accounts.clear();
        }
        self.in_bundle = true;
        self.loaded = false;
        let outcome = self.line(py, line, watermark, next_sweep, now, Some(load));
        // A record handed back after the load is the engine's, which reads the bundle's
        // sessions: their pending changes go in first. Otherwise they wait in the copies
        // (a session's next records add to them) until the store asks for a bundle's,
        // before it encodes it at a checkpoint or shows it (`flush_bundle`).
        let flushed = match &outcome {
            Ok(HandBack) if self.loaded => {
                let sessions = self.sessions.clone_ref(py).into_bound(py);
                self.flush_dict(py, &sessions)
            }
            _ if self.dirty.len() > MAX_DIRTY => self.flush(py),
            _ => Ok(()),
        };
        self.bundle_user = None;
        self.in_bundle = false;
        let outcome = outcome?;
        flushed?;
        Ok(outcome)
    }

    fn digest(&self, sid: &str) -> Digest {
        let mut state = self.mac.clone();
        state.update(sid.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(state.finalize().as_bytes());
        out
    }

    /// Writes every shadow's pending changes to its Python object.
    fn flush(&mut self, py: Python<'_>) -> PyResult<()> {
        for key in self.dirty.drain(..) {
            if let Some(sh) = self.shadows.get_mut(&key) {
                sh.write_back(py)?;
            }
        }
        Ok(())
    }

    /// Writes one shadow's pending changes (it stays listed in `dirty`, now clean).
    fn flush_key(&mut self, py: Python<'_>, key: &Digest) -> PyResult<()> {
        match self.shadows.get_mut(key) {
            Some(sh) => sh.write_back(py),
            None => Ok(()),
        }
    }

    /// Writes the pending changes of the copies of `sessions`' objects (one bundle's).
    fn flush_dict(&mut self, py: Python<'_>, sessions: &Bound<'_, PyDict>) -> PyResult<()> {
        for (fp, obj) in sessions.iter() {
            let Some(key) = unhex(fp.downcast::<PyString>()?.to_str()?) else {
                continue;
            };
            if let Some(sh) = self.shadows.get_mut(&key) {
                if sh.dirty != 0 && obj.is(&sh.obj) {
                    sh.write_back(py)?;
                }
            }
        }
        Ok(())
    }

    /// Drops the copies of whatever was written through the store since the last look.
    /// A copy with pending changes is written back first if the store still holds its
    /// object: then the write was this path's own (a login it applied, whose session
    /// it went on to copy), since Python code reads a session, flushing it, before it
    /// changes it.
    fn forget_written(&mut self, py: Python<'_>) -> PyResult<()> {
        let sessions = self.written_sessions.bind(py);
        if !sessions.is_empty() {
            let store = self.sessions.bind(py);
            for fp in sessions.iter() {
                let Some(key) = unhex(fp.downcast::<PyString>()?.to_str()?) else {
                    continue;
                };
                if let Some(mut sh) = self.shadows.remove(&key) {
                    if sh.dirty != 0 && store.get_item(&fp)?.is_some_and(|s| s.is(&sh.obj)) {
                        sh.write_back(py)?;
                    }
                }
            }
            sessions.clear();
        }
        let users = self.written_users.bind(py);
        if !users.is_empty() {
            for name in users.iter() {
                self.accounts.remove(name.downcast::<PyString>()?.to_str()?);
            }
            users.clear();
        }
        Ok(())
    }

    /// Makes sure the session has a shadow, read from its object if there is none yet:
    /// false when the store has no such session, or it is not filed for expiry, or it
    /// has ended (a line of any of those is the Python path's).
    fn ensure(&mut self, py: Python<'_>, key: Digest) -> PyResult<bool> {
        if self.in_bundle {
            // A copy kept from an earlier record holds while the bundle still has the
            // very object it was read from (a bundle read again from the table has new
            // ones; what Python writes goes through the store, which `forget_written`
            // saw). Its pending changes, if any, are the object's own: the store has them
            // written back before anything but `last` is read (`flush_bundle`).
            if let Some(sh) = self.shadows.get(&key) {
                let fp = fp_string(py, &key);
                let same = match self.sessions.bind(py).get_item(&fp)? {
                    Some(s) => s.is(&sh.obj),
                    None => false,
                };
                if !same {
                    self.shadows.remove(&key);
                }
            }
        }
        if !self.shadows.contains_key(&key) {
            let fp = fp_string(py, &key);
            let Some(s) = self.sessions.bind(py).get_item(&fp)? else {
                return Ok(false);
            };
            if (!self.in_bundle && !self.filed.bind(py).contains(&fp)?)
                || !s.getattr(intern!(py, "ended"))?.is_none()
            {
                return Ok(false);
            }
            let login_ua = s.getattr(intern!(py, "login_ua"))?;
            let login_ua = truthy_text(&login_ua)?.map(|t| (login_ua.unbind(), t));
            let login_ip = match text(&s.getattr(intern!(py, "login_ip"))?)? {
                Some(t) => {
                    let packed = packed(&t);
                    let allowed = packed.as_ref().is_some_and(|p| allowed(&self.allow, p));
                    Some(Place {
                        text: t,
                        packed,
                        allowed,
                    })
                }
                None => None,
            };
            let login_asn = s.getattr(intern!(py, "login_asn"))?;
            let raised = s
                .getattr(intern!(py, "raised"))?
                .downcast_into::<PyDict>()?;
            let ip_change = match raised.get_item(intern!(py, "ip_change"))? {
                Some(count) => count.extract::<i64>().ok(),
                None => None,
            };
            let shadow = Shadow {
                guest: s.getattr(intern!(py, "guest"))?.extract()?,
                remember_me: s.getattr(intern!(py, "remember_me"))?.extract()?,
                start: s.getattr(intern!(py, "start"))?.extract()?,
                last: s.getattr(intern!(py, "last"))?.extract()?,
                user: truthy_text(&s.getattr(intern!(py, "user"))?)?,
                login_ua,
                tolerated_ua: None,
                login_ip,
                last_ip: text(&s.getattr(intern!(py, "last_ip"))?)?,
                login_asn: if login_asn.is_none() {
                    None
                } else {
                    login_asn.extract::<i64>().ok()
                },
                node: text(&s.getattr(intern!(py, "node"))?)?,
                ip_change,
                prof: None,
                behaviour_raised: raised.contains(intern!(py, "behaviour_anomaly"))?,
                dirty: 0,
                obj: s.unbind(),
            };
            self.shadows.insert(key, shadow);
        }
        Ok(true)
    }

    fn line<'py>(
        &mut self,
        py: Python<'py>,
        line: &[u8],
        watermark: &mut f64,
        next_sweep: &mut f64,
        now: f64,
        load: Option<Load<'_, 'py>>,
    ) -> PyResult<Outcome> {
        // -- the record: what detector.events.decode would accept, or hand back --------
        need!(line.len() <= MAX_LINE_BYTES);
        let text = if line.is_ascii() {
            // SAFETY: ASCII is valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(line) }
        } else {
            match std::str::from_utf8(line) {
                Ok(text) => text,
                Err(_) => return Ok(HandBack),
            }
        };
        // The common line read in one pass (scan.rs); serde_json decides any other.
        let Some(ev) = scan::raw(text).or_else(|| serde_json::from_str::<Raw>(text).ok()) else {
            return Ok(HandBack);
        };
        let login = match ev.kind.0.as_ref() {
            "transaction" => false,
            "login" if self.login.is_some() => true,
            _ => return Ok(HandBack),
        };
        need!(!ev.event_id.0.is_empty());
        // A login needs a user (`detector.events.validate`): without one it is invalid,
        // and event time must not move for it here.
        need!(!login || ev.user.as_ref().is_some_and(|u| !u.0.is_empty()));
        need!(ev.own_epoch.is_none() && ev.geo_lat.is_none() && ev.geo_lon.is_none());
        let ts = match &ev.ts {
            Ts::Num(x) => *x,
            Ts::Text(text) => match parse_rfc3339(text) {
                Some(x) => x,
                None => return Ok(HandBack),
            },
        };
        need!((0.0..MAX_EPOCH).contains(&ts));
        need!(ts <= now + MAX_AHEAD_S);
        let (Some(sid), Some(ip)) = (&ev.session_id, &ev.ip) else {
            return Ok(HandBack);
        };
        let (sid, ip) = (sid.0.as_ref(), ip.0.as_ref());
        need!(!sid.is_empty() && !sid.starts_with(FP_PREFIX));
        // A valid address (canonical form, which inet_pton accepts): the line is one the
        // Python path accepts, so event time may move for it.
        let Some(here) = packed(ip) else {
            return Ok(HandBack);
        };
        // -- the engine: event time moves on. A line that makes a sweep due is Python's:
        // Engine.process sweeps first, and the store then asks for the pending changes
        // of just the sessions due (a sweep every minute of event time would otherwise
        // write every copy back). The worker's store sweeps nothing there (its partitions
        // are swept on load): in a run, the engine's sweep clock just moves on, as
        // `Engine.sweep_to` moves it.
        if ts > *watermark {
            if ts >= *next_sweep {
                match load.as_ref().and_then(|load| load.3) {
                    Some(view) => *next_sweep = ts + view.sweep_every,
                    None => return Ok(HandBack),
                }
            }
            *watermark = ts;
        }
        // -- the session: known, filed for expiry, live, and every routine condition ----
        let key = self.digest(sid);
        if let Some((load, msg, token, view)) = load {
            // The worker's store loads the routing key's bundle (`routing_key`): a user's,
            // or a guest session's by fingerprint. None: the line was applied before (a
            // re-delivery), which is the Python path's.
            let routing = match ev.user.as_ref().filter(|u| !u.0.is_empty()) {
                Some(user) => format!("u:{}", user.0),
                None => format!("s:{}", std::str::from_utf8(&hex(&key)).unwrap_or_default()),
            };
            self.loaded = true;
            let hit = match view {
                Some(view) => view.load(py, &routing, ts, msg, token)?,
                None => None,
            };
            let bundle = match hit {
                Some(bundle) => bundle,
                None => {
                    if let Some(view) = view {
                        view.settle(py)?;
                    }
                    load.call1((routing, ts, msg, token))?
                }
            };
            if bundle.is_none() {
                return Ok(HandBack);
            }
            self.sessions = bundle
                .getattr(intern!(py, "sessions"))?
                .downcast_into::<PyDict>()?
                .unbind();
            let user = bundle.getattr(intern!(py, "user"))?;
            self.bundle_user = if user.is_none() { None } else { Some(user.unbind()) };
            self.bundle = Some(bundle.unbind());
            if login {
                if let Some(view) = view {
                    view.settle(py)?; // its writes go to the store's current bundle
                }
            }
        }
        if login {
            return self.login(py, &ev, ts, sid, (ip, &here), now);
        }
        need!(self.ensure(py, key)?);
        let Some(sh) = self.shadows.get_mut(&key) else {
            return Ok(HandBack);
        };
        let guest = sh.guest;
        need!(guest || ev.scheme.as_ref().is_none_or(|sc| *sc == Scheme::Https));
        if let Some(ua) = ev.user_agent.as_ref().filter(|ua| !ua.0.is_empty()) {
            let ua = ua.0.as_ref();
            if let Some((login_ua, login_text)) = &sh.login_ua {
                if login_text != ua && sh.tolerated_ua.as_deref() != Some(ua) {
                    need!(self
                        .same_browser
                        .bind(py)
                        .call1((login_ua.bind(py), ua))?
                        .is_truthy()?);
                    sh.tolerated_ua = Some(ua.to_owned());
                }
            }
        }
        let last = sh.last;
        let idle = if guest {
            self.guest_idle_q
        } else {
            self.idle_q
        };
        if !sh.remember_me && ts - last > idle {
            return Ok(HandBack); // idle_timeout_exceeded
        }
        let span = if guest {
            self.guest_span_q
        } else {
            self.span_q
        };
        if span != 0.0 && ts - sh.start > span {
            return Ok(HandBack); // lifespan_exceeded
        }
        // The same place as the login's address: the prefix and allow-list rungs here
        // for canonical addresses, the engine's own ladder for any other spelling.
        let ip_is_last = sh.last_ip.as_deref() == Some(ip);
        let mut moved = false;
        if let Some(place) = sh.login_ip.as_ref().filter(|p| p.text != ip) {
            let same = match &place.packed {
                Some(there) => {
                    same_prefix(&here, there, self.prefix_v4, self.prefix_v6)
                        || place.allowed
                        || allowed(&self.allow, &here)
                }
                None => self
                    .same_place
                    .bind(py)
                    .call1((place.text.as_str(), ip))?
                    .is_truthy()?,
            };
            if !same {
                // ip_change fires; only deduplicated (counted) is routine.
                if sh.ip_change.is_none() {
                    return Ok(HandBack);
                }
                let same_asn =
                    self.trust_same_asn && ev.asn.is_some_and(|asn| sh.login_asn == Some(asn));
                moved = !same_asn;
            }
        }
        let name: Option<&str> = match &sh.user {
            Some(user) => Some(user),
            None => ev.user.as_ref().map(|u| u.0.as_ref()),
        };
        let mut account = None;
        if let Some(name) = name {
            if self.in_bundle {
                bundle_account(py, &mut self.accounts, self.bundle_user.as_ref(), name)?;
            }
            if let Some(acc) = cached_account(py, &mut self.accounts, &self.users, name)? {
                need!(acc.quiet(sh.start, ts, self.skew));
                account = Some((acc.obj.bind(py), acc.key.bind(py)));
            }
        }
        // -- the behaviour model's upkeep (Engine._behave, features.observe) ----------
        // Only for a session whose profile and user baseline exist (the first request and
        // a new user are the Python path's); a checkpoint only with `Checkpoints`, and
        // only when its score stays under the threshold (an alert is Python's).
        let mut upkeep = None;
        if let (Some(b), Some(_), false) = (&self.behaviour, name, guest) {
            let Some((u, key)) = account else {
                return Ok(HandBack);
            };
            let base = u.getattr(intern!(py, "baseline"))?;
            need!(!base.is_none());
            if sh.prof.is_none() {
                let profile = sh.obj.bind(py).getattr(intern!(py, "profile"))?;
                need!(!profile.is_none()); // a first request opens it: Python's
                sh.prof = Prof::load(profile)?;
            }
            let Some(prof) = &sh.prof else {
                return Ok(HandBack);
            };
            let n = prof.now[P_N] + 1;
            let checkpoint = n == 1 || n == 4 || n % 16 == 0;
            need!(!checkpoint || b.checkpoints.is_some());
            need!(self.in_bundle || b.users_filed.bind(py).contains(key)?);
            let bytes = match ev.response_bytes {
                Some(size) => match u64::try_from(prof.now[P_BYTES])
                    .ok()
                    .and_then(|before| before.checked_add(size))
                {
                    Some(total) if total <= i64::MAX as u64 => Some(total as i64),
                    _ => return Ok(HandBack),
                },
                None => None,
            };
            let (paths, shape, new_path) = b.path_of(py, &mut self.shapes, &base, &ev)?;
            let mut closed = None;
            if let (true, Some(cp)) = (checkpoint, &b.checkpoints) {
                // The counters as observe() leaves them, this request included.
                let mut c = prof.now;
                c[P_N] = n;
                c[P_REQUESTS] += 1;
                c[P_GAPS] += 1;
                c[P_FAST] += i64::from(ts - last < b.burst_gap);
                c[P_NEW] += i64::from(new_path);
                if let Some(total) = bytes {
                    c[P_BYTES] = total;
                    c[P_SIZED] += 1;
                }
                let scored = prof.scored && !sh.behaviour_raised;
                let Some(close) = cp.close(py, prof, &c, &base, ts, ts - sh.start, b, scored)?
                else {
                    return Ok(HandBack);
                };
                closed = Some(close);
            }
            upkeep = Some((u, base, n, bytes, paths, shape, new_path, closed));
        }
        // -- routine: apply what Engine._routine applies -------------------------------
        let was_dirty = sh.dirty != 0;
        if moved {
            sh.ip_change = sh.ip_change.map(|c| c + 1);
            sh.dirty |= D_RAISED;
        }
        if let (Some(b), Some((u, base, n, bytes, paths, shape, new_path, closed)), Some(prof)) =
            (&self.behaviour, upkeep, sh.prof.as_mut())
        {
            let c = &mut prof.now;
            c[P_N] = n;
            c[P_REQUESTS] += 1;
            c[P_GAPS] += 1;
            if ts - last < b.burst_gap {
                c[P_FAST] += 1;
            }
            if let (Some(shape), true) = (shape, new_path) {
                c[P_NEW] += 1;
                b.note_path(py, &paths, &shape)?;
            }
            if let Some(total) = bytes {
                c[P_BYTES] = total;
                c[P_SIZED] += 1;
            }
            let how = hour_of_week(ts, b.thursday);
            if c[P_HOUR] == how {
                c[P_HOUR_COUNT] += 1;
            } else {
                // features.flush_hours reads and resets the object's hour counters.
                prof.sync(py)?;
                b.flush_hours.bind(py).call1((&base, prof.obj.bind(py)))?;
                prof.synced[P_HOUR_COUNT] = 0;
                prof.now[P_HOUR] = how;
                prof.now[P_HOUR_COUNT] = 1;
            }
            if let Some(closed) = closed {
                // features._checkpoint: the hour's requests into the user's and session's
                // hours, the user's usual gap and bytes moved, a new window.
                prof.sync(py)?;
                b.flush_hours.bind(py).call1((&base, prof.obj.bind(py)))?;
                prof.synced[P_HOUR_COUNT] = 0;
                prof.now[P_HOUR_COUNT] = 0;
                if let Some(log_gap) = closed.log_gap {
                    base.setattr(intern!(py, "log_gap"), log_gap)?;
                }
                if let Some(log_bytes) = closed.log_bytes {
                    base.setattr(intern!(py, "log_bytes"), log_bytes)?;
                }
                prof.since = ts;
                for i in [P_REQUESTS, P_GAPS, P_FAST, P_NEW, P_BYTES, P_SIZED] {
                    prof.now[i] = 0;
                }
                self.closed += 1;
            }
            sh.dirty |= D_PROFILE;
            if ts > u.getattr(intern!(py, "last"))?.extract::<f64>()? {
                u.setattr(intern!(py, "last"), ts)?;
            }
        }
        if ts > last {
            sh.last = ts;
            if self.in_bundle {
                // At once: the store's expiry and census, and a compiled login's count,
                // read `last` from the objects between records (the rest waits, below).
                sh.obj.bind(py).setattr(intern!(py, "last"), ts)?;
            } else {
                sh.dirty |= D_LAST;
            }
        }
        if !ip_is_last {
            sh.last_ip = Some(ip.to_owned());
            sh.dirty |= D_LAST_IP;
        }
        if let Some(node) = &ev.node {
            if sh.node.as_deref() != Some(node.0.as_ref()) {
                sh.node = Some(node.0.to_string());
                sh.dirty |= D_NODE;
            }
        }
        if !was_dirty && sh.dirty != 0 {
            self.dirty.push(key);
        }
        self.count(now - ts);
        Ok(Applied)
    }

    fn count(&mut self, late: f64) {
        self.counts[self.bounds.partition_point(|b| *b < late)] += 1;
        self.lag_sum += late;
        self.applied += 1;
    }

    /// Writes back and forgets one session's copy (before Python code changes it).
    fn evict(&mut self, py: Python<'_>, key: &Digest) -> PyResult<()> {
        self.flush_key(py, key)?;
        self.shadows.remove(key);
        Ok(())
    }

    /// A plain login: a session ID seen for the first time, of a user with no lock-out
    /// or deactivation history, over https, no location, a strong ID, within the
    /// concurrency limit (a rotation away from a guest ID allowed). That is the
    /// `("login", not ended, no account history, first sight, not located)` plan of the
    /// engine with no indicator firing, applied as `Engine._activity` and
    /// `Engine._after_login` apply it, in the same order; any other login is handed back.
    fn login(
        &mut self,
        py: Python<'_>,
        ev: &Raw<'_>,
        ts: f64,
        sid: &str,
        // The address as text, and its bytes (parsed once, by `line`).
        (ip, here): (&str, &(usize, [u8; 16])),
        now: f64,
    ) -> PyResult<Outcome> {
        let Some(rules) = &self.login else {
            return Ok(HandBack);
        };
        let key = self.digest(sid);
        need!(!self.shadows.contains_key(&key));
        let fp = fp_string(py, &key);
        let sessions = self.sessions.clone_ref(py).into_bound(py);
        need!(!sessions.contains(&fp)?); // an ID seen before: fixation, a repeated login
        need!(ev.scheme.as_ref().is_none_or(|sc| *sc == Scheme::Https)); // insecure_transport
        let prev = match &ev.previous_session_id {
            Some(p) => {
                let p = p.0.as_ref();
                // The same ID kept (fixation), or one that is not a plain raw ID.
                need!(!p.is_empty() && p != sid && !p.starts_with(FP_PREFIX));
                Some(self.digest(p))
            }
            None => None,
        };
        if let Some((entropy, min_bits)) = &rules.weak {
            let Some(bits) = entropy.get().bits(sid) else {
                return Ok(HandBack); // the Python estimate decides
            };
            // weak_session_id (a NaN estimate alerts in Python: handed back too)
            need!(matches!(
                bits.partial_cmp(min_bits),
                Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
            ));
        }
        let Some(name) = ev.user.as_ref().map(|u| u.0.as_ref()) else {
            return Ok(HandBack);
        };
        if self.in_bundle {
            bundle_account(py, &mut self.accounts, self.bundle_user.as_ref(), name)?;
        }
        let user = match cached_account(py, &mut self.accounts, &self.users, name)? {
            Some(acc) => {
                need!(acc.open()); // locked_out_activity, inactive_user_activity
                Some(acc.obj.clone_ref(py).into_bound(py))
            }
            None => None,
        };
        // concurrent_sessions: the user's other live sessions (Engine._live_sessions).
        let mut live = None;
        if let Some((limit, idle_s, life_s, skew_s)) = rules.concurrency {
            let mut kept: Vec<Bound<'_, PyAny>> = Vec::new();
            if let Some(u) = &user {
                let own = fp.to_str()?;
                let listed = u.getattr(intern!(py, "sessions"))?;
                for other in listed.downcast::<PyTuple>()?.iter() {
                    let text = other.downcast::<PyString>()?.to_str()?;
                    if text == own {
                        continue;
                    }
                    // A bundle's copies may outlive its objects (dropped on expiry): there,
                    // the bundle's own dict says which sessions it still holds.
                    let copy = if self.in_bundle {
                        None
                    } else {
                        unhex(text).and_then(|k| self.shadows.get(&k))
                    };
                    let (remember_me, last, start) = match copy {
                        Some(sh) => (sh.remember_me, sh.last, sh.start),
                        None => {
                            let Some(st) = sessions.get_item(&other)? else {
                                continue;
                            };
                            if !st.getattr(intern!(py, "ended"))?.is_none() {
                                continue;
                            }
                            (
                                st.getattr(intern!(py, "remember_me"))?.extract::<bool>()?,
                                st.getattr(intern!(py, "last"))?.extract::<f64>()?,
                                st.getattr(intern!(py, "start"))?.extract::<f64>()?,
                            )
                        }
                    };
                    if !remember_me && ts - last > idle_s + skew_s {
                        continue;
                    }
                    if life_s != 0.0 && ts - start > life_s + skew_s {
                        continue;
                    }
                    kept.push(other);
                }
            }
            need!(kept.len() < limit); // alerts when live + 1 > limit
            live = Some(kept);
        }
        // behaviour_anomaly: the first request's row, scored before anything changes.
        let first = match &self.behaviour {
            None => None,
            Some(b) => {
                let Some(cp) = &b.checkpoints else {
                    return Ok(HandBack);
                };
                let network = place_key(&self.allow, here, self.prefix_v4, self.prefix_v6);
                match cp.first_request(py, b, &mut self.shapes, user.as_ref(), ev, ts, &network)? {
                    Some(first) => Some(first),
                    None => return Ok(HandBack),
                }
            }
        };
        // -- applied: the new session, the user, then the store, in the Python order ----
        let kw = PyDict::new(py);
        kw.set_item(intern!(py, "start"), ts)?;
        kw.set_item(intern!(py, "last"), ts)?;
        kw.set_item(intern!(py, "user"), name)?;
        kw.set_item(intern!(py, "remember_me"), ev.remember_me.unwrap_or(false))?;
        kw.set_item(intern!(py, "login_ip"), ip)?;
        kw.set_item(intern!(py, "last_ip"), ip)?;
        kw.set_item(
            intern!(py, "login_ua"),
            ev.user_agent.as_ref().map(|ua| ua.0.as_ref()),
        )?;
        kw.set_item(intern!(py, "login_asn"), ev.asn)?;
        if let Some(node) = &ev.node {
            kw.set_item(intern!(py, "node"), node.0.as_ref())?;
        }
        let state = rules.session_cls.bind(py).call((), Some(&kw))?;
        let u = match user {
            Some(u) => u,
            None => {
                let kw = PyDict::new(py);
                kw.set_item(intern!(py, "last"), ts)?;
                rules.user_cls.bind(py).call((), Some(&kw))?
            }
        };
        if let Some(kept) = live {
            u.setattr(intern!(py, "sessions"), PyTuple::new(py, kept)?)?;
        }
        if let (Some(first), Some(b)) = (first, &self.behaviour) {
            if let Some(cp) = &b.checkpoints {
                let profile = cp.open(py, b, &u, first, ts)?;
                state.setattr(intern!(py, "profile"), profile)?;
            }
        }
        let counting = rules.concurrency.is_some();
        let session_cls = rules.session_cls.clone_ref(py);
        let put_session = rules.put_session.clone_ref(py);
        let put_user = rules.put_user.clone_ref(py);
        if let Some(prev) = prev {
            // Engine._rotate_away(guest=True): the pre-authentication ID is over.
            self.evict(py, &prev)?;
            let prev_fp = fp_string(py, &prev);
            let old = match sessions.get_item(&prev_fp)? {
                Some(old) => old,
                None => {
                    let kw = PyDict::new(py);
                    kw.set_item(intern!(py, "start"), ts)?;
                    kw.set_item(intern!(py, "last"), ts)?;
                    kw.set_item(intern!(py, "guest"), true)?;
                    kw.set_item(intern!(py, "known"), false)?;
                    session_cls.bind(py).call((), Some(&kw))?
                }
            };
            if old.getattr(intern!(py, "ended"))?.is_none() {
                old.setattr(intern!(py, "ended"), intern!(py, "rotation"))?;
                old.setattr(intern!(py, "ended_at"), ts)?;
            }
            put_session.call1(py, (&prev_fp, &old))?;
        }
        // Engine._after_login: the list is the concurrency rule's alone.
        let listed = u
            .getattr(intern!(py, "sessions"))?
            .downcast_into::<PyTuple>()?;
        if !counting {
            if !listed.is_empty() {
                u.setattr(intern!(py, "sessions"), PyTuple::empty(py))?;
            }
        } else if !listed.contains(&fp)? {
            let mut grown: Vec<Bound<'_, PyAny>> = listed.iter().collect();
            grown.push(fp.clone().into_any());
            u.setattr(intern!(py, "sessions"), PyTuple::new(py, grown)?)?;
        }
        if ts > u.getattr(intern!(py, "last"))?.extract::<f64>()? {
            u.setattr(intern!(py, "last"), ts)?;
        }
        put_user.call1(py, (name, &u))?;
        put_session.call1(py, (&fp, &state))?;
        self.accounts.insert(
            name.to_owned(),
            Some(Account {
                key: PyString::new(py, name).unbind(),
                obj: u.unbind(),
                locked: (false, None),
                inactive: (false, None),
            }),
        );
        self.logins += 1;
        self.count(now - ts);
        Ok(Applied)
    }
}

#[pymethods]
impl FastPath {
    /// `engine` is a `detector.engine.Engine` over a `MemoryStore`, rules only; `key` is
    /// its fingerprint key (at most 64 bytes); `written` the store's record of what the
    /// Python side writes (`MemoryStore.watch`); `allow` the ladder's allow-listed
    /// ranges; `lag_bounds` the lag histogram's bounds.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        engine: PyObject,
        key: &[u8],
        sessions: Py<PyDict>,
        users: Py<PyDict>,
        filed: Py<PySet>,
        written: (Py<PySet>, Py<PySet>),
        same_place: PyObject,
        same_browser: PyObject,
        allow: Vec<(usize, u128, u128)>,
        trust_same_asn: bool,
        behaviour: Option<(Py<PySet>, PyObject, PyObject, f64, usize, i64)>,
        checkpoints: Option<CheckpointArgs>,
        login: Option<LoginArgs>,
        timeouts: (f64, f64, f64, f64, f64),
        prefixes: (u32, u32),
        lag_bounds: Vec<f64>,
    ) -> PyResult<Self> {
        if prefixes.0 > 32 || prefixes.1 > 128 {
            return Err(pyo3::exceptions::PyValueError::new_err("bad prefix length"));
        }
        if key.is_empty() || key.len() > 64 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "bad fingerprint key",
            ));
        }
        if allow.iter().any(|&(n, _, _)| n != 4 && n != 16) {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "bad allow-list range",
            ));
        }
        let mac = Params::new()
            .hash_length(16)
            .key(key)
            .personal(b"sw-session")
            .to_state();
        let checkpoints = match checkpoints {
            Some((
                forest,
                denominator,
                threshold,
                limit,
                spread,
                one_sided,
                slow,
                near,
                kernel,
                opening,
            )) => {
                if forest.get().width > ROW
                    || limit.len() != ROW
                    || spread.len() != ROW
                    || spread.contains(&0.0)
                    || one_sided.iter().any(|&i| i >= ROW)
                    || near.len() != 168
                {
                    return Err(pyo3::exceptions::PyValueError::new_err(
                        "bad checkpoint arguments",
                    ));
                }
                Some(Checkpoints {
                    forest,
                    denominator,
                    threshold,
                    limit,
                    spread,
                    one_sided,
                    slow,
                    near,
                    kernel_sum: kernel,
                    opening: Opening {
                        baseline_cls: opening.0,
                        profile_cls: opening.1,
                        classify: opening.2,
                        min_sessions: opening.3,
                        max_networks: opening.4,
                        max_browsers: opening.5,
                    },
                })
            }
            None => None,
        };
        let buckets = lag_bounds.len() + 1;
        Ok(FastPath {
            mac,
            engine,
            sessions,
            users,
            filed,
            written_sessions: written.0,
            written_users: written.1,
            shadows: DigestMap::default(),
            accounts: HashMap::new(),
            dirty: Vec::new(),
            same_place,
            same_browser,
            allow,
            trust_same_asn,
            shapes: HashMap::new(),
            behaviour: behaviour.map(|b| Upkeep {
                users_filed: b.0,
                path_shape: b.1,
                flush_hours: b.2,
                burst_gap: b.3,
                max_paths: b.4,
                thursday: b.5,
                checkpoints,
            }),
            login: login.map(
                |((session_cls, user_cls, put_session, put_user), weak, concurrency)| LoginRules {
                    session_cls,
                    user_cls,
                    put_session,
                    put_user,
                    weak,
                    concurrency,
                },
            ),
            idle_q: timeouts.0,
            guest_idle_q: timeouts.1,
            span_q: timeouts.2,
            guest_span_q: timeouts.3,
            skew: timeouts.4,
            prefix_v4: prefixes.0,
            prefix_v6: prefixes.1,
            bounds: lag_bounds,
            counts: vec![0; buckets],
            lag_sum: 0.0,
            logins: 0,
            applied: 0,
            closed: 0,
            in_bundle: false,
            bundle_user: None,
            loaded: false,
            bundle: None,
        })
    }

    /// Applies `lines[start:]` until the first line that is the Python path's; returns
    /// its index (`len(lines)` when all were applied here). `now` is the wall clock
    /// for the lag histogram. Every change is in the Python objects when it returns.
    fn run(
        &mut self,
        py: Python<'_>,
        lines: &Bound<'_, PyList>,
        start: usize,
        now: f64,
    ) -> PyResult<usize> {
        self.forget_written(py)?;
        let engine = self.engine.clone_ref(py).into_bound(py);
        let Some((before, mut next_sweep)) = event_clock(&engine)? else {
            return Ok(start);
        };
        let mut watermark = before;
        let mut i = start;
        let n = lines.len();
        let result = loop {
            if i >= n {
                break Ok(i);
            }
            let item = lines.get_item(i)?;
            let Ok(bytes) = item.downcast::<PyBytes>() else {
                break Ok(i);
            };
            match self.line(py, bytes.as_bytes(), &mut watermark, &mut next_sweep, now, None) {
                Ok(Applied) => i += 1,
                Ok(HandBack) => break Ok(i),
                Err(err) => break Err(err),
            }
        };
        // Pending changes stay in the copies: the store asks for a session's before
        // Python or a sweep reads it (`flush_session`), and for all before a census.
        let flushed = if self.dirty.len() > MAX_DIRTY {
            self.flush(py)
        } else {
            Ok(())
        };
        if watermark != before {
            engine.setattr(intern!(py, "watermark"), watermark)?;
        }
        flushed?;
        result
    }

    /// The worker's routine path: one record of `session-events`, over the bundle that
    /// `load(routing_key, ts, msg, token)` makes the store's current one (`BundleStore.load`,
    /// then None if the record was applied before; else it marks the bundle changed).
    /// Returns 2 when applied here (its changes are in the bundle's objects: the caller
    /// moves the bundle's offset past the record), 1 when
    /// handed back after the bundle was loaded (the caller goes on from the load), 0 when
    /// handed back before (the Python path does it all). Changes are written to the
    /// objects before it returns; the copies it read stay for the session's next record,
    /// used only while the bundle holds the same objects and the store has recorded no
    /// Python write of them (`BundleStore.watch`).
    fn bundle_line(
        &mut self,
        py: Python<'_>,
        line: &[u8],
        load: &Bound<'_, PyAny>,
        msg: &Bound<'_, PyAny>,
        token: &Bound<'_, PyAny>,
        now: f64,
    ) -> PyResult<u8> {
        let engine = self.engine.clone_ref(py).into_bound(py);
        let Some((before, mut next_sweep)) = event_clock(&engine)? else {
            return Ok(0);
        };
        let mut watermark = before;
        let outcome =
            self.bundle_step(py, line, (load, msg, token, None), &mut watermark, &mut next_sweep, now);
        self.bundle = None;
        if watermark != before {
            engine.setattr(intern!(py, "watermark"), watermark)?;
        }
        Ok(match outcome? {
            Applied => 2,
            HandBack => u8::from(self.loaded),
        })
    }

    /// The worker's routine path over a run of records of one partition, in offset
    /// order (Kafka client records: `value`, `offset`): `bundle_line` on each of
    /// `records[start:]` until the first that is the Python path's, one call instead of
    /// one per record. Each applied record's offset becomes its bundle's (`Bundle.offset`,
    /// which `BundleStore.applied` would set); the loader marks the bundle changed.
    /// Returns the index of the first record not applied (`len(records)` when all were)
    /// and, for it, what `bundle_line` would have returned (0 or 1; 2 at the end).
    #[pyo3(signature = (records, start, load, token, now, view=None))]
    #[allow(clippy::too_many_arguments)]
    fn bundle_run<'py>(
        &mut self,
        py: Python<'py>,
        records: &Bound<'py, PyList>,
        start: usize,
        load: &Bound<'py, PyAny>,
        token: &Bound<'py, PyAny>,
        now: f64,
        view: Option<(Bound<'py, PyAny>, (f64, f64, f64, f64))>,
    ) -> PyResult<(usize, u8)> {
        let engine = self.engine.clone_ref(py).into_bound(py);
        let Some((before, mut next_sweep)) = event_clock(&engine)? else {
            return Ok((start, 0));
        };
        let view = match view {
            Some((view, terms)) => {
                let every = engine.getattr(intern!(py, "_sweep_every_s"))?.extract()?;
                Some(StoreView::new(&view, terms, every)?)
            }
            None => None,
        };
        let sweep_before = next_sweep;
        let mut watermark = before;
        let n = records.len();
        let mut i = start;
        let result = loop {
            if i >= n {
                break Ok((i, 2));
            }
            let record = match records.get_item(i) {
                Ok(record) => record,
                Err(err) => break Err(err),
            };
            // A record the extension decoded from the fetch (kafka.rs) is read directly.
            let value = match record.downcast::<kafka::Record>() {
                Ok(fetched) => fetched.get().value(py),
                Err(_) => match record.getattr(intern!(py, "value")) {
                    Ok(value) => value.downcast_into::<PyBytes>().ok(),
                    Err(err) => break Err(err),
                },
            };
            let Some(bytes) = value else {
                break Ok((i, 0)); // no value (a tombstone): the Python path refuses it
            };
            let outcome = self.bundle_step(
                py,
                bytes.as_bytes(),
                (load, &record, token, view.as_ref()),
                &mut watermark,
                &mut next_sweep,
                now,
            );
            let bundle = self.bundle.take();
            match outcome {
                Ok(Applied) => {
                    let Some(bundle) = bundle else {
                        break Err(pyo3::exceptions::PyRuntimeError::new_err(
                            "a record applied without its bundle",
                        ));
                    };
                    let moved = offset_of(py, &record)
                        .and_then(|offset| bundle.bind(py).setattr(intern!(py, "offset"), offset));
                    if let Err(err) = moved {
                        break Err(err);
                    }
                    i += 1;
                }
                Ok(HandBack) => break Ok((i, u8::from(self.loaded))),
                Err(err) => break Err(err),
            }
        };
        if let Some(view) = &view {
            view.settle(py)?; // the engine, for a record handed back, reads it
        }
        if watermark != before {
            engine.setattr(intern!(py, "watermark"), watermark)?;
        }
        if next_sweep != sweep_before {
            engine.setattr(intern!(py, "_next_sweep"), next_sweep)?;
        }
        result
    }

    /// Writes one session's pending changes to its object (`MemoryStore.get_session`
    /// calls this first). False, doing nothing, when called back from inside `run`: none
    /// of the code `run` calls out to reads sessions (a line that makes a sweep due is
    /// handed back), so that is only a census from another thread, which then counts
    /// from objects a little behind.
    fn flush_session(slf: &Bound<'_, Self>, fp: &str) -> PyResult<bool> {
        let Ok(mut this) = slf.try_borrow_mut() else {
            return Ok(false);
        };
        if let Some(key) = unhex(fp) {
            this.flush_key(slf.py(), &key)?;
        }
        Ok(true)
    }

    /// Writes the pending changes of one bundle's sessions (`BundleStore` calls this
    /// before it encodes or shows a bundle, and before the engine reads one it loaded
    /// itself); False, doing nothing, when called back from inside `bundle_line`,
    /// whose loader reads only `last` (written at once).
    fn flush_bundle(slf: &Bound<'_, Self>, sessions: &Bound<'_, PyDict>) -> PyResult<bool> {
        let Ok(mut this) = slf.try_borrow_mut() else {
            return Ok(false);
        };
        this.flush_dict(slf.py(), sessions)?;
        Ok(true)
    }

    /// Writes every pending change (before a census, or before reading the store
    /// directly); False, doing nothing, from inside `run` (see `flush_session`).
    fn flush_all(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let Ok(mut this) = slf.try_borrow_mut() else {
            return Ok(false);
        };
        this.flush(slf.py())?;
        Ok(true)
    }

    /// The events applied here since the last call, per lag bucket, their lag sum, and
    /// how many of them were logins (the rest are transactions); resets all three (the
    /// caller adds them to its metrics).
    fn take_counts(&mut self) -> (Vec<u64>, f64, u64) {
        let counts = std::mem::replace(&mut self.counts, vec![0; self.bounds.len() + 1]);
        (
            counts,
            std::mem::take(&mut self.lag_sum),
            std::mem::take(&mut self.logins),
        )
    }

    /// Sessions whose copies are held here now (tests: the cache is bounded by the store).
    fn cached(&self) -> usize {
        self.shadows.len()
    }

    /// The session fingerprint, as `detector.fingerprint.Fingerprinter` computes it.
    fn fingerprint_of(&self, session_id: &str) -> String {
        String::from_utf8_lossy(&hex(&self.digest(session_id))).into_owned()
    }

    /// `features._path_shape` where the compiled path decides it, for tests.
    #[staticmethod]
    #[pyo3(name = "path_shape")]
    fn path_shape_py(url: &str) -> Option<String> {
        path_shape(url)
    }

    /// `IpLadder.place_key` of a canonical address (None: not one the compiled path
    /// takes), for tests.
    #[staticmethod]
    #[pyo3(name = "place_key")]
    fn place_key_py(
        ip: &str,
        allow: Vec<(usize, u128, u128)>,
        prefix_v4: u32,
        prefix_v6: u32,
    ) -> Option<Vec<u8>> {
        packed(ip).map(|addr| place_key(&allow, &addr, prefix_v4, prefix_v6))
    }

    /// `features.hour_of_week`, for tests.
    #[staticmethod]
    #[pyo3(name = "hour_of_week")]
    fn hour_of_week_py(ts: f64, thursday: i64) -> i64 {
        hour_of_week(ts, thursday)
    }

    /// A line's fields as the compiled path reads them, by its own scan (`fast`) or by
    /// `serde_json`; None when that reading refuses the line. For tests.
    #[staticmethod]
    fn read_line(text: &str, fast: bool) -> Option<String> {
        let raw = if fast { scan::raw(text) } else { serde_json::from_str::<Raw>(text).ok() };
        raw.map(|r| scan::describe(&r))
    }

    /// Epoch seconds of a plain RFC 3339 time stamp, or None for any other shape.
    #[staticmethod]
    fn parse_time(text: &str) -> Option<f64> {
        parse_rfc3339(text)
    }
}

/// `detector.indicators.weak_id.estimate_bits` for ASCII IDs shorter than the tables:
/// the same table values (handed over from Python), the same operations in the same
/// order, so the same double, bit for bit.
#[pyclass(module = "sessionwatch_native", frozen)]
struct Entropy {
    /// c * log2(c) for c < len (0 for c <= 1).
    xlog2x: Vec<f64>,
    /// log2(a) for alphabet sizes a < len.
    log2: Vec<f64>,
    predictable: f64,
}

#[pymethods]
impl Entropy {
    #[new]
    fn new(xlog2x: Vec<f64>, log2: Vec<f64>, predictable: f64) -> Self {
        Entropy {
            xlog2x,
            log2,
            predictable,
        }
    }

    /// The estimate, or None where the Python code must decide (non-ASCII, long IDs).
    fn bits(&self, sid: &str) -> Option<f64> {
        let b = sid.as_bytes();
        let n = b.len();
        if n == 0 || !sid.is_ascii() || n >= self.xlog2x.len() {
            return None;
        }
        let mut counts = [0u32; 128];
        for &c in b {
            counts[c as usize] += 1;
        }
        let has = |lo: u8, hi: u8| (lo..=hi).any(|c| counts[c as usize] > 0);
        let (digits, lower, upper) = (has(b'0', b'9'), has(b'a', b'z'), has(b'A', b'Z'));
        let hex_only = !has(b'g', b'z') && !has(b'G', b'Z') && {
            let other = (0u8..128)
                .filter(|c| !c.is_ascii_alphanumeric())
                .any(|c| counts[c as usize] > 0);
            !other
        };
        let alphabet = if hex_only && !(has(b'a', b'f') && has(b'A', b'F')) {
            16
        } else {
            let mut size = (0u8..128)
                .filter(|c| !c.is_ascii_alphanumeric() && counts[*c as usize] > 0)
                .count();
            size += if digits { 10 } else { 0 }
                + if lower { 26 } else { 0 }
                + if upper { 26 } else { 0 };
            size.max(2)
        };
        let per_char = *self.log2.get(alphabet)?;
        let near = b.windows(2).filter(|w| w[1].abs_diff(w[0]) <= 1).count();
        let bits = per_char * (n - near) as f64 + self.predictable * near as f64;
        let mut terms: Vec<f64> = counts
            .iter()
            .filter(|c| **c > 0)
            .map(|c| self.xlog2x[*c as usize])
            .collect();
        terms.sort_by(f64::total_cmp);
        let shannon_total = self.xlog2x[n] - terms.iter().fold(0.0, |acc, t| acc + t);
        Some(if shannon_total < bits {
            shannon_total
        } else {
            bits
        })
    }
}

/// The behaviour model's isolation forest (`offline.CompiledForest`): the sum of a row's
/// path lengths over all trees, added in tree order (as `numpy.cumsum` adds them on the
/// Python side), so the same double.
///
/// Nodes are 8 bytes and a node's two children sit side by side (right = left + 1), so
/// the forest (~50k nodes) fits a core's L2 cache. The walk has no branches: every tree
/// takes one step per round for `depth` rounds, a leaf stepping to itself (its split is
/// NaN, which sends every value right, and its `left` is its own place minus one), and
/// the trees' independent loads overlap.
#[pyclass(module = "sessionwatch_native", frozen)]
struct Forest {
    /// Node 0 is unused (a leaf at place p links to p - 1); the roots are 1..=trees.
    nodes: Vec<Node>,
    /// What each leaf is worth, by place (0 for inner nodes).
    values: Vec<f64>,
    trees: usize,
    /// The rounds that bring every walk to its leaf (the deepest tree's depth).
    depth: usize,
    width: usize,
}

#[derive(Clone, Copy)]
struct Node {
    /// The largest float32 not above the split's float64 threshold: a float32 feature
    /// is <= one exactly when it is <= the other, so float32 comparisons decide.
    threshold: f32,
    /// `left << 8 | feature`.
    link: u32,
}

/// The largest float32 that is not above `t`.
fn f32_floor(t: f64) -> f32 {
    let f = t as f32;
    if f64::from(f) <= t || f.is_nan() {
        return f;
    }
    // Rounding went up: one float32 step down (towards -inf).
    let bits = f.to_bits();
    if f == 0.0 {
        f32::from_bits(0x8000_0001) // below zero: the smallest negative subnormal
    } else if f > 0.0 {
        f32::from_bits(bits - 1)
    } else {
        f32::from_bits(bits + 1)
    }
}

#[pymethods]
impl Forest {
    /// A leaf is a node whose children are itself; every index must be a node.
    #[new]
    fn new(
        feature: Vec<u32>,
        threshold: Vec<f64>,
        left: Vec<u32>,
        right: Vec<u32>,
        value: Vec<f64>,
        roots: Vec<usize>,
        depth: usize,
    ) -> PyResult<Self> {
        let bad = |why: &str| Err(pyo3::exceptions::PyValueError::new_err(why.to_owned()));
        let n = feature.len();
        if threshold.len() != n
            || left.len() != n
            || right.len() != n
            || value.len() != n
            || left.iter().chain(&right).any(|&i| i as usize >= n)
            || roots.iter().any(|&i| i >= n)
        {
            return bad("inconsistent forest arrays");
        }
        if n + 1 >= 1 << 24 || feature.iter().any(|&f| f > 0xFF) {
            return bad("forest too large for the compiled walk");
        }
        let width = feature.iter().max().map_or(0, |m| *m as usize + 1);
        // Lay the nodes out again, breadth first from every root: each inner node's
        // children get two adjacent places. A node reached twice (a crafted file) or a
        // walk longer than `depth` is refused here, so every walk ends on a leaf.
        let mut place = vec![0u32; n];
        let mut order: Vec<(usize, usize)> = Vec::with_capacity(n + 1); // (old index, depth)
        order.push((usize::MAX, 0)); // place 0: unused
        let mut claim = |old: usize, d: usize, order: &mut Vec<(usize, usize)>| {
            if place[old] != 0 {
                return false;
            }
            place[old] = order.len() as u32;
            order.push((old, d));
            true
        };
        for &r in &roots {
            if !claim(r, 0, &mut order) {
                return bad("forest nodes shared between trees");
            }
        }
        let mut i = 1;
        while i < order.len() {
            let (old, d) = order[i];
            i += 1;
            let (l, r) = (left[old] as usize, right[old] as usize);
            if l == old && r == old {
                continue; // a leaf
            }
            if d >= depth || l == old || r == old {
                return bad("forest deeper than given");
            }
            if !claim(l, d + 1, &mut order) || !claim(r, d + 1, &mut order) {
                return bad("forest nodes shared between trees");
            }
        }
        let mut nodes = Vec::with_capacity(order.len());
        let mut values = Vec::with_capacity(order.len());
        nodes.push(Node {
            threshold: f32::NAN,
            link: 0,
        });
        values.push(0.0);
        for (at, &(old, _)) in order.iter().enumerate().skip(1) {
            if left[old] as usize == old {
                nodes.push(Node {
                    threshold: f32::NAN,
                    link: (at as u32 - 1) << 8,
                });
                values.push(value[old]);
            } else {
                nodes.push(Node {
                    threshold: f32_floor(threshold[old]),
                    link: place[left[old] as usize] << 8 | feature[old],
                });
                values.push(0.0);
            }
        }
        Ok(Forest {
            nodes,
            values,
            trees: roots.len(),
            depth,
            width,
        })
    }

    /// Sum over trees of the path length of ``row`` (features compared as float32).
    fn path_sum(&self, row: Vec<f64>) -> PyResult<f64> {
        self.sum(&row)
    }
}

impl Forest {
    fn sum(&self, row: &[f64]) -> PyResult<f64> {
        if row.len() < self.width {
            return Err(pyo3::exceptions::PyValueError::new_err("row too short"));
        }
        let mut x = [0f32; 256];
        for (to, v) in x.iter_mut().zip(row) {
            *to = *v as f32;
        }
        let mut at: Vec<u32> = (1..=self.trees as u32).collect();
        for _ in 0..self.depth {
            for a in at.iter_mut() {
                let node = self.nodes[*a as usize];
                // Not `<=` (NaN included) goes right, as in the numpy walk.
                #[allow(clippy::neg_cmp_op_on_partial_ord)]
                let right = !(x[(node.link & 0xFF) as usize] <= node.threshold);
                *a = (node.link >> 8) + u32::from(right);
            }
        }
        let mut total = 0.0;
        for (t, &a) in at.iter().enumerate() {
            let value = self.values[a as usize];
            total = if t == 0 { value } else { total + value };
        }
        Ok(total)
    }
}

#[pymodule]
fn sessionwatch_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Forest>()?;
    m.add_class::<FastPath>()?;
    m.add_class::<Entropy>()?;
    m.add_class::<kafka::Record>()?;
    m.add_class::<tally::Tally>()?;
    m.add_function(wrap_pyfunction!(kafka::decode_batches, m)?)?;
    m.add_function(wrap_pyfunction!(kafka::murmur2, m)?)?;
    // Bumped with any change of what the Python side may rely on: a stale build (an
    // older extension left installed) is then refused instead of misapplied.
    m.add("ABI", 19)?;
    Ok(())
}
