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
use std::sync::Mutex;

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
    direct_writes: bool,
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
            direct_writes: true,
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
            direct_writes: true,
        })
    }

    /// Writes only through the page cache, never `O_DIRECT`: for a log that
    /// never syncs, where a direct write would wait for the device.
    pub fn buffered_only(mut self) -> FsStorage {
        self.direct_writes = false;
        self
    }

    fn open_file(&self, name: &str, create: bool) -> io::Result<FsFile> {
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path)?;
        let direct = if self.direct_writes {
            Direct::Untried
        } else {
            Direct::Off
        };
        Ok(FsFile {
            file,
            path,
            direct: Mutex::new(direct),
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
        Ok(Box::new(self.open_file(name, create)?))
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
    direct: Mutex<Direct>,
}

impl FsFile {
    fn forget_last_page(&self) {
        self.direct
            .lock()
            .expect("direct writer lock poisoned")
            .forget_last_page();
    }
}

/// A second descriptor of the file at `path`, writing around the page cache.
fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// A zeroed buffer with `len` bytes from an offset aligned for direct I/O;
/// returns the buffer and that offset.
fn aligned_buffer(len: usize) -> (Vec<u8>, usize) {
    let buffer = vec![0u8; len + DIRECT_IO_ALIGN];
    let start = buffer.as_ptr().align_offset(DIRECT_IO_ALIGN);
    (buffer, start)
}

/// Whether and how a file's page-aligned writes bypass the page cache.
enum Direct {
    /// Not tried yet: the `O_DIRECT` descriptor is opened at the first
    /// write that can use it.
    Untried,
    /// Buffered writes only (turned off, or the file system refused).
    Off,
    Ready(DirectWriter),
}

impl Direct {
    /// For any change to the file not made by a direct write: the page
    /// remembered may no longer be what the file holds.
    fn forget_last_page(&mut self) {
        if let Direct::Ready(writer) = self {
            writer.last_page = None;
        }
    }
}

/// A second descriptor of the file, opened with `O_DIRECT`, and the aligned
/// buffer whole pages are assembled in.
struct DirectWriter {
    file: File,
    buffer: Vec<u8>,
    /// Where in `buffer` the aligned window starts.
    start: usize,
    /// The last page this handle wrote: its file offset, and where its
    /// bytes are in the window. The next write usually starts inside it.
    last_page: Option<(u64, usize)>,
}

impl DirectWriter {
    fn open(path: &Path) -> Option<DirectWriter> {
        let file = open_direct(path).ok()?;
        Some(DirectWriter {
            file,
            buffer: Vec::new(),
            start: 0,
            last_page: None,
        })
    }

    /// Writes `data`, which ends on a page boundary, at `offset` as whole
    /// pages. The head of the first page (the bytes before `offset`) comes
    /// from the last page this handle wrote, or is read through `buffered`.
    fn write(&mut self, buffered: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let page = offset - offset % DIRECT_IO_ALIGN as u64;
        let head = (offset - page) as usize;
        let len = head + data.len();
        if self.buffer.len() < self.start + len {
            self.grow(len);
        }
        let start = self.start;
        if head > 0 {
            match self.last_page {
                Some((at, from)) if at == page => self
                    .buffer
                    .copy_within(start + from..start + from + head, start),
                _ => buffered.read_exact_at(&mut self.buffer[start..start + head], page)?,
            }
        }
        let window = &mut self.buffer[start..start + len];
        window[head..].copy_from_slice(data);
        self.last_page = None;
        self.file.write_all_at(window, page)?;
        self.last_page = Some((page + (len - DIRECT_IO_ALIGN) as u64, len - DIRECT_IO_ALIGN));
        Ok(())
    }

    /// Replaces the buffer by an aligned one holding at least `len` bytes,
    /// keeping the last page written at its start.
    fn grow(&mut self, len: usize) {
        let (mut grown, start) = aligned_buffer(len);
        if let Some((at, from)) = self.last_page {
            let from = self.start + from;
            grown[start..start + DIRECT_IO_ALIGN]
                .copy_from_slice(&self.buffer[from..from + DIRECT_IO_ALIGN]);
            self.last_page = Some((at, 0));
        }
        self.buffer = grown;
        self.start = start;
    }
}

impl StorageFile for FsFile {
    /// A write that ends on a page boundary goes out as whole pages through
    /// `O_DIRECT`, its first page completed with the bytes already there
    /// (rewritten unchanged): no copy into the page cache, and no writeback
    /// inside `fdatasync`, which then only flushes the device's cache. Other
    /// writes, and every write where the file system has no direct I/O, go
    /// through the page cache.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset + data.len() as u64;
        let mut direct = self.direct.lock().expect("direct writer lock poisoned");
        if data.is_empty() || !end.is_multiple_of(DIRECT_IO_ALIGN as u64) {
            direct.forget_last_page();
            return self.file.write_all_at(data, offset);
        }
        if let Direct::Untried = *direct {
            *direct = DirectWriter::open(&self.path).map_or(Direct::Off, Direct::Ready);
        }
        let Direct::Ready(writer) = &mut *direct else {
            return self.file.write_all_at(data, offset);
        };
        match writer.write(&self.file, offset, data) {
            // Direct I/O refused after all: from now on write buffered.
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                *direct = Direct::Off;
                self.file.write_all_at(data, offset)
            }
            written => written,
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.forget_last_page();
        self.file.set_len(len)
    }

    /// Zeros through a second descriptor opened with `O_DIRECT`, so the
    /// zeros bypass the page cache: copying them in costs a third of the
    /// CPU of a busy log. Falls back to buffered writes where the file
    /// system has no direct I/O (tmpfs) or the length is not aligned.
    fn zero_fill(&self, offset: u64, len: u64, abandon: &dyn Fn() -> bool) -> io::Result<bool> {
        self.forget_last_page();
        let aligned = |value: u64| value.is_multiple_of(DIRECT_IO_ALIGN as u64);
        let direct = match open_direct(&self.path) {
            Ok(file) if aligned(offset) && aligned(len) => file,
            _ => return write_zeros(self, offset, len, abandon),
        };
        let (buffer, start) = aligned_buffer(ZERO_FILL_CHUNK);
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

    /// A xorshift generator: the write patterns below are reproducible.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    /// Writes as a log makes them (each starting inside the last page of
    /// the one before, most ending on a page boundary), mixed with unaligned
    /// buffered writes, large writes, zero fills and fresh handles: the file
    /// always holds exactly what was written, whichever path each write took.
    #[test]
    fn direct_writes_keep_every_byte_whatever_the_path() {
        const LEN: u64 = 1 << 20;
        let page = DIRECT_IO_ALIGN as u64;
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::open_locked(dir.path()).unwrap();
        for seed in 1..=8u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut model = vec![0x5Au8; LEN as usize];
            storage
                .open("seg", true)
                .unwrap()
                .write_at(0, &model)
                .unwrap();
            let mut file = storage.open_file("seg", false).unwrap();
            let (mut tail, mut direct_writes, mut used_direct) = (0u64, 0, false);
            for step in 0..250u8 {
                match rng.below(25) {
                    0 => file = storage.open_file("seg", false).unwrap(),
                    1 => {
                        // Zeros over the page the next write starts in.
                        let from = tail - tail % page;
                        file.zero_fill(from, 2 * page, &|| false).unwrap();
                        model[from as usize..(from + 2 * page) as usize].fill(0);
                    }
                    _ => {}
                }
                let offset = match rng.below(10) {
                    0 => rng.below(LEN - page),
                    _ => tail,
                };
                let len = match rng.below(10) {
                    0 => 1 + rng.below(3 * page),
                    1 => 40 * page + rng.below(page),
                    _ => 1 + rng.below(page / 2),
                };
                let end = (offset + len).min(LEN);
                let padded = match rng.below(4) {
                    0 => end,
                    _ => end.next_multiple_of(page).min(LEN),
                };
                let mut data = vec![step | 1; (end - offset) as usize];
                data.resize((padded - offset) as usize, 0);
                file.write_at(offset, &data).unwrap();
                direct_writes += usize::from(padded % page == 0);
                used_direct |= matches!(*file.direct.lock().unwrap(), Direct::Ready(_));
                model[offset as usize..padded as usize].copy_from_slice(&data);
                tail = end % (LEN - 50 * page);
                let view = storage.read("seg").unwrap();
                if view[..] != model[..] {
                    let first_wrong = (0..model.len()).find(|&at| view[at] != model[at]);
                    panic!("seed {seed} step {step} @{offset}+{len}: differs at {first_wrong:?}");
                }
            }
            assert!(
                direct_writes > 100,
                "seed {seed}: {direct_writes} aligned ends"
            );
            assert!(
                used_direct,
                "ext4 and xfs take O_DIRECT; this test needs one"
            );
        }
    }

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
