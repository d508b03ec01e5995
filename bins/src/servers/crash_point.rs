//! A crash point for tests that kill a real server at an exact step of its
//! storage work: with `MINIPAY_CRASH_POINT=<op>:<name prefix>:<n>` set, the
//! server SIGKILLs itself just before its n-th `<op>` (`create`, `rename`
//! or `remove`) of a file whose name starts with the prefix. For example
//! `rename:table-:5` dies with its fifth history table written and synced
//! but not yet in place, and `rename:manifest-:2` with the second manifest
//! written but not switched. It is a real SIGKILL on the real disk: what
//! the process wrote and synced before it stands, nothing after.
//!
//! Unset (always, outside such tests), the server's storage is the plain
//! [`FsStorage`].

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use wal::{FsStorage, ReadView, Storage, StorageFile};

/// The environment variable that sets a crash point.
pub const CRASH_POINT_VAR: &str = "MINIPAY_CRASH_POINT";

/// Where to die: before the `at`-th `op` on a name starting with `prefix`.
#[derive(Debug)]
struct CrashPoint {
    op: String,
    prefix: String,
    at: u64,
    seen: AtomicU64,
}

impl CrashPoint {
    fn parse(text: &str) -> anyhow::Result<CrashPoint> {
        let mut parts = text.splitn(3, ':');
        let (Some(op), Some(prefix), Some(at)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("{CRASH_POINT_VAR} must be <op>:<name prefix>:<n>, not {text:?}");
        };
        if !["create", "rename", "remove"].contains(&op) {
            bail!("{CRASH_POINT_VAR}: the operation must be create, rename or remove");
        }
        let at = at
            .parse()
            .with_context(|| format!("{CRASH_POINT_VAR}: {at:?} is not a count"))?;
        Ok(CrashPoint {
            op: op.to_owned(),
            prefix: prefix.to_owned(),
            at,
            seen: AtomicU64::new(0),
        })
    }

    fn before(&self, op: &str, name: &str) {
        if op == self.op
            && name.starts_with(&self.prefix)
            && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.at
        {
            eprintln!("crash point {op} {name}: SIGKILL");
            // SAFETY: sends a signal to this process; no memory is touched.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

/// The storage of a server's data directory: [`FsStorage`], behind a crash
/// point if [`CRASH_POINT_VAR`] is set.
pub fn storage(dir: &Path) -> anyhow::Result<Arc<dyn Storage>> {
    let storage = FsStorage::open_locked(dir)
        .with_context(|| format!("open data directory {}", dir.display()))?;
    Ok(match std::env::var(CRASH_POINT_VAR) {
        Ok(text) => Arc::new(Crashing {
            inner: storage,
            point: CrashPoint::parse(&text)?,
        }),
        Err(_) => Arc::new(storage),
    })
}

struct Crashing {
    inner: FsStorage,
    point: CrashPoint,
}

impl Storage for Crashing {
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }

    fn open(&self, name: &str, create: bool) -> io::Result<Box<dyn StorageFile>> {
        if create {
            self.point.before("create", name);
        }
        self.inner.open(name, create)
    }

    fn read(&self, name: &str) -> io::Result<ReadView> {
        self.inner.read(name)
    }

    fn rename(&self, source: &str, target: &str) -> io::Result<()> {
        self.point.before("rename", source);
        self.inner.rename(source, target)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.point.before("remove", name);
        self.inner.remove(name)
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }

    fn describe(&self, name: &str) -> String {
        self.inner.describe(name)
    }
}
