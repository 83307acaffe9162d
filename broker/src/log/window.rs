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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A file in memory that counts its reads.
    #[derive(Debug)]
    struct CountingFile {
        bytes: Vec<u8>,
        reads: AtomicUsize,
    }

    impl CountingFile {
        fn new(len: usize) -> CountingFile {
            CountingFile {
                bytes: (0..len).map(|i| i as u8).collect(),
                reads: AtomicUsize::new(0),
            }
        }
    }

    #[async_trait::async_trait]
    impl DiskFile for CountingFile {
        async fn append(&self, _buf: &[u8]) -> io::Result<u64> {
            unreachable!("the window only reads")
        }

        async fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let start = (pos as usize).min(self.bytes.len());
            let n = buf.len().min(self.bytes.len() - start);
            buf[..n].copy_from_slice(&self.bytes[start..start + n]);
            Ok(n)
        }

        async fn sync(&self) -> io::Result<()> {
            Ok(())
        }

        async fn truncate(&self, _len: u64) -> io::Result<()> {
            unreachable!("the window only reads")
        }

        fn len(&self) -> u64 {
            self.bytes.len() as u64
        }
    }

    #[tokio::test]
    async fn a_walk_of_headers_within_one_window_reads_the_file_once() {
        let file = CountingFile::new(3 * WINDOW);
        let mut window = Window::default();
        for pos in (100..100 + WINDOW as u64 - 61).step_by(61) {
            let bytes = window.get(&file, pos, 61).await.unwrap();
            assert_eq!(bytes, &file.bytes[pos as usize..pos as usize + 61]);
        }
        assert_eq!(file.reads.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn bytes_past_the_window_are_read_anew_from_where_they_start() {
        let file = CountingFile::new(3 * WINDOW);
        let mut window = Window::default();
        window.get(&file, 0, 61).await.unwrap();
        let pos = WINDOW as u64 - 10;
        let bytes = window.get(&file, pos, 61).await.unwrap();
        assert_eq!(bytes, &file.bytes[pos as usize..pos as usize + 61]);
        assert_eq!(file.reads.load(Ordering::Relaxed), 2);
        assert!(window.slice(pos, WINDOW).is_some());
        assert!(
            window.slice(0, 61).is_none(),
            "the old window's bytes are gone"
        );
    }

    #[tokio::test]
    async fn at_the_end_of_the_file_a_window_gives_the_short_read_read_at_gives() {
        let file = CountingFile::new(1000);
        let mut window = Window::default();
        let bytes = window.get(&file, 990, 61).await.unwrap();
        assert_eq!(bytes, &file.bytes[990..]);
        assert!(window.get(&file, 2000, 61).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_slice_is_given_only_when_the_window_holds_all_of_it() {
        let file = CountingFile::new(1000);
        let mut window = Window::default();
        window.get(&file, 100, 61).await.unwrap();
        assert_eq!(window.slice(100, 900), Some(&file.bytes[100..1000]));
        assert_eq!(window.slice(500, 10), Some(&file.bytes[500..510]));
        assert_eq!(window.slice(100, 901), None, "past the file's end");
        assert_eq!(window.slice(99, 1), None, "before the window");
    }
}
