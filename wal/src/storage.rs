//! The storage seam under the log: one directory of named files.
//!
//! The log never touches `std::fs` directly. It asks a [`Storage`] for files,
//! renames, removals and directory syncs, so a test can substitute
//! [`crate::sim::SimStorage`], which loses unsynced writes, tears writes at
//! sector boundaries and fails writes or syncs on demand. [`FsStorage`] is the
//! production implementation: positional writes, `fdatasync`, and read-only
//! memory maps for recovery.
//!
//! This module knows nothing of records or segments; it moves bytes.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Read-only contents of a file: a memory map in production, a copy in tests.
pub type ReadView = Box<dyn Deref<Target = [u8]> + Send + Sync>;

/// A directory of files the log lives in.
pub trait Storage: Send + Sync + 'static {
    /// Names of the regular files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens a file for positional writes, creating it (empty) if `create`.
    fn open(&self, name: &str, create: bool) -> io::Result<Box<dyn StorageFile>>;
    /// The file's current contents, for reading only.
    fn read(&self, name: &str) -> io::Result<ReadView>;
    /// Atomically renames `source` to `target`, replacing `target`.
    fn rename(&self, source: &str, target: &str) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals in the directory durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// A human-readable path for error messages.
    fn describe(&self, name: &str) -> String;
}

/// A file opened for writing.
pub trait StorageFile: Send + Sync {
    /// Writes all of `data` at `offset` (one positional write).
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Writes `len` zeros at `offset` (not synced), a chunk at a time,
    /// asking `abandon` before each: `Ok(false)` if it said stop.
    fn zero_fill(&self, offset: u64, len: u64, abandon: &dyn Fn() -> bool) -> io::Result<bool> {
        write_zeros(self, offset, len, abandon)
    }
}

/// Zero-fills through ordinary positional writes.
fn write_zeros<F: StorageFile + ?Sized>(
    file: &F,
    offset: u64,
    len: u64,
    abandon: &dyn Fn() -> bool,
) -> io::Result<bool> {
    let zeros = vec![0u8; ZERO_FILL_CHUNK.min(len as usize)];
    fill_chunks(offset, len, &zeros, abandon, |at, bytes| {
        file.write_at(at, bytes)
    })
}

/// Writes `len` zeros at `offset` in chunks of `zeros.len()` through
/// `write`, asking `abandon` before each chunk.
fn fill_chunks(
    offset: u64,
    len: u64,
    zeros: &[u8],
    abandon: &dyn Fn() -> bool,
    mut write: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<bool> {
    let mut done = 0;
    while done < len {
        if abandon() {
            return Ok(false);
        }
        let chunk = (len - done).min(zeros.len() as u64) as usize;
        write(offset + done, &zeros[..chunk])?;
        done += chunk as u64;
    }
    Ok(true)
}

/// Bytes of zeros written per call when zero-filling a file.
const ZERO_FILL_CHUNK: usize = 1 << 20;

/// Alignment of direct I/O buffers, offsets and lengths.
const DIRECT_IO_ALIGN: usize = 4096;

/// The real file system, rooted at one directory, holding an exclusive lock on
/// it for as long as the value lives so two processes never share a log.
#[derive(Debug)]
pub struct FsStorage {
    dir: PathBuf,
    _lock: Option<File>,
}

/// Name of the lock file inside a log directory.
pub const LOCK_FILE: &str = "LOCK";

impl FsStorage {
    /// Opens (creating if needed) `dir` and takes its exclusive lock.
    pub fn open_locked(dir: &Path) -> io::Result<FsStorage> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is locked by another process", dir.display()),
                ));
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(error),
        }
        Ok(FsStorage {
            dir: dir.to_path_buf(),
            _lock: Some(lock),
        })
    }

    /// Opens `dir` without locking it, for read-only inspection tools.
    pub fn open_unlocked(dir: &Path) -> io::Result<FsStorage> {
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(FsStorage {
            dir: dir.to_path_buf(),
            _lock: None,
        })
    }

    /// The directory this storage is rooted at.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Storage for FsStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str, create: bool) -> io::Result<Box<dyn StorageFile>> {
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path)?;
        Ok(Box::new(FsFile { file, path }))
    }

    fn read(&self, name: &str) -> io::Result<ReadView> {
        let file = File::open(self.dir.join(name))?;
        // SAFETY: the map is read-only. The log only maps files it owns under
        // its exclusive directory lock (or, for inspection tools, files the
        // operator points it at), and it never truncates a file while a map of
        // it is alive: recovery drops its maps before zeroing a torn tail.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Box::new(map))
    }

    fn rename(&self, source: &str, target: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(source), self.dir.join(target))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn describe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

struct FsFile {
    file: File,
    path: PathBuf,
}

impl StorageFile for FsFile {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    /// Zeros through a second descriptor opened with `O_DIRECT`, so the
    /// zeros bypass the page cache: copying them in costs a third of the
    /// CPU of a busy log. Falls back to buffered writes where the file
    /// system has no direct I/O (tmpfs) or the length is not aligned.
    fn zero_fill(&self, offset: u64, len: u64, abandon: &dyn Fn() -> bool) -> io::Result<bool> {
        use std::os::unix::fs::OpenOptionsExt;
        let aligned = |value: u64| value.is_multiple_of(DIRECT_IO_ALIGN as u64);
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.path);
        let direct = match direct {
            Ok(file) if aligned(offset) && aligned(len) => file,
            _ => return write_zeros(self, offset, len, abandon),
        };
        let buffer = vec![0u8; ZERO_FILL_CHUNK + DIRECT_IO_ALIGN];
        let start = buffer.as_ptr().align_offset(DIRECT_IO_ALIGN);
        let zeros = &buffer[start..start + ZERO_FILL_CHUNK];
        match fill_chunks(offset, len, zeros, abandon, |at, bytes| {
            direct.write_all_at(bytes, at)
        }) {
            // Direct I/O refused after all: zeros written so far are
            // rewritten, which changes nothing.
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                write_zeros(self, offset, len, abandon)
            }
            filled => filled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_fill_overwrites_stale_bytes_whatever_the_length() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::open_locked(dir.path()).unwrap();
        // Aligned lengths take the direct-I/O path, others the buffered one.
        for (offset, len) in [
            (0, 3 * ZERO_FILL_CHUNK as u64 / 2),
            (4096, 8192),
            (100, 5000),
        ] {
            let file = storage.open("spare", true).unwrap();
            let end = (offset + len) as usize;
            file.write_at(0, &vec![0xA5; end + 100]).unwrap();
            file.zero_fill(offset, len, &|| false).unwrap();
            let view = storage.read("spare").unwrap();
            let zeroed: Vec<usize> = (0..view.len()).filter(|&at| view[at] == 0).collect();
            assert_eq!(zeroed.first(), Some(&(offset as usize)), "{offset}+{len}");
            assert_eq!(zeroed.len(), len as usize, "{offset}+{len}");
            drop(view);
            storage.remove("spare").unwrap();
        }
    }
}
