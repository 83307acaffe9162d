//! The disk seam: every byte the broker keeps goes through [`Disk`] and [`DiskFile`].
//!
//! madsim simulates time, tasks and the network but not power loss, torn writes or I/O errors,
//! so the broker never touches `std::fs` directly. Production uses [`FileDisk`]; simulations and
//! crash tests use the faulty implementation in the `chaos` crate. One contract test suite runs
//! against both, so the contracts below are checked, not just hoped for.
//!
//! # Durability contract (what survives a crash)
//! - Bytes appended to a file are durable only once a later [`DiskFile::sync`] on that file has
//!   returned `Ok`. A crash loses every byte appended since the last successful sync, except that
//!   a prefix of the unsynced bytes may survive (the kernel wrote some pages back); that prefix
//!   can end mid-write (a torn write, cut at a 512-byte sector boundary).
//! - A failed sync means the data since the last good sync is gone, now or at the next crash,
//!   even if later reads still return it and a later sync succeeds (Linux "fsyncgate"). The only
//!   safe reaction is to stop trusting the file: callers take the log offline.
//! - Creating, removing and renaming a file changes the directory; that change is durable only
//!   after [`Disk::sync_dir`] on the parent directory has returned `Ok`. A file whose data was
//!   synced but whose directory entry was not can vanish in a crash. A rename is atomic: after a
//!   crash the target name holds either the old or the new file, never a mix.
//! - [`Disk::create_dir_all`] and [`Disk::create_dirs`] are durable when they return;
//!   [`Disk::create_dir`] is a creation like a file's, durable after [`Disk::sync_dir`] of the
//!   parent.
//!
//! # Exclusive use of a directory
//! [`Disk::lock_dir`] takes Kafka's `.lock` on a data directory for as long as the returned
//! [`DirLock`] lives, and is refused while another holder has it. The lock is released when the
//! guard is dropped or its process dies (the real implementation is an OS lock, `flock`; the
//! simulated disk releases it at a crash), so a kill -9 never leaves a directory locked. Two
//! brokers writing one directory lose acknowledged records: every log assumes it is the only
//! appender of its files.
//!
//! # Concurrency contract
//! Appends and truncations of one file are serialized by the caller (the log holds a lock), and
//! only one handle at a time appends to a file: a handle learns the file's length when it is
//! opened (the real implementation appends at that handle's idea of the end).
//! Reads and syncs may run concurrently with an append; a read never observes a partially
//! applied append beyond what [`DiskFile::len`] reported before the read started.
//!
//! # Errors
//! Errors are `std::io::Error` with the kinds and raw OS errors a real file system gives:
//! `NotFound`, `AlreadyExists`, `EIO` (raw os error 5), `ENOSPC` (raw os error 28, kind
//! `StorageFull`). The faulty disk produces exactly these, so callers cannot tell them apart.

mod file;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

#[cfg(test)]
pub(crate) use file::resident_pages;
pub use file::FileDisk;

/// The name of the lock file in a data directory, as Kafka names it.
pub const LOCK_FILE: &str = ".lock";

/// How [`Disk::open`] treats a missing or existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file; `NotFound` if it is missing.
    Existing,
    /// Open the file, creating it empty if it is missing.
    Create,
    /// Create a new empty file; `AlreadyExists` if the name is taken.
    CreateNew,
}

/// One open file. Handles are cheap to clone through `Arc` and stay valid after the name is
/// removed or renamed (like a file descriptor), which lets a reader finish while retention
/// deletes the segment it reads.
#[async_trait]
pub trait DiskFile: Send + Sync + fmt::Debug {
    /// Appends `buf` at the end of the file and returns the position it starts at.
    /// Not durable until [`DiskFile::sync`] returns `Ok`. On error, an unspecified prefix of
    /// `buf` may have been written: the caller must treat the file's tail as unknown.
    async fn append(&self, buf: &[u8]) -> io::Result<u64>;

