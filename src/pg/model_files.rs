//! Model images shared by every backend of a server: one file per model version under
//! `$PGDATA/pg_personalize`, written once by the first backend that serves the version and
//! mapped read-only by all of them, so the page cache holds one copy however many connections
//! serve (a backend's private memory holds no model).
//!
//! Why files rather than dynamic shared memory: a file needs no `shared_preload_libraries`,
//! outlives the backend that built it without a handle kept anywhere (PostgreSQL 15 and 16
//! have no named DSM registry), and works on a hot standby, which builds its own files from its
//! replicated model tables. Files are only derived data: any of them can be deleted at any time
//! and is rebuilt on the next call.
//!
//! Safety of the protocol:
//! - a file is written under a temporary name, synced and renamed into place, so a name that
//!   exists is complete; `ModelImage::parse` also checks its length and checksum, so a file
//!   damaged in any way (a crash of the machine before the data reached the disk) is rebuilt,
//!   never trusted;
//! - a backend killed while building leaves only its temporary file, which no reader opens and
//!   the next builder deletes;
//! - builds are serialised by an flock on `build.lock` (released by the kernel when a builder
//!   dies), so a herd of connections after a training reads the tables once;
//! - files of versions no longer active are unlinked by the next build; a backend still mapping
//!   one keeps a valid mapping (Linux frees an unlinked file with its last mapping), which is
//!   how a version is dropped once no backend uses it.

use std::ffi::CStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use memmap2::Mmap;
use pgrx::prelude::*;

use crate::core::model_image::{self, AlignedBytes, ModelImage, ModelParts};
use crate::error::spi_failed;

/// The directory under the data directory that holds the images.
const DIR: &str = "pg_personalize";

/// Where an image's bytes live: a shared read-only mapping, or (when the file cannot be written:
/// a full or read-only disk) this backend's memory.
pub enum Storage {
    Mapped(Mmap),
    Memory(AlignedBytes),
}

impl AsRef<[u8]> for Storage {
    fn as_ref(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Memory(b) => b.as_ref(),
        }
    }
}

pub type SharedImage = ModelImage<Storage>;

/// A model version's stamp in SQL (over `personalize.models`): its created_at in microseconds,
/// which with model_id names the version (a re-created extension reuses model ids, never both).
pub const VERSION_STAMP: &str = "CAST(extract(epoch FROM created_at) * 1000000 AS int8)";

fn directory() -> PathBuf {
    // SAFETY: DataDir is set before any backend runs SQL and never changes afterwards.
    let data = unsafe { CStr::from_ptr(pg_sys::DataDir) };
    PathBuf::from(data.to_string_lossy().into_owned()).join(DIR)
}

fn database() -> u32 {
    // SAFETY: set once at backend start, read-only afterwards.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

fn file_name(database: u32, model_id: i64, stamp: i64) -> String {
    format!("{database}_{model_id}_{stamp}.model")
}

/// The model version's image: the shared file when it exists and is sound, else built from the
/// tables by `read` (once per server) and written for every other backend.
pub fn open_or_build(model_id: i64, stamp: i64, read: impl FnOnce() -> ModelParts) -> SharedImage {
    let dir = directory();
    let path = dir.join(file_name(database(), model_id, stamp));
    if let Ok(image) = open(&path, model_id, stamp) {
        return image;
    }
    let lock = match BuildLock::acquire(&dir) {
        Ok(lock) => Some(lock),
        Err(e) => {
            log!("pg_personalize: cannot use {}: {e}", dir.display());
            None
        }
    };
    // Built by another backend while this one waited for the lock.
    if lock.is_some() {
        if let Ok(image) = open(&path, model_id, stamp) {
            return image;
        }
    }
    let parts = read();
    if lock.is_some() {
        match write_file(&dir, &path, &parts) {
            Ok(()) => match open(&path, model_id, stamp) {
                Ok(image) => {
                    drop(parts);
                    release_freed_memory();
                    remove_stale(&dir);
                    return image;
                }
                Err(e) => log!("pg_personalize: cannot map {}: {e}", path.display()),
            },
            Err(e) => log!("pg_personalize: cannot write {}: {e}", path.display()),
        }
    }
    // Serving goes on from this backend's own copy.
    let bytes = model_image::to_memory(&parts)
        .unwrap_or_else(|e| spi_failed("cannot lay out the model", e));
    ModelImage::parse(Storage::Memory(bytes))
        .unwrap_or_else(|e| spi_failed("cannot lay out the model", e))
}

/// Maps and checks one image file.
fn open(path: &Path, model_id: i64, stamp: i64) -> io::Result<SharedImage> {
    let file = File::open(path)?;
    // SAFETY: image files are never written after the rename that publishes them, only replaced
    // by another rename or unlinked, neither of which changes the pages of a live mapping.
    let map = unsafe { Mmap::map(&file)? };
    let image = ModelImage::parse(Storage::Mapped(map))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if image.info.model_id != model_id || image.info.stamp != stamp {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the file holds another model version",
        ));
    }
    Ok(image)
}

