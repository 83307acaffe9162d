//! [`FileDisk`]: the real [`Disk`], on the operating system's files.
//!
//! This is the one place in broker code allowed to touch `std::fs` and to hand work to OS
//! threads (see `clippy.toml`).
//!
//! # The runtime's workers never wait for the device
//! While a worker thread waits in a system call, every connection and partition it serves
//! waits with it. So:
//! - `sync` (`fdatasync`, milliseconds) and `sync_dir` always run on tokio's blocking pool;
//!   the runtime keeps taking appends meanwhile, which is what lets many appends share one sync
//!   (group commit).
//! - Reads and appends first go to the page cache inline with `RWF_NOWAIT` (`preadv2`,
//!   `pwritev2`), which fails with `EAGAIN` instead of waiting for the device. Only what would
//!   wait (a cold read, an append throttled by dirty-page writeback) moves to the blocking
//!   pool. A page-cache hit pays no hand-off: handing a 1 MiB read to another thread costs
//!   more than the read itself here (`cargo run --release -p broker --example fetch_at_roll`
//!   measures both; see README).
//! - An append is written in calls of at most [`WRITE_PIECE`] bytes: one call for a whole
//!   10 MiB fetch answer made the kernel copy into large page-cache folios, ten times slower
//!   here (see the constant).
//! - A file system without `RWF_NOWAIT` gets plain inline `pread`/`pwrite`, as before. That
//!   is what appends get on ext4 today (it refuses the flag for buffered writes): an append
//!   of a batch to the page cache takes microseconds, and an unconditional hand-off would cost
//!   more than that plus a copy of the batch (the same example, 4 KiB).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{DirLock, Disk, DiskFile, LockDirError, OpenMode, LOCK_FILE};

/// The real disk: files under the paths it is given.
#[derive(Debug, Default, Clone)]
pub struct FileDisk;

impl FileDisk {
    pub fn new() -> FileDisk {
        FileDisk
    }
}

#[derive(Debug)]
struct RealFile {
    file: Arc<fs::File>,
    /// The logical length: bytes of completed appends. Readers may rely on everything below it.
    len: AtomicU64,
    /// Where the next append goes; ahead of `len` only while an append is being written.
    append_end: Mutex<u64>,
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Set once a file system refuses `RWF_NOWAIT` for reads, or for writes: from then on those
/// are plain inline calls (what they were before the flag existed). ext4 on Linux 6.18 takes
/// it for buffered reads and refuses it for buffered writes (`EOPNOTSUPP`, checked here).
static NOWAIT_READS_UNSUPPORTED: AtomicBool = AtomicBool::new(false);
static NOWAIT_WRITES_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Runs blocking file work on tokio's blocking pool (inline in the simulation build, which has
/// no OS threads and never runs `FileDisk`, but must compile it).
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| io::Error::other(format!("file I/O task failed: {e}")))?
    }
    #[cfg(madsim)]
    {
        work()
    }
}

/// How a span of I/O ended.
enum Span {
    /// All of it, or (reads) up to the end of the file.
    Done(usize),
    /// This many bytes, then the page cache could not take or give more without the device.
    WouldBlock(usize),
}

fn nowait_flags(nowait: bool, unsupported: &AtomicBool) -> libc::c_int {
    if nowait && !unsupported.load(Ordering::Relaxed) {
        libc::RWF_NOWAIT
    } else {
        0
    }
}

/// Reads into `[ptr, ptr + len)` from `pos` until it is full or the file ends; with `nowait`,
/// stops at the first byte that is not in the page cache.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes (they may be uninitialised).
unsafe fn read_span(
    fd: RawFd,
    ptr: *mut u8,
    len: usize,
    pos: u64,
    nowait: bool,
) -> io::Result<Span> {
    let mut done = 0;
    while done < len {
        let iov = libc::iovec {
            iov_base: ptr.add(done).cast(),
            iov_len: len - done,
        };
        let flags = nowait_flags(nowait, &NOWAIT_READS_UNSUPPORTED);
        let n = libc::preadv2(fd, &iov, 1, (pos + done as u64) as libc::off_t, flags);
        if n > 0 {
            done += n as usize;
            continue;
        }
        if n == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) if flags != 0 => return Ok(Span::WouldBlock(done)),
            Some(libc::EOPNOTSUPP) if flags != 0 => {
                NOWAIT_READS_UNSUPPORTED.store(true, Ordering::Relaxed)
            }
            _ => return Err(e),
        }
    }
    Ok(Span::Done(done))
}