    /// Reads into `buf` from `pos`; returns the number of bytes read, which is short only at
    /// the end of the file. Returns what was appended, including unsynced bytes, and including
    /// any corruption at rest (the disk does not checksum; callers do).
    async fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Reads up to `len` bytes from `pos` into a new buffer, short only at the end of the file,
    /// as [`DiskFile::read_at`] does. The real disk reads straight into fresh memory (a fetch
    /// would otherwise zero-fill a megabyte only to overwrite it).
    async fn read_vec_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let n = self.read_at(pos, &mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Makes every append and truncation of this file so far durable (fdatasync). On error the
    /// bytes since the last successful sync are lost; see the module doc.
    async fn sync(&self) -> io::Result<()>;

    /// A hint: the synced bytes in `[pos, pos + len)` will not be read soon. The real disk drops
    /// their whole pages from the page cache (`POSIX_FADV_DONTNEED`), so the next appends reuse
    /// those pages instead of touching fresh memory; a read returns the same bytes either way
    /// (from the device). Changes nothing a read, a sync or a crash sees, so the simulated disk
    /// (no page cache) does nothing, which is the default.
    async fn drop_cached(&self, _pos: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    /// Cuts the file to `len` bytes (`len` must not exceed the current length). Durable after
    /// the next successful sync.
    async fn truncate(&self, len: u64) -> io::Result<()>;

    /// The current length, including unsynced appends.
    fn len(&self) -> u64;

    /// True when the file holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Exclusive use of a directory ([`Disk::lock_dir`]); released when dropped.
pub struct DirLock(Box<dyn Send + Sync + fmt::Debug>);

impl DirLock {
    /// Wraps whatever keeps the lock held (an open file, a registration in a simulated disk).
    pub fn new(holder: impl Send + Sync + fmt::Debug + 'static) -> DirLock {
        DirLock(Box::new(holder))
    }
}

impl fmt::Debug for DirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DirLock").field(&self.0).finish()
    }
}

/// Why [`Disk::lock_dir`] failed: the directory is in use, or the lock file could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LockDirError {
    /// Another holder (another broker process) has the directory.
    #[error("another broker{} is using data directory {}", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), .dir.display())]
    InUse {
        dir: std::path::PathBuf,
        /// The holder's process id, as it wrote it into the lock file, when known.
        pid: Option<u32>,
    },
    #[error("cannot lock data directory {}: {source}", .dir.display())]
    Io {
        dir: std::path::PathBuf,
        source: io::Error,
    },
}

/// A directory tree of files. See the module doc for the durability contract.
#[async_trait]
pub trait Disk: Send + Sync + fmt::Debug {
    /// Takes the exclusive lock on directory `dir` (which must exist) for as long as the
    /// returned guard lives; [`LockDirError::InUse`] while another guard or process holds it.
    /// See the module doc.
    async fn lock_dir(&self, dir: &Path) -> Result<DirLock, LockDirError>;

    /// Creates `dir` and its missing parents; durable on return.
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Creates the directories `names` directly in `dir` (which must exist), skipping those that
    /// exist already; all of them durable on return. One sync of `dir` covers them all, where
    /// [`Disk::create_dir_all`] once each would sync it once per directory (a topic creation
    /// of thousands of partitions). On error, any of them may or may not exist, durably or not.
    async fn create_dirs(&self, dir: &Path, names: &[String]) -> io::Result<()> {
        for name in names {
            self.create_dir_all(&dir.join(name)).await?;
        }
        Ok(())
    }

    /// Creates the directory `dir` in its parent, which must exist; an existing directory is
    /// no error. Unlike [`Disk::create_dir_all`] it is a plain `mkdir`: the new name is durable
    /// only after [`Disk::sync_dir`] of the parent, and a crash before that takes it, with
    /// whatever was put in it. (A partition's log makes its directory this way at its first
    /// write, under a temporary name, fills it, and renames it into place.) The default makes
    /// the directory durably at once, which is more than asked.
    async fn create_dir(&self, dir: &Path) -> io::Result<()> {
        self.create_dir_all(dir).await
    }

