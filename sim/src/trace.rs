//! The event trace of a run: every notable event (node boot, kill, restart, fault applied or
//! healed, operation invoked or completed, phase change) with its simulated time and node.
//!
//! The trace is what `cargo sim replay --trace` prints and what the trace hash covers, so it
//! holds only values the seed determines: simulated time (never the wall clock), and text built
//! from ordered data (no `HashMap` iteration). The hash is our own function over the printed
//! lines ([`LineHash`]), so it does not change with the Rust version the way `DefaultHasher`
//! may.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Simulated time since the run started.
pub fn now_us() -> u64 {
    madsim::time::TimeHandle::current().elapsed().as_micros() as u64
}

/// Simulated milliseconds since the run started (what the history records).
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// `SIM_TRACE_LIVE=1` echoes every trace event to stderr as it happens: a run that hangs shows
/// where it is before the time limit ends it.
fn live_echo() -> bool {
    static LIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LIVE.get_or_init(|| std::env::var_os("SIM_TRACE_LIVE").is_some_and(|v| v == "1"))
}

/// One line of the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    pub at_us: u64,
    /// Shared by every event of the node: a run has tens of thousands of events and a few
    /// dozen node names.
    pub node: Arc<str>,
    pub event: String,
}

impl std::fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>6}.{:06}s {:<12} {}",
            self.at_us / 1_000_000,
            self.at_us % 1_000_000,
            self.node,
            self.event
        )
    }
}

/// The shared, append-only trace; cheap to clone into every node and task.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    events: Arc<Mutex<Events>>,
}

#[derive(Debug, Default)]
struct Events {
    list: Vec<TraceEvent>,
    /// Every node name seen, each stored once.
    nodes: BTreeSet<Arc<str>>,
}

impl Trace {
    pub fn new() -> Trace {
        Trace::default()
    }

    /// Appends an event at the current simulated time.
    pub fn event(&self, node: impl AsRef<str>, event: impl Into<String>) {
        let (node, event) = (node.as_ref(), event.into());
        let at_us = now_us();
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let node = match events.nodes.get(node) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared: Arc<str> = Arc::from(node);
                events.nodes.insert(Arc::clone(&shared));
                shared
            }
        };
        let event = TraceEvent { at_us, node, event };
        if live_echo() {
            eprintln!("{event}");
        }
        events.list.push(event);
    }

    /// Makes room for `events` more events (a hint: the list grows past it if need be).
    pub fn reserve(&self, events: usize) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list
            .reserve(events);
    }

    pub fn len(&self) -> usize {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn snapshot(&self) -> Vec<TraceEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list
            .clone()
    }

    /// Moves the events out, leaving the trace empty: the end of a run, where a copy of every
    /// event would only be thrown away.
    pub fn take(&self) -> Vec<TraceEvent> {
        std::mem::take(&mut self.events.lock().unwrap_or_else(|e| e.into_inner()).list)
    }

    /// [`LineHash`] over every line as printed, each followed by a newline. The lines are
    /// printed by hand into a buffer (the same bytes `to_string` would give) that is hashed a
    /// few KiB at a time: the hash folds eight bytes per step, a line's pieces fed one by one
    /// mostly went byte by byte.
    pub fn hash(&self) -> u64 {
        const CHUNK: usize = 8 << 10;
        let mut hash = LineHash::default();
        let mut buffer = Vec::with_capacity(CHUNK + 256);
        for event in self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list
            .iter()
        {
            event.print_line(&mut buffer);
            if buffer.len() >= CHUNK {
                hash.write(&buffer);
                buffer.clear();
            }
        }
        hash.write(&buffer);
        hash.finish()
    }
}

impl TraceEvent {
    /// Appends the line as `Display` prints it, and a newline, to `out`: the same bytes,
    /// written without the formatter's padding machinery (a run hashes tens of thousands of
    /// lines).
    fn print_line(&self, out: &mut Vec<u8>) {
        let (secs, micros) = (self.at_us / 1_000_000, self.at_us % 1_000_000);
        // `{:>6}`: right-aligned in six columns, wider when it needs to be.
        let mut digits = [0u8; 20];
        let secs = decimal(secs, &mut digits);
        for _ in secs.len()..6 {
            out.push(b' ');
        }
        out.extend_from_slice(secs);
        out.push(b'.');
        // `{:06}`: below a million, so always exactly six digits.
        let mut six = [b'0'; 6];
        let mut rest = micros;
        for slot in six.iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out.extend_from_slice(&six);
        out.extend_from_slice(b"s ");
        // `{:<12}`: padded to twelve characters (chars, not bytes, as `fmt` counts them).
        out.extend_from_slice(self.node.as_bytes());
        for _ in self.node.chars().count()..12 {
            out.push(b' ');
        }
        out.push(b' ');
        out.extend_from_slice(self.event.as_bytes());
        out.push(b'\n');
    }
}