/// The most one `pwritev2` call writes: a longer append is written in pieces of this size.
///
/// The kernel sizes the page-cache folios of a buffered write by the call's length, up to
/// 2 MiB. Large folios made the copy itself slow on this VM (likely: they are carved from the
/// large free blocks the guest reports to the host, virtio-balloon free page reporting, which
/// the host must fault in again as the copy touches them). A follower appending a 10 MiB fetch
/// answer in one call copied at ~200 MB/s, 2.2-2.4 CPU-seconds per GB, 90 % in
/// `copy_folio_from_iter_atomic`; the same bytes in calls
/// of 256 KiB or 512 KiB went at 1.9-2.5 GB/s, 0.2 s/GB; 1 MiB calls at 1.0 GB/s (README,
/// "catch-up", session 13). The calls cost microseconds each.
const WRITE_PIECE: usize = 256 << 10;

/// Writes all of `buf` at `pos`, in calls of at most [`WRITE_PIECE`] bytes; with `nowait`,
/// stops where the page cache would make it wait.
fn write_span(fd: RawFd, buf: &[u8], pos: u64, nowait: bool) -> io::Result<Span> {
    let mut done = 0;
    while done < buf.len() {
        let iov = libc::iovec {
            iov_base: buf[done..].as_ptr() as *mut libc::c_void,
            iov_len: (buf.len() - done).min(WRITE_PIECE),
        };
        let flags = nowait_flags(nowait, &NOWAIT_WRITES_UNSUPPORTED);
        // SAFETY: the iovec covers the initialised, borrowed rest of `buf`, which the kernel
        // only reads.
        let n = unsafe { libc::pwritev2(fd, &iov, 1, (pos + done as u64) as libc::off_t, flags) };
        if n > 0 {
            done += n as usize;
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwrite wrote nothing",
            ));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) if flags != 0 => return Ok(Span::WouldBlock(done)),
            Some(libc::EOPNOTSUPP) if flags != 0 => {
                NOWAIT_WRITES_UNSUPPORTED.store(true, Ordering::Relaxed)
            }
            _ => return Err(e),
        }
    }
    Ok(Span::Done(done))
}

impl RealFile {
    async fn append_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let done = match write_span(self.file.as_raw_fd(), buf, pos, true)? {
            Span::Done(n) => {
                assert_eq!(n, buf.len(), "a complete write wrote everything");
                return Ok(());
            }
            Span::WouldBlock(n) => n,
        };
        // The rest waits for writeback: off the runtime, from a copy (the borrowed buffer
        // cannot go to another thread).
        let rest = buf[done..].to_vec();
        let file = Arc::clone(&self.file);
        let at = pos + done as u64;
        off_runtime(
            move || match write_span(file.as_raw_fd(), &rest, at, false)? {
                Span::Done(n) if n == rest.len() => Ok(()),
                _ => Err(io::Error::other("a blocking write stopped short")),
            },
        )
        .await
    }
}

#[async_trait]
impl DiskFile for RealFile {
    async fn append(&self, buf: &[u8]) -> io::Result<u64> {
        let pos = {
            let mut end = self.append_end.lock().unwrap_or_else(|e| e.into_inner());
            let pos = *end;
            assert_eq!(
                pos,
                self.len.load(Ordering::Acquire),
                "appends to one file are serialized by the caller"
            );
            *end = pos + buf.len() as u64;
            pos
        };
        let written = self.append_at(buf, pos).await;
        let mut end = self.append_end.lock().unwrap_or_else(|e| e.into_inner());
        match written {
            Ok(()) => {
                assert_eq!(
                    *end,
                    pos + buf.len() as u64,
                    "no other append ran meanwhile"
                );
                self.len.store(*end, Ordering::Release);
                Ok(pos)
            }
            Err(e) => {
                // The tail is unknown now (the caller stops trusting it); the next append, if
                // any, starts at the last complete one.
                *end = self.len.load(Ordering::Acquire);
                Err(e)
            }
        }
    }

