//! A cheaper reading of the common record line than `serde_json` into `Raw`.
//!
//! `serde_json` spent about 5,200 instructions on a line of ~370 bytes (a quarter of the
//! compiled path's step): a visitor call per token, every key matched by string
//! comparisons in turn. The lines producers write are flat objects of plain strings,
//! a few integers and booleans, so this reads exactly those in one pass, and says
//! "not sure" (None) for anything else: escapes, nested values, exponents, a fraction
//! where an integer goes, a repeated key, a null where the field needs a value. `line` then asks `serde_json`,
//! so for every line this accepts the result must be what `serde_json` gives, and every
//! other line is decided as before (`tests/unit/test_fastpath.py` compares the two on
//! the simulated day and on mutations of it).

use std::borrow::Cow;

use crate::{Raw, Scheme, Str, Ts};

/// The index of the first byte from `j` on that ends a plain string's run (a quote, a
/// backslash or a control character), or `b.len()`: sixteen bytes a step (SSE2, which
/// every x86-64 has), then a byte at a time.
#[inline]
fn run_end(b: &[u8], mut j: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8,
        };
        // SAFETY: SSE2 is part of x86-64; each load reads 16 bytes inside `b`.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let control = _mm_set1_epi8(0x1f);
            while j + 16 <= b.len() {
                let x = _mm_loadu_si128(b.as_ptr().add(j).cast::<__m128i>());
                let stop = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)),
                    _mm_cmpeq_epi8(_mm_min_epu8(x, control), x), // x <= 0x1f
                );
                let mask = _mm_movemask_epi8(stop) as u32;
                if mask != 0 {
                    return j + mask.trailing_zeros() as usize;
                }
                j += 16;
            }
        }
    }
    while j < b.len() && !matches!(b[j], b'"' | b'\\' | 0..=0x1f) {
        j += 1;
    }
    j
}

struct Scan<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// A string without escapes or control characters, at its opening quote.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let start = self.i + 1;
        let j = run_end(self.b, start);
        if self.b.get(j) != Some(&b'"') {
            return None; // an escape, a control character or the end: not sure
        }
        self.i = j + 1;
        // Both ends are at ASCII bytes of valid UTF-8.
        self.text.get(start..j)
    }

    /// A JSON number's text: `-?(0|[1-9][0-9]*)(.[0-9]+)?`, exponents not taken.
    fn number(&mut self) -> Option<(&'a str, bool)> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut whole = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            let at = self.i;
            self.digits();
            if self.i == at {
                return None;
            }
            whole = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            return None;
        }
        Some((self.text.get(start..self.i)?, whole))
    }

    #[inline]
    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn word(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? != word {
            return None;
        }
        self.i += word.len();
        Some(())
    }

    /// `null` (None) or a plain string: an `Option<Str>` field.
    fn opt_str(&mut self) -> Option<Option<Str<'a>>> {
        if self.peek() == Some(b'n') {
            self.word(b"null")?;
            return Some(None);
        }
        Some(Some(Str(Cow::Borrowed(self.string()?))))
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.word(b"true").map(|()| true),
            b'f' => self.word(b"false").map(|()| false),
            _ => None,
        }
    }

    /// A whole number of at most 18 digits (so it fits i64 and u64): as `serde_json`
    /// reads an integer.
    fn integer(&mut self) -> Option<i64> {
        let (text, whole) = self.number()?;
        let digits = text.strip_prefix('-').unwrap_or(text);
        if !whole || digits.len() > 18 || text == "-0" {
            return None;
        }
        text.parse().ok()
    }

    /// `null` or a whole number.
    fn opt_integer(&mut self) -> Option<Option<i64>> {
        if self.peek() == Some(b'n') {
            self.word(b"null")?;
            return Some(None);
        }
        Some(Some(self.integer()?))
    }

    /// A value of a key `Raw` does not know: skipped when it is a plain string, number,
    /// boolean or null.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'n' => self.word(b"null"),
            b't' | b'f' => self.boolean().map(|_| ()),
            _ => self.number().map(|_| ()),
        }
    }
}