/// Appends `n` in decimal, the text `{n}` formats, without the formatter's machinery: the
/// workload writes a few trace lines per operation by hand ([`Line`]).
#[inline]
pub(crate) fn push_u64(line: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    line.push_str(std::str::from_utf8(decimal(n, &mut digits)).expect("ASCII digits"));
}

/// Appends `n` in decimal, the text `{n}` formats (a minus sign when negative).
#[inline]
pub(crate) fn push_i64(line: &mut String, n: i64) {
    if n < 0 {
        line.push('-');
    }
    push_u64(line, n.unsigned_abs());
}

/// `n.to_string()`, with an exact capacity and without the formatter.
pub(crate) fn decimal_text(n: u64) -> String {
    let mut digits = [0u8; 20];
    String::from(std::str::from_utf8(decimal(n, &mut digits)).expect("ASCII digits"))
}

/// A trace line written piece by piece: `format!` costs several times as much for the lines
/// written per operation (tens of thousands a run). Each use is tested against the `format!`
/// text it replaces, since the trace hash covers the bytes.
pub(crate) struct Line(String);

impl Line {
    /// An empty line with room for `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> Line {
        Line(String::with_capacity(capacity))
    }

    #[inline]
    pub(crate) fn str(mut self, text: &str) -> Line {
        self.0.push_str(text);
        self
    }

    /// `{n}` of an unsigned integer.
    #[inline]
    pub(crate) fn u64(mut self, n: u64) -> Line {
        push_u64(&mut self.0, n);
        self
    }

    /// `{n}` of a signed integer.
    #[inline]
    pub(crate) fn i64(mut self, n: i64) -> Line {
        push_i64(&mut self.0, n);
        self
    }

    /// `{n:?}` of an optional unsigned integer: `None` or `Some(n)`.
    pub(crate) fn option_u64(self, n: Option<u64>) -> Line {
        match n {
            None => self.str("None"),
            Some(n) => self.str("Some(").u64(n).str(")"),
        }
    }

    pub(crate) fn done(self) -> String {
        self.0
    }
}

/// "00" to "99": the digits of every number below 100, two at a time.
const PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// `n` in decimal, written into the end of `buf`; returns the digits. Two digits per division,
/// as the standard library's `Display` does.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        buf[at] = b'0' + n as u8;
    }
    &buf[at..]
}

/// A 64-bit hash of a byte stream, eight bytes per multiply: each little-endian word is folded
/// into the state with a 64x64->128-bit multiply whose halves are xored (as wyhash mixes), and
/// the length closes it. The same bytes give the same hash however they are split into writes.
/// It replaced FNV-1a, whose one multiply per byte made hashing a run's trace 1.7 % of a swarm
/// run.
#[derive(Default)]
pub(crate) struct LineHash {
    state: u64,
    /// Bytes not yet folded in, the first in the lowest byte.
    pending: u64,
    /// How many bytes `pending` holds (0..8).
    filled: u32,
    len: u64,
}

const SEED: u64 = 0xa076_1d64_78bd_642f;
const MULTIPLIER: u64 = 0xe703_7ed1_a0b4_28db;

fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

impl LineHash {
    fn mix(&mut self, word: u64) {
        self.state = fold(self.state ^ word ^ SEED, MULTIPLIER);
    }

