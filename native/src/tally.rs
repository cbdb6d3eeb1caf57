//! The worker's census tally (`detector.stream.bundle.Tally`), compiled.
//!
//! A state write updates the census of live sessions: each of the entry's sessions that
//! is live when written is counted until its `Engine.active_until` passes. In Python
//! that bookkeeping took 4-5 µs a write (a short function, a call back into the engine
//! per session), a tenth of the worker's per-record step at its checkpoints. Here it
//! reads the same attributes and reckons the same sums in the same order, so the counts
//! are the Python tally's exactly (a property test compares the two).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

/// A live session's place in the heap: popped once event time passes `until`.
struct Due {
    until: f64,
    generation: u64,
    key: Box<[u8]>,
    guest: bool,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        self.until
            .total_cmp(&other.until)
            .then(self.generation.cmp(&other.generation))
    }
}

/// What one entry adds: its write's number, its sessions, whether it holds a user, and
/// its sessions live when written, as (live until, guest).
struct Counted {
    generation: u64,
    sessions: i64,
    user: bool,
    live: Vec<(f64, bool)>,
}

/// `Engine.active_until`'s policy terms: a Remember-me session's keep
/// (`max(state_retention_s, remember_me_retention_s)`), the idle timeouts of users and
/// guests, the clock skew and the life spans of users and guests (0: none).
#[derive(Clone, Copy)]
struct Terms {
    keep: f64,
    idle: f64,
    guest_idle: f64,
    skew: f64,
    span: f64,
    guest_span: f64,
}

/// The census of a table, kept as entries are written and deleted (see the module).
#[pyclass(module = "sessionwatch_native", subclass)]
pub struct Tally {
    terms: Terms,
    of: HashMap<Box<[u8]>, Counted>,
    heap: BinaryHeap<Reverse<Due>>,
    generation: u64,
    now: f64,
    /// Live user sessions and guest sessions at `now`.
    live: [i64; 2],
    /// Sessions and users held by the entries counted.
    sessions: i64,
    users: i64,
}

impl Tally {
    /// `Engine.active_until(s)`, the same sums in the same order, or None once ended.
    fn active_until(&self, py: Python<'_>, s: &Bound<'_, PyAny>) -> PyResult<Option<(f64, bool)>> {
        if !s.getattr(intern!(py, "ended"))?.is_none() {
            return Ok(None);
        }
        let t = &self.terms;
        let guest = s.getattr(intern!(py, "guest"))?.is_truthy()?;
        let idle = if s.getattr(intern!(py, "remember_me"))?.is_truthy()? {
            t.keep
        } else if guest {
            t.guest_idle
        } else {
            t.idle
        };
        let last: f64 = s.getattr(intern!(py, "last"))?.extract()?;
        let mut until = last + idle + t.skew;
        let span = if guest { t.guest_span } else { t.span };
        if span != 0.0 {
            let start: f64 = s.getattr(intern!(py, "start"))?.extract()?;
            let end = start + span + t.skew;
            if end < until {
                until = end; // Python's min(until, end)
            }
        }
        Ok(Some((until, guest)))
    }

    /// Drops the heap's leftovers: times of rewritten or deleted entries, and past ones.
    fn compact(&mut self) {
        let (of, now) = (&self.of, self.now);
        let items = std::mem::take(&mut self.heap).into_vec();
        self.heap = items
            .into_iter()
            .filter(|Reverse(d)| {
                d.until >= now && of.get(&d.key).is_some_and(|c| c.generation == d.generation)
            })
            .collect();
    }
}

#[pymethods]
impl Tally {
    #[new]
    fn new(terms: (f64, f64, f64, f64, f64, f64)) -> Self {
        let (keep, idle, guest_idle, skew, span, guest_span) = terms;
        Self {
            terms: Terms { keep, idle, guest_idle, skew, span, guest_span },
            of: HashMap::new(),
            heap: BinaryHeap::new(),
            generation: 0,
            now: f64::NEG_INFINITY,
            live: [0, 0],
            sessions: 0,
            users: 0,
        }
    }

    /// Forgets every entry (partitions changed hands: they are counted again).
    fn clear(&mut self) {
        self.of.clear();
        self.heap.clear();
        self.generation = 0;
        self.now = f64::NEG_INFINITY;
        self.live = [0, 0];
        self.sessions = 0;
        self.users = 0;
    }

    /// `key` now holds `bundle` (None: deleted).
    fn set(&mut self, py: Python<'_>, key: &Bound<'_, PyBytes>, bundle: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let key = key.as_bytes();
        if let Some(old) = self.of.remove(key) {
            self.sessions -= old.sessions;
            self.users -= i64::from(old.user);
            for (until, guest) in old.live {
                if until >= self.now {
                    self.live[usize::from(guest)] -= 1; // not popped yet: still counted
                }
            }
        }
        let Some(bundle) = bundle else {
            return Ok(());
        };
        let sessions = bundle.getattr(intern!(py, "sessions"))?;
        let sessions = sessions.downcast::<PyDict>()?;
        let user = !bundle.getattr(intern!(py, "user"))?.is_none();
        // Attributes first, so that an error leaves the tally as it was without the entry.
        let mut live = Vec::new();
        for (_, s) in sessions.iter() {
            if let Some((until, guest)) = self.active_until(py, &s)? {
                if until >= self.now && until != f64::NEG_INFINITY {
                    live.push((until, guest));
                }
            }
        }
        self.generation += 1;
        let generation = self.generation;
        let boxed: Box<[u8]> = key.into();
        for &(until, guest) in &live {
            self.live[usize::from(guest)] += 1;
            self.heap.push(Reverse(Due { until, generation, key: boxed.clone(), guest }));
        }
        let count = sessions.len() as i64;
        self.of.insert(boxed, Counted { generation, sessions: count, user, live });
        self.sessions += count;
        self.users += i64::from(user);
        if self.heap.len() as i64 > 2 * (self.live[0] + self.live[1]) + 1024 {
            // Mostly rewritten entries' leftovers. Here, not at the census: a worker
            // nobody scrapes would otherwise grow the heap by every write.
            self.compact();
        }
        Ok(())
    }

    /// Live user and guest sessions at `now` (or the latest `now` seen), and the
    /// entries, sessions and users counted: `(users', guests', entries, sessions, users)`.
    fn counts(&mut self, now: f64) -> (i64, i64, usize, i64, i64) {
        if now > self.now {
            self.now = now;
        }
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.until >= self.now {
                break;
            }
            let Reverse(d) = self.heap.pop().expect("peeked");
            if self.of.get(&d.key).is_some_and(|c| c.generation == d.generation) {
                self.live[usize::from(d.guest)] -= 1;
            }
        }
        (self.live[0], self.live[1], self.of.len(), self.sessions, self.users)
    }

    /// Items in the heap (leftovers included), for tests of its bound.
    fn heap_len(&self) -> usize {
        self.heap.len()
    }
}