/// `Raw` of a flat object of plain values, as `serde_json::from_str` would read it;
/// None when the line is anything else (which `serde_json` then decides).
pub(crate) fn raw(text: &str) -> Option<Raw<'_>> {
    let mut s = Scan { text, b: text.as_bytes(), i: 0 };
    let mut event_id = None;
    let mut ts = None;
    let mut kind = None;
    let mut r = Raw {
        event_id: Str(Cow::Borrowed("")),
        ts: Ts::Num(0.0),
        kind: Str(Cow::Borrowed("")),
        session_id: None,
        user: None,
        ip: None,
        user_agent: None,
        scheme: None,
        url: None,
        node: None,
        guest: None,
        remember_me: None,
        previous_session_id: None,
        new_session_id: None,
        actor: None,
        geo_lat: None,
        geo_lon: None,
        asn: None,
        response_bytes: None,
        own_epoch: None,
    };
    let mut seen: u32 = 0;
    s.ws();
    if s.peek() != Some(b'{') {
        return None;
    }
    s.i += 1;
    s.ws();
    loop {
        let key = s.string()?;
        s.ws();
        if s.peek() != Some(b':') {
            return None;
        }
        s.i += 1;
        s.ws();
        let bit = match key {
            "event_id" => {
                event_id = Some(s.string()?);
                1
            }
            "ts" => {
                ts = Some(if s.peek() == Some(b'"') {
                    Ts::Text(Cow::Borrowed(s.string()?))
                } else {
                    // Non-negative seconds: a whole number as serde_json hands it over
                    // (u64, then f64), a fraction correctly rounded (as serde_json's
                    // float_roundtrip and Rust's own parse both round). Anything else,
                    // exponents and negatives included, is not sure.
                    let (number, whole) = s.number()?;
                    if number.starts_with('-') || (whole && number.len() > 18) {
                        return None;
                    }
                    Ts::Num(if whole {
                        number.parse::<u64>().ok()? as f64
                    } else {
                        number.parse::<f64>().ok()?
                    })
                });
                1 << 1
            }
            "type" => {
                kind = Some(s.string()?);
                1 << 2
            }
            "session_id" => {
                r.session_id = s.opt_str()?;
                1 << 3
            }
            "user" => {
                r.user = s.opt_str()?;
                1 << 4
            }
            "ip" => {
                r.ip = s.opt_str()?;
                1 << 5
            }
            "user_agent" => {
                r.user_agent = s.opt_str()?;
                1 << 6
            }
            "scheme" => {
                r.scheme = Some(match s.string()? {
                    "https" => Scheme::Https,
                    "http" => Scheme::Http,
                    _ => return None,
                });
                1 << 7
            }
            "url" => {
                r.url = s.opt_str()?;
                1 << 8
            }
            "node" => {
                r.node = s.opt_str()?;
                1 << 9
            }
            "guest" => {
                r.guest = Some(s.boolean()?);
                1 << 10
            }
            "remember_me" => {
                r.remember_me = Some(s.boolean()?);
                1 << 11
            }
            "previous_session_id" => {
                r.previous_session_id = s.opt_str()?;
                1 << 12
            }
            "new_session_id" => {
                r.new_session_id = s.opt_str()?;
                1 << 13
            }
            "actor" => {
                r.actor = s.opt_str()?;
                1 << 14
            }
            "geo_lat" | "geo_lon" | "~sessionwatch.epoch" => return None,
            "asn" => {
                r.asn = s.opt_integer()?;
                1 << 15
            }
            "response_bytes" => {
                r.response_bytes = match s.opt_integer()? {
                    Some(n) if n < 0 => return None,
                    other => other.map(|n| n as u64),
                };
                1 << 16
            }
            _ => {
                s.skip()?;
                0
            }
        };
        if seen & bit != 0 {
            return None; // a repeated key: serde_json's error
        }
        seen |= bit;
        s.ws();
        match s.peek()? {
            b',' => {
                s.i += 1;
                s.ws();
            }
            b'}' => {
                s.i += 1;
                break;
            }
            _ => return None,
        }
    }
    s.ws();
    if s.i != s.b.len() {
        return None;
    }
    r.event_id = Str(Cow::Borrowed(event_id?));
    r.ts = ts?;
    r.kind = Str(Cow::Borrowed(kind?));
    Some(r)
}

/// Every field of `r`, for the tests that compare this reading with `serde_json`'s.
pub(crate) fn describe(r: &Raw<'_>) -> String {
    let text = |s: &Option<Str<'_>>| s.as_ref().map(|s| s.0.to_string());
    let ts = match &r.ts {
        Ts::Num(x) => format!("num {x:?}"),
        Ts::Text(t) => format!("text {t:?}"),
    };
    let scheme = r.scheme.as_ref().map(|s| match s {
        Scheme::Https => "https",
        Scheme::Http => "http",
    });
    format!(
        "{:?}",
        (
            (r.event_id.0.as_ref(), ts, r.kind.0.as_ref()),
            (text(&r.session_id), text(&r.user), text(&r.ip), text(&r.user_agent)),
            (scheme, text(&r.url), text(&r.node), r.guest, r.remember_me),
            (text(&r.previous_session_id), text(&r.new_session_id), text(&r.actor)),
            (r.geo_lat, r.geo_lon, r.asn, r.response_bytes, r.own_epoch.is_some()),
        )
    )
}