    /// Opens or creates the file at `path` as `mode` says. A created file's name is durable
    /// only after [`Disk::sync_dir`] of its parent.
    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>>;

    /// The names of the entries directly in `dir`, files and directories, sorted bytewise.
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Removes the file at `path`; durable after [`Disk::sync_dir`] of its parent. Open handles
    /// keep working.
    async fn remove(&self, path: &Path) -> io::Result<()>;

    /// Removes `dir` and everything under it; durable after [`Disk::sync_dir`] of its parent.
    async fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Atomically renames `from` to `to`, replacing `to` if it exists; durable after
    /// [`Disk::sync_dir`] of the parent (both names must share one parent directory).
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Makes the creations, removals and renames of entries in `dir` durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Reads a whole file. For small metadata files (checkpoints, indexes).
pub async fn read_file(disk: &dyn Disk, path: &Path) -> io::Result<Vec<u8>> {
    let file = disk.open(path, OpenMode::Existing).await?;
    let len = usize::try_from(file.len()).map_err(|_| io::Error::other("file too large"))?;
    let mut buf = vec![0u8; len];
    let mut read = 0;
    while read < len {
        let n = file.read_at(read as u64, &mut buf[read..]).await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    buf.truncate(read);
    Ok(buf)
}

/// Replaces the file at `path` with `contents` so that after a crash it holds either the old or
/// the new contents, never a mix: write a temporary file, sync it, rename it over `path`, sync
/// the directory. The classic recipe; each step matters under the contract above.
pub async fn write_file_atomic(disk: &dyn Disk, path: &Path, contents: &[u8]) -> io::Result<()> {
    write_file_whole(disk, path, contents).await?;
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    disk.sync_dir(dir).await
}

/// [`write_file_atomic`] unless the file already holds `contents` (read back: cheap next to
/// two syncs); returns whether it wrote. Only for files that are derived data, where losing the
/// file or finding an older version after a crash costs time, never correctness (indexes,
/// snapshots): the contents found may be a rename a crash kept from becoming durable, and it
/// stays that way.
pub async fn write_file_atomic_if_changed(
    disk: &dyn Disk,
    path: &Path,
    contents: &[u8],
) -> io::Result<bool> {
    match read_file(disk, path).await {
        Ok(existing) if existing == contents => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    write_file_atomic(disk, path, contents).await?;
    Ok(true)
}

/// The first half of [`write_file_atomic`]: after a crash `path` holds its old contents (or
/// nothing, if it had none) or the new ones, never a mix, but the new name is durable only
/// after a [`Disk::sync_dir`] of its parent (by this caller or any later one).
pub async fn write_file_whole(disk: &dyn Disk, path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    // A leftover temporary file from a crash is garbage: start it afresh.
    match disk.remove(tmp).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = disk.open(tmp, OpenMode::CreateNew).await?;
    let written = async {
        file.append(contents).await?;
        file.sync().await
    }
    .await;
    drop(file);
    if let Err(e) = written {
        // A full disk or a failed write leaves no garbage behind: removing needs no space.
        if let Err(cleanup) = disk.remove(tmp).await {
            tracing::warn!(path = %tmp.display(), %cleanup, "could not remove a temporary file");
        }
        return Err(e);
    }
    disk.rename(tmp, path).await
}

/// Is this error a full disk (ENOSPC)? Callers that can defer a write tolerate it.
pub fn is_storage_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
}

/// Removes a file if it exists; a missing file is not an error.
pub async fn remove_if_exists(disk: &dyn Disk, path: &Path) -> io::Result<bool> {
    match disk.remove(path).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// True if a file or directory named `name` exists directly in `dir`.
pub async fn exists(disk: &dyn Disk, dir: &Path, name: &str) -> io::Result<bool> {
    match disk.list(dir).await {
        Ok(names) => Ok(names.binary_search_by(|n| n.as_str().cmp(name)).is_ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