    async fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        let span = unsafe {
            read_span(
                self.file.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
                pos,
                true,
            )?
        };
        let done = match span {
            Span::Done(n) => return Ok(n),
            Span::WouldBlock(n) => n,
        };
        // The rest is not in the page cache: read it off the runtime into a buffer of its own
        // (the borrowed one cannot go to another thread) and copy it over.
        let want = buf.len() - done;
        let rest = read_owned(
            Arc::clone(&self.file),
            pos + done as u64,
            Vec::with_capacity(want),
            want,
        )
        .await?;
        buf[done..done + rest.len()].copy_from_slice(&rest);
        Ok(done + rest.len())
    }

    async fn read_vec_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        // SAFETY: the capacity holds `len` bytes; only the bytes read are made visible.
        let span = unsafe { read_span(self.file.as_raw_fd(), buf.as_mut_ptr(), len, pos, true)? };
        match span {
            Span::Done(n) => {
                // SAFETY: `read_span` initialised the first `n` bytes.
                unsafe { buf.set_len(n) };
                Ok(buf)
            }
            Span::WouldBlock(n) => {
                // SAFETY: as above.
                unsafe { buf.set_len(n) };
                read_owned(Arc::clone(&self.file), pos, buf, len).await
            }
        }
    }

    async fn sync(&self) -> io::Result<()> {
        let file = Arc::clone(&self.file);
        off_runtime(move || file.sync_data()).await
    }

    async fn drop_cached(&self, pos: u64, len: u64) -> io::Result<()> {
        // Freeing thousands of pages takes a while: off the runtime, like a sync.
        let file = Arc::clone(&self.file);
        off_runtime(move || {
            // SAFETY: an advisory call on an open descriptor; it touches no memory of ours.
            let rc = unsafe {
                libc::posix_fadvise(
                    file.as_raw_fd(),
                    pos as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
            match rc {
                0 => Ok(()),
                e => Err(io::Error::from_raw_os_error(e)),
            }
        })
        .await
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        let mut end = self.append_end.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            len <= self.len.load(Ordering::Acquire),
            "truncate beyond the end of the file"
        );
        assert_eq!(
            *end,
            self.len.load(Ordering::Acquire),
            "truncate during an append"
        );
        self.file.set_len(len)?;
        *end = len;
        self.len.store(len, Ordering::Release);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }
}

/// Fills `buf` (which holds the bytes from `pos` read so far) up to `len` bytes, waiting for the
/// device on the blocking pool; short only at the end of the file.
async fn read_owned(
    file: Arc<fs::File>,
    pos: u64,
    mut buf: Vec<u8>,
    len: usize,
) -> io::Result<Vec<u8>> {
    assert!(
        buf.capacity() >= len && buf.len() <= len,
        "the buffer holds the read"
    );
    off_runtime(move || {
        let done = buf.len();
        // SAFETY: the capacity holds `len` bytes, `done` of them initialised; the span writes
        // the rest and only what it read is made visible.
        let span = unsafe {
            read_span(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(done),
                len - done,
                pos + done as u64,
                false,
            )?
        };
        let Span::Done(n) = span else {
            unreachable!("a blocking read does not stop for the page cache")
        };
        // SAFETY: as above.
        unsafe { buf.set_len(done + n) };
        Ok(buf)
    })
    .await
}

/// The open `.lock` file: its `flock` lasts as long as this descriptor, and dies with the
/// process.
#[derive(Debug)]
struct HeldLock {
    _file: fs::File,
}

#[async_trait]
impl Disk for FileDisk {
    async fn lock_dir(&self, dir: &Path) -> Result<DirLock, LockDirError> {
        use std::io::{Read, Seek, Write};
        let failed = |source: io::Error| LockDirError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                // The holder wrote its pid after locking; a holder still writing reads as none.
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockDirError::InUse {
                    dir: dir.to_path_buf(),
                    pid,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(failed(e)),
        }
        // Only for the message a second broker prints; the lock itself is the flock.
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{pid}"))
            .map_err(failed)?;
        Ok(DirLock::new(HeldLock { _file: file }))
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Find the first missing ancestor so its parent can be synced after creation.
        let mut missing: Vec<PathBuf> = Vec::new();
        let mut cur = Some(dir);
        while let Some(p) = cur {
            if p.as_os_str().is_empty() || p.exists() {
                break;
            }
            missing.push(p.to_path_buf());
            cur = p.parent();
        }
        fs::create_dir_all(dir)?;
        for created in missing.iter().rev() {
            if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
        }
        Ok(())
    }

    async fn create_dirs(&self, dir: &Path, names: &[String]) -> io::Result<()> {
        // Thousands of mkdirs and a sync: off the runtime's threads, as one piece of work.
        let dir = dir.to_path_buf();
        let names = names.to_vec();
        off_runtime(move || {
            for name in &names {
                let path = dir.join(name);
                match fs::create_dir(&path) {
                    Ok(()) => {}
                    // One a crashed process made may not be durable yet: the sync covers it.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
                    Err(e) => return Err(e),
                }
            }
            if names.is_empty() {
                return Ok(());
            }
            fsync_dir(&dir)
        })
        .await
    }

