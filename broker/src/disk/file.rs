//! [`FileDisk`]: the real [`Disk`], on the operating system's files.
//!
//! This is the one place in broker code allowed to touch `std::fs` (see `clippy.toml`).
//! Appends and reads are positional (`pwrite`/`pread`) and go to the page cache inline: they take
//! microseconds. `sync` is `fdatasync`, which can take milliseconds, so on real tokio it runs on
//! the blocking pool and the runtime keeps accepting appends meanwhile; that is what lets many
//! appends share one sync (group commit).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The logical length; appends reserve their range here under `append_lock`.
    len: AtomicU64,
    append_lock: Mutex<()>,
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl DiskFile for RealFile {
    async fn append(&self, buf: &[u8]) -> io::Result<u64> {
        let _serial = self.append_lock.lock().unwrap_or_else(|e| e.into_inner());
        let pos = self.len.load(Ordering::Acquire);
        self.file.write_all_at(buf, pos)?;
        self.len.store(pos + buf.len() as u64, Ordering::Release);
        Ok(pos)
    }

    async fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut read = 0;
        while read < buf.len() {
            match self.file.read_at(&mut buf[read..], pos + read as u64) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(read)
    }

    async fn sync(&self) -> io::Result<()> {
        let file = Arc::clone(&self.file);
        #[cfg(not(madsim))]
        {
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(|e| io::Error::other(format!("sync task failed: {e}")))?
        }
        // The simulator refuses OS threads; nothing runs FileDisk there but it must compile.
        #[cfg(madsim)]
        {
            file.sync_data()
        }
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        let _serial = self.append_lock.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            len <= self.len.load(Ordering::Acquire),
            "truncate beyond the end of the file"
        );
        self.file.set_len(len)?;
        self.len.store(len, Ordering::Release);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }
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
            append_lock: Mutex::new(()),
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
        #[cfg(not(madsim))]
        {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || fsync_dir(&dir))
                .await
                .map_err(|e| io::Error::other(format!("sync task failed: {e}")))?
        }
        #[cfg(madsim)]
        {
            fsync_dir(dir)
        }
    }
}