    pub(crate) fn write(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        while self.filled != 0 && !bytes.is_empty() {
            self.pending |= u64::from(bytes[0]) << (8 * self.filled);
            self.filled = (self.filled + 1) % 8;
            bytes = &bytes[1..];
            if self.filled == 0 {
                let word = std::mem::take(&mut self.pending);
                self.mix(word);
            }
        }
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.mix(u64::from_le_bytes(word.try_into().expect("eight bytes")));
        }
        for &b in words.remainder() {
            self.pending |= u64::from(b) << (8 * self.filled);
            self.filled += 1;
        }
    }

    pub(crate) fn finish(mut self) -> u64 {
        if self.filled != 0 {
            let word = std::mem::take(&mut self.pending);
            self.mix(word);
        }
        fold(self.state ^ self.len, MULTIPLIER ^ SEED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_one_node_share_its_name_and_keep_their_order() {
        let runtime = madsim::runtime::Runtime::with_seed_and_config(1, madsim::Config::default());
        let events = runtime.block_on(async {
            let trace = Trace::new();
            trace.event("p1", "first");
            trace.event(String::from("runner"), "second");
            // As the workload calls it: its process's name, borrowed.
            let who = String::from("p1");
            trace.event(&who, String::from("third"));
            (trace.take(), who)
        });
        let (events, who) = events;
        assert_eq!(who, "p1");
        let shown: Vec<(&str, &str)> = events.iter().map(|e| (&*e.node, &*e.event)).collect();
        assert_eq!(
            shown,
            [("p1", "first"), ("runner", "second"), ("p1", "third")]
        );
        assert!(
            Arc::ptr_eq(&events[0].node, &events[2].node),
            "one name per node"
        );
    }

    /// The hash depends on the bytes only, not on how they are split into writes (a line is
    /// fed in pieces), and every byte and the length count.
    #[test]
    fn the_line_hash_sees_bytes_not_writes() {
        let text: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        let whole = {
            let mut h = LineHash::default();
            h.write(&text);
            h.finish()
        };
        for split in [1, 3, 7, 8, 9, 64, 199] {
            let mut h = LineHash::default();
            for piece in text.chunks(split) {
                h.write(piece);
            }
            assert_eq!(h.finish(), whole, "pieces of {split}");
        }
        let mut changed = text.clone();
        changed[150] ^= 1;
        let mut h = LineHash::default();
        h.write(&changed);
        assert_ne!(h.finish(), whole);
        let mut h = LineHash::default();
        h.write(&text[..199]);
        assert_ne!(h.finish(), whole);
        let (mut a, mut b) = (LineHash::default(), LineHash::default());
        a.write(b"ab");
        b.write(b"ab\0");
        assert_ne!(a.finish(), b.finish(), "a trailing zero byte counts");
    }

    /// The hand-written pieces of a line are the text `format!` gives, at the awkward values.
    #[test]
    fn a_hand_written_line_is_the_formatted_text() {
        let powers = (0..20).flat_map(|p| {
            let power = 10u64.pow(p);
            [
                power - 1,
                power,
                power + 1,
                power.saturating_mul(5).saturating_add(7),
            ]
        });
        let every_small = 0..1_000;
        let awkward = [12_345, u64::from(u32::MAX), u64::MAX - 1, u64::MAX];
        for n in every_small.chain(powers).chain(awkward) {
            assert_eq!(decimal_text(n), n.to_string());
            assert_eq!(decimal_text(n).capacity(), n.to_string().len());
            assert_eq!(Line::with_capacity(0).u64(n).done(), format!("{n}"));
            assert_eq!(
                Line::with_capacity(0).option_u64(Some(n)).done(),
                format!("{:?}", Some(n))
            );
        }
        assert_eq!(
            Line::with_capacity(0).option_u64(None).done(),
            format!("{:?}", None::<u64>)
        );
        for n in [
            0,
            1,
            -1,
            10,
            -10,
            999,
            -1000,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ] {
            assert_eq!(Line::with_capacity(0).i64(n).done(), format!("{n}"));
        }
        assert_eq!(
            Line::with_capacity(1)
                .str("a")
                .u64(7)
                .str("-")
                .i64(-3)
                .done(),
            "a7--3"
        );
    }

    /// A trace's hash is the hash of its printed text, however many chunks the lines fill.
    #[test]
    fn a_traces_hash_is_the_hash_of_its_printed_text() {
        let runtime = madsim::runtime::Runtime::with_seed_and_config(1, madsim::Config::default());
        runtime.block_on(async {
            let trace = Trace::new();
            for n in [0, 1, 2, 100, 3_000] {
                while trace.len() < n {
                    let i = trace.len();
                    let node = ["p1", "broker-12", "nœud-é", "a-very-long-node-name"][i % 4];
                    trace.event(node, "x".repeat(i % 97));
                    madsim::time::sleep(std::time::Duration::from_micros(i as u64 * 7_919)).await;
                }
                let printed: String = trace.snapshot().iter().map(|e| format!("{e}\n")).collect();
                let mut expected = LineHash::default();
                expected.write(printed.as_bytes());
                assert_eq!(trace.hash(), expected.finish(), "{n} lines");
            }
        });
    }

    /// The hash covers the lines exactly as `replay --trace` prints them: the fast path must
    /// feed the same bytes as formatting each line with `Display` would.
    #[test]
    fn a_hashed_line_is_the_printed_line() {
        let times = [
            0,
            7,
            999_999,
            1_000_000,
            12_345_678,
            999_999_999_999,
            u64::MAX,
        ];
        let nodes = [
            "",
            "p1",
            "broker-1",
            "twelve-chars",
            "longer-than-twelve",
            "nœud-é",
        ];
        for &at_us in &times {
            for node in nodes {
                let event = TraceEvent {
                    at_us,
                    node: node.into(),
                    event: "invoke #3 send t-0 value=4 key=None".to_string(),
                };
                let mut fast = Vec::new();
                event.print_line(&mut fast);
                assert_eq!(fast, format!("{event}\n").as_bytes(), "{event}");
            }
        }
    }
}