/// The exclusive right to build image files, held until dropped (closing the file releases the
/// flock; so does the kernel when the holder dies).
struct BuildLock {
    _held: File,
}

impl BuildLock {
    fn acquire(dir: &Path) -> io::Result<BuildLock> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("build.lock"))?;
        loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(BuildLock { _held: file });
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) && e.raw_os_error() != Some(libc::EINTR)
            {
                return Err(e);
            }
            // Another backend is building: wait, and stay cancellable.
            pgrx::check_for_interrupts!();
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A temporary file, deleted on drop unless it was renamed into place (an error or a cancel
/// while writing leaves nothing behind).
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn write_file(dir: &Path, path: &Path, parts: &ModelParts) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let temp_path = dir.join(format!("{name}.tmp.{}", std::process::id()));
    let mut temp = TempFile(Some(temp_path.clone()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&temp_path)?;
    model_image::write(parts, &file)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp_path, path)?;
    temp.0 = None;
    // The rename itself reaches the disk with the directory.
    File::open(dir)?.sync_all()
}

/// Deletes what no call will open again: images of this database's model versions that are no
/// longer active, images of dropped databases, and temporary files of builders that died.
fn remove_stale(dir: &Path) {
    let (active, databases) = Spi::connect(|client| {
        let active: Vec<(i64, i64)> = client
            .select(
                &format!(
                    "SELECT model_id, {VERSION_STAMP} FROM personalize.models \
                      WHERE status = 'active'"
                ),
                None,
                &[],
            )
            .unwrap_or_else(|e| spi_failed("cannot read personalize.models", e))
            .map(|r| {
                (
                    r.get::<i64>(1).ok().flatten().unwrap_or(0),
                    r.get::<i64>(2).ok().flatten().unwrap_or(0),
                )
            })
            .collect();
        let databases: Vec<u32> = client
            .select("SELECT oid FROM pg_catalog.pg_database", None, &[])
            .unwrap_or_else(|e| spi_failed("cannot read pg_database", e))
            .filter_map(|r| r.get::<pg_sys::Oid>(1).ok().flatten())
            .map(|o| o.to_u32())
            .collect();
        (active, databases)
    });
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = database();
    let keep: Vec<String> = active.iter().map(|&(m, s)| file_name(me, m, s)).collect();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Builds hold the lock, so another builder's temporary file is a dead builder's.
        let stale = if let Some((_, pid)) = name.rsplit_once(".tmp.") {
            pid != std::process::id().to_string()
        } else if let Some(stem) = name.strip_suffix(".model") {
            match stem.split('_').next().and_then(|d| d.parse::<u32>().ok()) {
                Some(db) if db == me => !keep.contains(&name),
                Some(db) => !databases.contains(&db),
                None => false,
            }
        } else {
            false
        };
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Hands the memory of a build back to the system: the model's arrays were read into this
/// backend's heap, and malloc would otherwise keep the freed pages as its private memory.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of malloc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