    async fn create_dir(&self, dir: &Path) -> io::Result<()> {
        match fs::create_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
            done => done,
        }
    }

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        let mut options = fs::OpenOptions::new();
        options.read(true).write(true);
        match mode {
            OpenMode::Existing => {}
            OpenMode::Create => {
                options.create(true);
            }
            OpenMode::CreateNew => {
                options.create_new(true);
            }
        }
        let file = options.open(path)?;
        let len = file.metadata()?.len();
        Ok(Arc::new(RealFile {
            file: Arc::new(file),
            len: AtomicU64::new(len),
            append_end: Mutex::new(len),
        }))
    }

    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            names.push(name.to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    async fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir_all(dir)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // An fsync can take milliseconds: off the runtime's threads, like `DiskFile::sync`.
        let dir = dir.to_path_buf();
        off_runtime(move || fsync_dir(&dir)).await
    }
}

/// How many of the file's pages are in the page cache (`mincore` of a mapping).
#[cfg(test)]
pub(crate) fn resident_pages(path: &Path) -> usize {
    let file = fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a read-only shared mapping of an open file, unmapped below; `mincore` writes
    // one byte per page into a vector of that many.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED, "mmap");
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        assert_eq!(libc::mincore(map, len, vec.as_mut_ptr()), 0, "mincore");
        libc::munmap(map, len);
        vec.iter().filter(|&&b| b & 1 == 1).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drops the file's clean pages from the page cache, so the next read must go to the device.
    fn evict(file: &fs::File) {
        file.sync_data().unwrap();
        // SAFETY: a plain advisory call on an open descriptor.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise");
    }

    #[tokio::test]
    async fn synced_bytes_dropped_from_the_page_cache_leave_it_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropped");
        let disk = FileDisk::new();
        let file = disk.open(&path, OpenMode::CreateNew).await.unwrap();
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
        file.append(&data).await.unwrap();
        file.sync().await.unwrap();
        let pages = resident_pages(&path);
        assert!(
            pages >= 200,
            "a fresh append is in the page cache ({pages} pages)"
        );

        // The first half: its pages leave, the second half's stay.
        file.drop_cached(0, data.len() as u64 / 2).await.unwrap();
        let left = resident_pages(&path);
        assert!(
            left <= pages / 2 + 1,
            "{left} of {pages} pages still cached after dropping half"
        );
        assert!(left >= pages / 2 - 1, "only the range asked for is dropped");
        assert_eq!(file.read_vec_at(0, data.len()).await.unwrap(), data);
    }

    #[tokio::test]
    async fn an_append_longer_than_one_write_call_lands_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long");
        let disk = FileDisk::new();
        let file = disk.open(&path, OpenMode::CreateNew).await.unwrap();
        let head: Vec<u8> = (0..1000u32).map(|i| (i % 7) as u8).collect();
        // Four pieces and a ragged end, so a piece that started from the wrong byte shows.
        let long: Vec<u8> = (0..(4 * WRITE_PIECE as u32 + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        assert_eq!(file.append(&head).await.unwrap(), 0);
        assert_eq!(file.append(&long).await.unwrap(), head.len() as u64);
        assert_eq!(
            file.append(b"tail").await.unwrap(),
            (head.len() + long.len()) as u64
        );
        let expected = [head.as_slice(), long.as_slice(), b"tail"].concat();
        assert_eq!(file.len(), expected.len() as u64);
        assert_eq!(fs::read(&path).unwrap(), expected, "the bytes on disk");
        assert_eq!(
            file.read_vec_at(0, expected.len()).await.unwrap(),
            expected,
            "the bytes read back through the handle"
        );
    }

    #[tokio::test]
    async fn reads_of_pages_not_in_the_page_cache_are_served_off_the_runtime_with_the_right_bytes()
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cold");
        let disk = FileDisk::new();
        let file = disk.open(&path, OpenMode::CreateNew).await.unwrap();
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        file.append(&data).await.unwrap();
        let raw = fs::File::open(&path).unwrap();

        evict(&raw);
        let mut probe = [0u8; 4096];
        // SAFETY: `probe` is valid for writes of its length.
        let span =
            unsafe { read_span(raw.as_raw_fd(), probe.as_mut_ptr(), probe.len(), 8192, true) }
                .unwrap();
        if NOWAIT_READS_UNSUPPORTED.load(Ordering::Relaxed) {
            // This file system reads inline; the bytes must still be right.
            assert!(matches!(span, Span::Done(4096)));
        } else {
            assert!(
                matches!(span, Span::WouldBlock(0)),
                "an evicted page is not read inline"
            );
        }

        evict(&raw);
        let mut buf = vec![0u8; 300_000];
        assert_eq!(file.read_at(10_000, &mut buf).await.unwrap(), buf.len());
        assert_eq!(buf, data[10_000..310_000]);
        evict(&raw);
        assert_eq!(
            file.read_vec_at(1_000_000, 100_000).await.unwrap(),
            data[1_000_000..]
        );
    }
}
