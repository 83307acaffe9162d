//! One read of a segment's bytes that a fetch walks in memory.
//!
//! A fetch finds its first batch by walking batch headers from the sparse index entry below its
//! offset (at most about `index.interval.bytes` away). Reading each header with its own
//! `read_at` cost one disk operation per batch walked, and under the simulator's faulty disk each
//! operation is a latency draw, a timer and a task wake-up (2.4 reads per broker request in the
//! swarm scenario). The window reads the span once; the fetch's records then come from the same
//! bytes when the window holds them, as it does near the log end where consumers read.

use std::io;

use crate::disk::DiskFile;

/// Bytes read per window: the default index interval (4 KiB) with room for the batch that
/// crosses it, so one read covers a walk from an index entry.
pub const WINDOW: usize = 16 << 10;

/// The bytes of one file at `[start, start + bytes.len())`, as one read found them.
#[derive(Default)]
pub struct Window {
    start: u64,
    bytes: Vec<u8>,
}

impl Window {
    /// The `len` bytes at `pos` (fewer at the end of the file, as `read_at` gives), reading a
    /// new window at `pos` when this one does not hold them.
    pub async fn get(&mut self, file: &dyn DiskFile, pos: u64, len: usize) -> io::Result<&[u8]> {
        if !self.holds(pos, len) {
            self.bytes = file.read_vec_at(pos, WINDOW.max(len)).await?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        let to = (from + len).min(self.bytes.len());
        Ok(&self.bytes[from..to])
    }

    /// The `len` bytes at `pos` if this window holds all of them.
    pub fn slice(&self, pos: u64, len: usize) -> Option<&[u8]> {
        self.holds(pos, len).then(|| {
            let from = (pos - self.start) as usize;
            &self.bytes[from..from + len]
        })
    }

    fn holds(&self, pos: u64, len: usize) -> bool {
        pos >= self.start && pos + len as u64 <= self.start + self.bytes.len() as u64
    }
}
