//! The upload file: every write goes to disk and into the hasher in one call.
//!
//! This is the one data path that matters (see DESIGN.md): a client's bytes are written at the
//! upload's current position and fed to the running hasher from the same buffer, with no copy.
//! Large writes run the `pwrite` and the hashing on two cores at once, and writeback of the page
//! cache to the disk can be started while the data is still arriving, so a durable commit does
//! not wait for one big flush at the end.
//!
//! The file's layout and the saving of states are the Python layer's business; this module only
//! knows a path, an algorithm and an optional state to resume from.

mod copy;
mod direct;

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

pub use self::copy::COPY_CHUNK;
use self::copy::{copy_hashed, CopyError, HashFrom};
use self::direct::Direct;
pub use self::direct::{DirectMode, DIRECT_ALIGN};
use crate::error::{Error, Result};
use crate::hash::any::{Algorithm, AnyHasher};

/// Writes at least this large hash on one core while the other writes to the page cache; below
/// it, handing work to another thread costs more than it saves.
const OVERLAP_THRESHOLD: usize = 256 * 1024;

/// Buffer size for reading a file back to hash it.
const READ_CHUNK: usize = 4 << 20;

/// Early writeback works in windows of this size: once a window is complete its writeback is
/// started, and the writer waits for the window before it, which keeps the dirty pages of one
/// upload bounded to about two windows.
const WRITEBACK_WINDOW: u64 = 8 << 20;

/// How an upload's page cache goes to disk while the data arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritebackMode {
    /// Left to the kernel (and the commit's `fsync`).
    Off,
    /// Writeback of each complete window is started, never waited for: the writer keeps the
    /// network's speed and the commit's `fsync` finds most of the data on its way to disk.
    Started,
    /// Started, and the writer waits for the window before the current one: dirty pages stay
    /// bounded to about two windows and the writer goes at the disk's speed.
    Paced,
}

/// The state of early writeback: how far writeback has been started.
#[derive(Debug)]
struct Writeback {
    started: u64,
    paced: bool,
}

impl Writeback {
    /// Starts writeback of each window that `end` completed and, when paced, waits for the one
    /// before it. These calls only schedule and pace I/O; errors surface at the commit's
    /// `fsync`, so they are ignored here.
    fn advance(&mut self, file: &File, end: u64) {
        while end >= self.started + WRITEBACK_WINDOW {
            let fd = file.as_raw_fd();
            // SAFETY: sync_file_range only reads the descriptor and integer arguments; `fd` is a
            // valid open descriptor borrowed from `file` for the duration of the call.
            unsafe {
                libc::sync_file_range(
                    fd,
                    self.started as libc::off64_t,
                    WRITEBACK_WINDOW as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
                if self.paced && self.started >= WRITEBACK_WINDOW {
                    libc::sync_file_range(
                        fd,
                        (self.started - WRITEBACK_WINDOW) as libc::off64_t,
                        WRITEBACK_WINDOW as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    );
                }
            }
            self.started += WRITEBACK_WINDOW;
        }
    }
}

/// An open upload data file with its running hash.
#[derive(Debug)]
pub struct UploadFile {
    file: File,
    path: String,
    /// Bytes in the file.
    size: u64,
    /// Where the next write goes.
    pos: u64,
    hasher: AnyHasher,
    /// False once a write landed below the hashed length: the running hash then no longer
    /// describes the data, and the digest is recomputed from the file.
    in_order: bool,
    writeback: Option<Writeback>,
    /// The `O_DIRECT` side, when writes may go past the page cache (see `upload/direct.rs`).
    direct: Option<Direct>,
}

impl UploadFile {
    /// Opens the upload data at `path`.
    ///
    /// With `create`, the file must not exist yet (and its directory is created); otherwise it
    /// must exist. `state`, a marshalled hasher state of `algorithm`, resumes the hash at the
    /// state's length without rereading what it covers; a state claiming more bytes than the
    /// file holds is refused. `writeback` says whether the page cache is written to disk early,
    /// for uploads that will be committed durably.
    pub fn open(
        path: &str,
        create: bool,
        algorithm: Algorithm,
        state: Option<&[u8]>,
        writeback: WritebackMode,
    ) -> Result<Self> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if create {
            if let Some(parent) = Path::new(path).parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io(path, e))?;
            }
            options.create_new(true);
        }
        let file = options.open(path).map_err(|e| Error::io(path, e))?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let hasher = match state {
            Some(state) => {
                let hasher = AnyHasher::unmarshal(algorithm, state)?;
                if hasher.len() > size {
                    return Err(Error::HashState(format!(
                        "the state covers {} bytes but the upload holds {size}",
                        hasher.len()
                    )));
                }
                hasher
            }
            None => AnyHasher::new(algorithm),
        };
        let writeback = (writeback != WritebackMode::Off).then(|| Writeback {
            // Whatever is already in the file was written by an earlier writer; pace only the
            // bytes from here on.
            started: size - size % WRITEBACK_WINDOW,
            paced: writeback == WritebackMode::Paced,
        });
        Ok(UploadFile {
            file,
            path: path.to_owned(),
            size,
            pos: size,
            hasher,
            in_order: true,
            writeback,
            direct: None,
        })
    }

    /// Lets the large aligned part of writes go past the page cache as `mode` says, where the
    /// filesystem allows `O_DIRECT` (elsewhere, everything goes through the page cache as
    /// before). Whether it does changes nothing of what is stored or of the commit.
    pub fn with_direct(mut self, mode: DirectMode) -> Self {
        self.direct = Direct::open(&self.file, &self.path, mode);
        self
    }

    /// Whether writes may go past the page cache (the mode allows it and the filesystem took
    /// `O_DIRECT`).
    pub fn direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Bytes written past the page cache so far.
    pub fn direct_written(&self) -> u64 {
        self.direct.as_ref().map_or(0, Direct::written)
    }

    /// Bytes in the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the next write goes.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Bytes the running hash covers (always a prefix of the data while writes are in order).
    pub fn hashed(&self) -> u64 {
        if self.in_order {
            self.hasher.len()
        } else {
            0
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.hasher.algorithm()
    }

    /// Moves the write position; it may go anywhere from 0 to the end. Writing below the end
    /// replaces data and makes the digest be recomputed from the file.
    pub fn seek(&mut self, pos: u64) -> Result<()> {
        if pos > self.size {
            return Err(Error::State(format!(
                "cannot seek to {pos}: the upload holds {} bytes",
                self.size
            )));
        }
        self.pos = pos;
        Ok(())
    }

    /// Writes all of `data` at the position and hashes it. On an error (a full disk, say) the
    /// file is cut back to its previous size and the hash is unchanged, so the write either
    /// happened whole or not at all and the upload can go on once the cause is gone.
    pub fn write(&mut self, data: &[u8]) -> Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.in_order && self.pos > self.hasher.len() {
            // Resumed from an older state: hash the gap first so the new bytes follow it.
            self.hash_range(self.hasher.len(), self.pos)?;
        }
        if self.pos < self.hasher.len() {
            self.in_order = false;
        }
        let (pos, old_size) = (self.pos, self.size);
        let end = pos + data.len() as u64;
        let UploadFile {
            file,
            hasher,
            writeback,
            in_order,
            direct,
            ..
        } = self;
        let written = if *in_order && data.len() >= OVERLAP_THRESHOLD {
            let before = hasher.clone();
            let (written, ()) = crate::pool::pool(0).join(
                || write_and_pace(file, direct, writeback, data, pos, end),
                || hasher.update(data),
            );
            if written.is_err() {
                *hasher = before;
            }
            written
        } else {
            let written = write_and_pace(file, direct, writeback, data, pos, end);
            if written.is_ok() && *in_order {
                hasher.update(data);
            }
            written
        };
        if let Err(err) = written {
            if end > old_size {
                // Best effort: if this fails too, the next open sees the longer file and the
                // digest at commit still covers exactly what is on disk.
                let _ = self.file.set_len(old_size);
            }
            return Err(Error::io(&self.path, err));
        }
        self.pos = end;
        self.size = self.size.max(end);
        Ok(data.len())
    }

    /// Copies `fd` from its position to its end (or `limit` bytes) into the file at the write
    /// position, and returns the bytes copied.
    ///
    /// The kernel copies (`copy_file_range`, see `upload/copy.rs`) and each chunk is hashed as
    /// read back from this file, so the running hash covers exactly the bytes stored whatever
    /// the source does meanwhile. The file is named, so another process could cut it short:
    /// it is read back with `pread` rather than mapped, which would turn that into a `SIGBUS`.
    /// Chunks copied before an error stay written and hashed, as separate writes would.
    pub fn read_from_fd(&mut self, fd: i32, limit: Option<u64>) -> Result<u64> {
        if self.in_order && self.pos > self.hasher.len() {
            // Resumed from an older state: hash the gap first so the new bytes follow it.
            self.hash_range(self.hasher.len(), self.pos)?;
        }
        let UploadFile {
            file,
            path,
            size,
            pos,
            hasher,
            in_order,
            writeback,
            ..
        } = self;
        // Bytes landing below the hashed length replace hashed data: the running hash is then
        // dropped (recomputed from the file at the end), as for `write`.
        let hashing = *in_order && *pos == hasher.len();
        let result = copy_hashed(
            fd,
            file,
            *pos,
            limit,
            HashFrom::ReadBack,
            hashing.then_some(&mut *hasher),
            |n| {
                if !hashing {
                    *in_order = false;
                }
                *pos += n as u64;
                *size = (*size).max(*pos);
                if let Some(writeback) = writeback {
                    writeback.advance(file, *pos);
                }
            },
        );
        match result {
            Ok(copied) => Ok(copied),
            Err(CopyError { source_side, error }) => {
                // Whatever the failed call left past the data we account for goes.
                if file.metadata().is_ok_and(|m| m.len() > *size) {
                    let _ = file.set_len(*size);
                }
                let at = if source_side {
                    format!("<fd {fd}>")
                } else {
                    path.clone()
                };
                Err(Error::io(at, error))
            }
        }
    }

    /// Brings the hash up to the whole file, reading back what it does not cover yet (a gap
    /// after a resume from an older state, or everything after an out-of-order write).
    pub fn catch_up(&mut self) -> Result<()> {
        if !self.in_order {
            self.hasher = AnyHasher::new(self.hasher.algorithm());
            self.in_order = true;
        }
        if self.hasher.len() < self.size {
            self.hash_range(self.hasher.len(), self.size)?;
        }
        Ok(())
    }

    fn hash_range(&mut self, start: u64, end: u64) -> Result<()> {
        debug_assert_eq!(start, self.hasher.len());
        let hasher = &mut self.hasher;
        read_range(&self.file, &self.path, start, end, |chunk| {
            hasher.update(chunk)
        })
    }

    /// The hex digest of the whole file.
    pub fn hexdigest(&mut self) -> Result<String> {
        self.catch_up()?;
        Ok(self.hasher.hex())
    }

    /// The running hash's state and the offset it covers, or `None` when the algorithm has no
    /// saved state or the hash does not describe the data.
    pub fn marshal_state(&self) -> Option<(u64, Vec<u8>)> {
        if !self.in_order {
            return None;
        }
        self.hasher
            .marshal()
            .map(|state| (self.hasher.len(), state))
    }

    /// Makes the data durable (`fdatasync`: the data and the size needed to read it).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}

fn write_and_pace(
    file: &File,
    direct: &mut Option<Direct>,
    writeback: &mut Option<Writeback>,
    data: &[u8],
    pos: u64,
    end: u64,
) -> io::Result<()> {
    match direct.as_ref().and_then(|d| d.split(pos, data.len())) {
        Some(split) => {
            let (head, rest) = data.split_at(split.head);
            let (middle, tail) = rest.split_at(split.middle);
            let at = pos + split.head as u64;
            file.write_all_at(head, pos)?;
            if let Some(d) = direct.as_mut() {
                if let Err(error) = d.write(middle, at) {
                    if error.raw_os_error() != Some(libc::EINVAL) {
                        return Err(error);
                    }
                    // Refused after all (a filesystem that takes the flag but not the write):
                    // this write and the rest of the upload go through the page cache.
                    *direct = None;
                    file.write_all_at(middle, at)?;
                }
            }
            file.write_all_at(tail, at + split.middle as u64)?;
        }
        None => file.write_all_at(data, pos)?,
    }
    if let Some(writeback) = writeback {
        writeback.advance(file, end);
    }
    Ok(())
}

/// Feeds `file[start..end]` to `sink` in chunks; a file shorter than `end` is an error.
fn read_range(
    file: &File,
    path: &str,
    start: u64,
    end: u64,
    mut sink: impl FnMut(&[u8]),
) -> Result<()> {
    let mut buffer = vec![0u8; READ_CHUNK.min((end - start) as usize).max(1)];
    let mut at = start;
    while at < end {
        let want = buffer.len().min((end - at) as usize);
        let n = match file.read_at(&mut buffer[..want], at) {
            Ok(0) => {
                return Err(Error::io(
                    path,
                    io::Error::new(ErrorKind::UnexpectedEof, "the file ended early"),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        sink(&buffer[..n]);
        at += n as u64;
    }
    Ok(())
}

/// The hex digest of `path` from `offset` to its end.
pub fn hash_file(path: &str, algorithm: Algorithm, offset: u64) -> Result<String> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut hasher = AnyHasher::new(algorithm);
    if offset < size {
        read_range(&file, path, offset, size, |chunk| hasher.update(chunk))?;
    }
    Ok(hasher.hex())
}

/// Creates `dir` and its missing parents; returns those it created, outermost first.
fn create_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(path) = cursor {
        if path.as_os_str().is_empty() || path.is_dir() {
            break;
        }
        missing.push(path.to_path_buf());
        cursor = path.parent();
    }
    missing.reverse();
    for path in &missing {
        match fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(missing)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Syncs `dir` and the parent of each directory in `created` (the entries a new file and its
/// new directories need to survive a crash), all at once: concurrent `fsync`s share the journal
/// commits and device flushes that one after the other would each wait for. Every sync ends
/// before this returns; the first error is reported, with its directory.
fn sync_dirs(dir: &Path, created: &[PathBuf]) -> Result<()> {
    let mut dirs: Vec<&Path> = vec![dir];
    for parent in created.iter().filter_map(|made| made.parent()) {
        if !dirs.contains(&parent) {
            dirs.push(parent);
        }
    }
    let sync = |dir: &Path| fsync_dir(dir).map_err(|e| Error::io(dir.to_string_lossy(), e));
    let Some((first, rest)) = dirs.split_first() else {
        return Ok(());
    };
    if rest.is_empty() {
        return sync(first);
    }
    std::thread::scope(|scope| {
        let others: Vec<_> = rest
            .iter()
            .map(|dir| scope.spawn(move || sync(dir)))
            .collect();
        let mut result = sync(first);
        for other in others {
            let outcome = other
                .join()
                .unwrap_or_else(|_| Err(Error::State("a directory sync panicked".into())));
            result = result.and(outcome);
        }
        result
    })
}

/// Runs `a` here and `b` in a thread of its own, at once when `parallel`; both results.
fn both<A, B, RA, RB>(parallel: bool, a: A, b: B) -> (RA, Result<RB>)
where
    A: FnOnce() -> RA,
    B: FnOnce() -> Result<RB> + Send,
    RB: Send,
{
    if !parallel {
        let ra = a();
        return (ra, b());
    }
    std::thread::scope(|scope| {
        let other = scope.spawn(b);
        let ra = a();
        let rb = other
            .join()
            .unwrap_or_else(|_| Err(Error::State("a writer thread panicked".into())));
        (ra, rb)
    })
}

/// Writes `data` to `path` atomically: into `tmp` (beside it), then renamed over it. With
/// `durable`, the file, its directory and every directory created for it are synced, so the
/// file survives a crash once this returns.
pub fn write_file_atomic(path: &str, tmp: &str, data: &[u8], durable: bool) -> Result<()> {
    let target = Path::new(path);
    let dir = target.parent().unwrap_or(Path::new("/"));
    let created = create_dirs(dir).map_err(|e| Error::io(dir.to_string_lossy(), e))?;
    let write = || -> io::Result<()> {
        let file = OpenOptions::new().write(true).create_new(true).open(tmp)?;
        file.write_all_at(data, 0)?;
        if durable {
            file.sync_data()?;
        }
        Ok(())
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(tmp);
        return Err(Error::io(tmp, e));
    }
    if let Err(e) = fs::rename(tmp, target) {
        let _ = fs::remove_file(tmp);
        return Err(Error::io(path, e));
    }
    if durable {
        sync_dirs(dir, &created)?;
    }
    Ok(())
}

/// A unique name for a temporary file beside `path`.
fn temp_name(path: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{path}.{}-{nanos:x}-{n}.tmp", std::process::id())
}

/// Creates `dir` with one `mkdir` in the common case (its parent exists), falling back to
/// creating every missing parent. Returns the directories created.
fn make_dir(dir: &Path) -> io::Result<Vec<PathBuf>> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(vec![dir.to_path_buf()]),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(Vec::new()),
        Err(e) if e.kind() == ErrorKind::NotFound => create_dirs(dir),
        Err(e) => Err(e),
    }
}

/// Stores `data` as a new file at `path`, never showing a partial file there.
///
/// The file is written unnamed (`O_TMPFILE`) and linked into place, which costs one directory
/// operation instead of a create and a rename; where the filesystem lacks `O_TMPFILE`, a named
/// temporary file and a rename do the same. Returns `false`, writing nothing, when `path`
/// already exists: callers use this for content-addressed files, whose existing copy is the
/// same bytes. With `durable`, file and directories are synced before returning.
pub fn write_new_file(path: &str, data: &[u8], durable: bool) -> Result<bool> {
    let target = Path::new(path);
    let dir = target.parent().unwrap_or(Path::new("/"));
    // A concurrent delete of the directory (a repository unlinking what is being linked again)
    // makes the open or the link fail with ENOENT: make the directory again and retry, so the
    // write lands after the delete, as if the two had run one after the other.
    let mut attempt = 0;
    let (stored, created) = loop {
        let created = make_dir(dir).map_err(|e| Error::io(dir.to_string_lossy(), e))?;
        match link_new_file(dir, path, data, durable) {
            Err(e) if e.kind() == ErrorKind::NotFound && attempt < RACE_RETRIES => attempt += 1,
            Err(e) => return Err(Error::io(path, e)),
            Ok(Some(stored)) => break (stored, created),
            Ok(None) => {
                // No O_TMPFILE on this filesystem: a named temporary file and a rename.
                if target.exists() {
                    return Ok(false);
                }
                write_file_atomic(path, &temp_name(path), data, durable)?;
                break (true, created);
            }
        }
    };
    if durable && stored {
        sync_dirs(dir, &created)?;
    }
    Ok(stored)
}

/// How often [`write_new_file`] retries when a concurrent delete removes its directory.
const RACE_RETRIES: u32 = 5;

/// Opens a new unnamed file (`O_TMPFILE`) in `dir`, readable and writable; `None` when the
/// filesystem has no `O_TMPFILE`.
fn open_unnamed(dir: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Ok(file) => Ok(Some(file)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Gives the unnamed `file` the name `path`: `false` when `path` exists already.
fn link_unnamed(file: &File, path: &str) -> io::Result<bool> {
    // Linking by the descriptor's /proc entry needs no privilege, unlike AT_EMPTY_PATH.
    let source = format!("/proc/self/fd/{}\0", file.as_raw_fd());
    let dest = std::ffi::CString::new(path)
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: both strings are NUL-terminated and outlive the call; linkat reads them and the
    // descriptors, and writes nothing we own.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            source.as_ptr().cast(),
            libc::AT_FDCWD,
            dest.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.kind() == ErrorKind::AlreadyExists {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Writes `data` as an unnamed file in `dir` and links it at `path`. `Some(false)` when `path`
/// exists already, `None` when the filesystem has no `O_TMPFILE`.
fn link_new_file(dir: &Path, path: &str, data: &[u8], durable: bool) -> io::Result<Option<bool>> {
    let Some(file) = open_unnamed(dir)? else {
        return Ok(None);
    };
    file.write_all_at(data, 0)?;
    if durable {
        file.sync_data()?;
    }
    link_unnamed(&file, path).map(Some)
}

/// What [`put_blob`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The blob's hex digest.
    pub hex: String,
    /// Whether the blob's data was written (false: it was already stored).
    pub stored: bool,
}

/// Fills a path template: `{hex}` becomes the hex digest and `{hex2}` its first two characters.
fn fill(template: &str, hex: &str) -> String {
    template.replace("{hex2}", &hex[..2]).replace("{hex}", hex)
}

/// Stores a small blob whole, in one call: hashes `data`, writes it to the blob path unless the
/// blob is already stored, and writes the repository link (holding `<algorithm>:<hex>`).
///
/// The layout stays the Python layer's: `blob_template` and `link_template` are OS paths with
/// `{hex}` and `{hex2}` placeholders, made by `distblob.storage.paths`.
///
/// With `expected` (a hex digest), nothing is written unless `data` hashes to it: the outcome
/// then names the actual digest, with `stored` false, for the caller to report the mismatch.
pub fn put_blob(
    data: &[u8],
    algorithm: Algorithm,
    blob_template: &str,
    link_template: &str,
    durable: bool,
    expected: Option<&str>,
) -> Result<PutOutcome> {
    let mut hasher = AnyHasher::new(algorithm);
    hasher.update(data);
    let hex = hasher.hex();
    if expected.is_some_and(|expected| expected != hex) {
        return Ok(PutOutcome { hex, stored: false });
    }
    let blob = fill(blob_template, &hex);
    // Durable, the blob and a new link are written and synced at once, each waiting for its own
    // device flushes only: the call returns when both are durable. Should the blob fail, a
    // link made meanwhile is removed again, and one that names something else is replaced only
    // once the blob is stored (a crash between the two can leave a new link to no blob, which
    // reads as an unknown blob, as in distribution).
    let (stored, linked) = both(
        durable,
        || {
            if fs::metadata(&blob).is_ok() {
                Ok(false)
            } else {
                write_new_file(&blob, data, durable)
            }
        },
        || new_link(link_template, algorithm, &hex, durable),
    );
    let stored = match stored {
        Ok(stored) => stored,
        Err(e) => {
            if let Ok(Link::Created(link)) = linked {
                let _ = fs::remove_file(link);
            }
            return Err(e);
        }
    };
    settle_link(linked?, durable)?;
    Ok(PutOutcome { hex, stored })
}

/// What [`new_link`] found or made.
enum Link {
    /// Written by this call, at this path.
    Created(String),
    /// Already there, naming this blob.
    Kept,
    /// Already there at this path, naming something else: to be replaced by this content.
    Other(String, String),
}

/// Writes the repository link naming blob `hex` (`<algorithm>:<hex>`) if there is none; a link
/// that is there already is left as it is (see [`Link`]).
fn new_link(link_template: &str, algorithm: Algorithm, hex: &str, durable: bool) -> Result<Link> {
    let link = fill(link_template, hex);
    let content = format!("{}:{hex}", algorithm.name());
    if write_new_file(&link, content.as_bytes(), durable)? {
        return Ok(Link::Created(link));
    }
    if fs::read(&link).map_err(|e| Error::io(&link, e))? == content.as_bytes() {
        // Linked again now: the link's time says so, as a rewritten link's would. An online
        // garbage collection keeps blobs whose links are younger than its grace period.
        touch(&link).map_err(|e| Error::io(&link, e))?;
        return Ok(Link::Kept);
    }
    Ok(Link::Other(link, content))
}

/// Sets a file's modification time to now.
fn touch(path: &str) -> io::Result<()> {
    let path = std::ffi::CString::new(path)
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: the path is NUL-terminated and outlives the call; a null `times` means "now".
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), std::ptr::null(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Replaces a link [`new_link`] found naming something else; nothing for the other outcomes.
fn settle_link(found: Link, durable: bool) -> Result<()> {
    if let Link::Other(link, content) = found {
        write_file_atomic(&link, &temp_name(&link), content.as_bytes(), durable)?;
    }
    Ok(())
}

/// Writes the repository link naming blob `hex`, replacing a link there that names anything
/// else.
fn write_link(link_template: &str, algorithm: Algorithm, hex: &str, durable: bool) -> Result<()> {
    settle_link(new_link(link_template, algorithm, hex, durable)?, durable)
}

/// Stores the rest of the file `src` (from its position to its end) as a blob in one call, and
/// links it like [`put_blob`]; returns what was done and the blob's size, or `None`, having read
/// nothing, when the filesystem has no `O_TMPFILE` (the caller then reads the file itself).
///
/// The bytes go in the kernel (`copy_file_range`) into an unnamed file beside the blobs, hashed
/// as stored (through a memory map: no one else can open the unnamed file); only then does the
/// blob get a name, by `linkat`. So per byte there is one kernel copy and one hash pass, and an
/// interrupted call leaves nothing behind. With `expected`, the size the caller saw when it
/// opened the source, a source that grew or shrank while it was copied is refused (an `Io`
/// error with no path) and nothing is stored; a source rewritten in place at the same size is
/// stored as it was read, and its digest describes the bytes stored whatever happened.
pub fn put_blob_fd(
    src: RawFd,
    expected: Option<u64>,
    algorithm: Algorithm,
    blob_template: &str,
    link_template: &str,
    durable: bool,
) -> Result<Option<(PutOutcome, u64)>> {
    let staging = Path::new(blob_template.split("/{").next().unwrap_or(blob_template));
    if staging.as_os_str().len() == blob_template.len() {
        return Err(Error::State(format!(
            "the blob template {blob_template:?} has no {{hex}} part"
        )));
    }
    let staging_name = || staging.to_string_lossy();
    // Directories made here and below are synced with the blob's, when durable: the blob's path
    // must survive a crash, not just its data.
    let mut created = Vec::new();
    let file = match open_unnamed(staging) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            created = create_dirs(staging).map_err(|e| Error::io(staging_name(), e))?;
            open_unnamed(staging)
        }
        other => other,
    }
    .map_err(|e| Error::io(staging_name(), e))?;
    let Some(file) = file else {
        return Ok(None);
    };

    let mut hasher = AnyHasher::new(algorithm);
    let mut writeback = durable.then_some(Writeback {
        started: 0,
        paced: true,
    });
    let mut end = 0u64;
    let copied = copy_hashed(
        src,
        &file,
        0,
        None,
        HashFrom::Mapped,
        Some(&mut hasher),
        |n| {
            end += n as u64;
            if let Some(writeback) = &mut writeback {
                writeback.advance(&file, end);
            }
        },
    )
    .map_err(|CopyError { source_side, error }| {
        let at = if source_side {
            format!("<fd {src}>")
        } else {
            staging_name().into_owned()
        };
        Error::io(at, error)
    })?;
    if let Some(expected) = expected.filter(|&expected| expected != copied) {
        return Err(Error::io(
            "",
            io::Error::other(format!(
                "the file changed size while it was read ({expected} bytes when opened, \
                 {copied} read); nothing stored"
            )),
        ));
    }
    if durable {
        file.sync_data().map_err(|e| Error::io(staging_name(), e))?;
    }

    let hex = hasher.hex();
    let blob = fill(blob_template, &hex);
    let target = Path::new(&blob);
    let dir = target.parent().unwrap_or(Path::new("/"));
    let stored = if fs::metadata(&blob).is_ok() {
        false
    } else {
        // A concurrent delete of the directory makes the link fail with ENOENT: make it again
        // and retry, as `write_new_file` does.
        let mut attempt = 0;
        loop {
            created.extend(make_dir(dir).map_err(|e| Error::io(dir.to_string_lossy(), e))?);
            match link_unnamed(&file, &blob) {
                Err(e) if e.kind() == ErrorKind::NotFound && attempt < RACE_RETRIES => attempt += 1,
                Err(e) => return Err(Error::io(&blob, e)),
                Ok(stored) => break stored,
            }
        }
    };
    // The blob is in place: its directories are synced while the link is written.
    let (synced, linked) = both(
        durable,
        || {
            if durable && stored {
                sync_dirs(dir, &created)
            } else {
                Ok(())
            }
        },
        || write_link(link_template, algorithm, &hex, durable),
    );
    synced?;
    linked?;
    Ok(Some((PutOutcome { hex, stored }, copied)))
}

/// Flushes the whole filesystem holding `path` (`syncfs`): one call that makes every write made
/// so far durable, for batch jobs that skip per-blob syncs.
pub fn sync_filesystem(path: &str) -> Result<()> {
    let dir = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open during the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(Error::io(path, io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha2::Sha256;

    fn sha256_hex(data: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(data);
        hex::encode(h.finalize())
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    #[test]
    fn writeback_starts_each_complete_window_in_every_mode() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data((2 * WRITEBACK_WINDOW + 5) as usize);
        for (name, mode) in [
            ("off", WritebackMode::Off),
            ("started", WritebackMode::Started),
            ("paced", WritebackMode::Paced),
        ] {
            let path = dir.path().join(name);
            let path = path.to_str().unwrap();
            let mut up = UploadFile::open(path, true, Algorithm::Sha256, None, mode).unwrap();
            for chunk in bytes.chunks(3 << 20) {
                up.write(chunk).unwrap();
            }
            let started = up.writeback.as_ref().map(|w| (w.started, w.paced));
            let expected = match mode {
                WritebackMode::Off => None,
                WritebackMode::Started => Some((2 * WRITEBACK_WINDOW, false)),
                WritebackMode::Paced => Some((2 * WRITEBACK_WINDOW, true)),
            };
            assert_eq!(started, expected, "{name}");
            up.sync().unwrap();
            assert_eq!(fs::read(path).unwrap(), bytes, "{name}");
            assert_eq!(up.hexdigest().unwrap(), sha256_hex(&bytes), "{name}");
        }
    }

    /// Whether `dir`'s filesystem takes an aligned `O_DIRECT` write (asked of the kernel
    /// directly, not through the code under test).
    fn takes_o_direct(dir: &Path) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        let probe = dir.join("probe");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe);
        let mut block = vec![0u8; 2 * DIRECT_ALIGN];
        let start = block.as_ptr().align_offset(DIRECT_ALIGN);
        let ok = file.is_ok_and(|f| {
            f.write_all_at(&block[start..start + DIRECT_ALIGN], 0)
                .is_ok()
        });
        block.clear();
        let _ = fs::remove_file(probe);
        ok
    }

    /// Writes `bytes` in `pieces` (lengths, cycled) from buffers at every memory alignment.
    fn write_in_pieces(up: &mut UploadFile, bytes: &[u8], pieces: &[usize]) {
        let mut at = 0;
        for (i, len) in pieces.iter().cycle().enumerate() {
            if at == bytes.len() {
                break;
            }
            let len = (*len).min(bytes.len() - at);
            // A copy at offset i % 7 of a fresh buffer: aligned or not, by turns.
            let shift = i % 7;
            let mut buffer = vec![0u8; len + shift];
            buffer[shift..].copy_from_slice(&bytes[at..at + len]);
            up.write(&buffer[shift..]).unwrap();
            at += len;
        }
    }

    #[test]
    fn direct_writes_store_the_same_bytes_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let direct_ok = takes_o_direct(dir.path());
        let bytes = data((5 << 20) + 12_345);
        let pieces = [1 << 20, 100, (1 << 20) + 4097, 3, 2 << 20, 8191];
        for (name, mode) in [("on", DirectMode::On), ("off", DirectMode::Off)] {
            let path = dir.path().join(name);
            let path = path.to_str().unwrap();
            let mut up =
                UploadFile::open(path, true, Algorithm::Sha256, None, WritebackMode::Paced)
                    .unwrap()
                    .with_direct(mode);
            assert_eq!(up.direct(), mode == DirectMode::On && direct_ok, "{name}");
            write_in_pieces(&mut up, &bytes, &pieces);
            up.sync().unwrap();
            assert_eq!(up.direct_written() > 0, up.direct(), "{name}");
            assert_eq!(fs::read(path).unwrap(), bytes, "{name}");
            assert_eq!(up.hexdigest().unwrap(), sha256_hex(&bytes), "{name}");
        }
    }

    #[test]
    fn direct_writes_below_the_end_replace_data_and_the_digest_follows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let path = path.to_str().unwrap();
        let mut bytes = data(3 << 20);
        let mut up = UploadFile::open(path, true, Algorithm::Sha256, None, WritebackMode::Off)
            .unwrap()
            .with_direct(DirectMode::On);
        up.write(&bytes).unwrap();
        // Rewrite an unaligned stretch in the middle (a client sending a chunk again).
        let patch: Vec<u8> = (0..(1 << 20) + 77).map(|i| (i % 251) as u8).collect();
        bytes[5000..5000 + patch.len()].copy_from_slice(&patch);
        up.seek(5000).unwrap();
        up.write(&patch).unwrap();
        up.sync().unwrap();
        assert_eq!(fs::read(path).unwrap(), bytes);
        assert_eq!(up.hexdigest().unwrap(), sha256_hex(&bytes));
    }

    #[test]
    fn direct_auto_leaves_small_uploads_and_small_writes_in_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let direct_ok = takes_o_direct(dir.path());
        let small = data(8 << 20);
        let path = dir.path().join("small");
        let path = path.to_str().unwrap();
        let mut up = UploadFile::open(path, true, Algorithm::Sha256, None, WritebackMode::Paced)
            .unwrap()
            .with_direct(DirectMode::Auto);
        write_in_pieces(&mut up, &small, &[1 << 20]);
        assert_eq!(up.direct_written(), 0);
        assert_eq!(up.hexdigest().unwrap(), sha256_hex(&small));

        let large = data(direct::AUTO_FROM as usize + (4 << 20) + 10);
        let path = dir.path().join("large");
        let path = path.to_str().unwrap();
        let mut up = UploadFile::open(path, true, Algorithm::Sha256, None, WritebackMode::Paced)
            .unwrap()
            .with_direct(DirectMode::Auto);
        // Small writes past the threshold stay in the page cache; large ones do not.
        write_in_pieces(
            &mut up,
            &large[..direct::AUTO_FROM as usize + 4096],
            &[1 << 20],
        );
        let tiny = direct::AUTO_MIN / 2;
        let at = direct::AUTO_FROM as usize + 4096;
        up.write(&large[at..at + tiny]).unwrap();
        assert_eq!(up.direct_written(), 0);
        up.write(&large[at + tiny..]).unwrap();
        assert_eq!(up.direct_written() > 0, direct_ok);
        up.sync().unwrap();
        assert_eq!(fs::read(path).unwrap(), large);
        assert_eq!(up.hexdigest().unwrap(), sha256_hex(&large));
    }

    #[test]
    fn direct_falls_back_where_the_filesystem_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        if !takes_o_direct(dir.path()) {
            // Refused at open (tmpfs before Linux 6.6, some FUSE and network filesystems).
            let path = dir.path().join("refused");
            let up = UploadFile::open(
                path.to_str().unwrap(),
                true,
                Algorithm::Sha256,
                None,
                WritebackMode::Off,
            )
            .unwrap()
            .with_direct(DirectMode::On);
            assert!(!up.direct());
            return;
        }
        let bytes = data(3 << 20);
        for (name, errno, goes_on) in [("einval", libc::EINVAL, true), ("eio", libc::EIO, false)] {
            let path = dir.path().join(name);
            let path = path.to_str().unwrap();
            let mut up =
                UploadFile::open(path, true, Algorithm::Sha256, None, WritebackMode::Paced)
                    .unwrap()
                    .with_direct(DirectMode::On);
            up.write(&bytes[..1 << 20]).unwrap();
            assert!(up.direct_written() > 0);
            up.direct.as_mut().unwrap().fail_with = Some(errno);
            let result = up.write(&bytes[1 << 20..]);
            if goes_on {
                // Refused at a write: that write and the rest go through the page cache.
                result.unwrap();
                assert!(!up.direct());
            } else {
                // Any other error is the write's error: all or nothing, as without O_DIRECT.
                assert!(result.is_err());
                assert_eq!((up.size(), up.hashed()), (1 << 20, 1 << 20));
                assert_eq!(fs::metadata(path).unwrap().len(), 1 << 20);
                up.direct.as_mut().unwrap().fail_with = None;
                up.write(&bytes[1 << 20..]).unwrap();
            }
            up.sync().unwrap();
            assert_eq!(fs::read(path).unwrap(), bytes, "{name}");
            assert_eq!(up.hexdigest().unwrap(), sha256_hex(&bytes), "{name}");
        }
    }

    #[test]
    fn writes_land_on_disk_and_in_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up/data");
        let path = path.to_str().unwrap();
        let bytes = data(3 << 20);
        let mut up =
            UploadFile::open(path, true, Algorithm::Sha256, None, WritebackMode::Paced).unwrap();
        up.write(&bytes[..100]).unwrap();
        up.write(&bytes[100..(1 << 20)]).unwrap();
        up.write(&bytes[1 << 20..]).unwrap();
        up.sync().unwrap();
        assert_eq!(up.size(), bytes.len() as u64);
        assert_eq!(fs::read(path).unwrap(), bytes);
        assert_eq!(up.hexdigest().unwrap(), sha256_hex(&bytes));
        assert!(UploadFile::open(path, true, Algorithm::Sha256, None, WritebackMode::Off).is_err());
    }

    #[test]
    fn resume_from_a_state_and_from_an_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let path = path.to_str().unwrap();
        let bytes = data(1_000_000);
        let mut up =
            UploadFile::open(path, true, Algorithm::Sha256, None, WritebackMode::Off).unwrap();
        up.write(&bytes[..300_000]).unwrap();
        let (offset, early) = up.marshal_state().unwrap();
        assert_eq!(offset, 300_000);
        up.write(&bytes[300_000..600_000]).unwrap();
        drop(up);

        // The newest state is older than the data: the gap is hashed on the next write.
        let mut up = UploadFile::open(
            path,
            false,
            Algorithm::Sha256,
            Some(&early),
            WritebackMode::Off,
        )
        .unwrap();
        assert_eq!((up.size(), up.hashed()), (600_000, 300_000));
        up.write(&bytes[600_000..]).unwrap();
        assert_eq!(up.hexdigest().unwrap(), sha256_hex(&bytes));

        let mut too_far = Sha256::new();
        too_far.update(&data(2_000_000));
        let err = UploadFile::open(
            path,
            false,
            Algorithm::Sha256,
            Some(&too_far.marshal()),
            WritebackMode::Off,
        )
        .unwrap_err();
        assert!(matches!(err, Error::HashState(_)));
    }

    #[test]
    fn an_out_of_order_write_is_rehashed_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let path = path.to_str().unwrap();
        let mut up =
            UploadFile::open(path, true, Algorithm::Sha512, None, WritebackMode::Started).unwrap();
        up.write(b"hello world").unwrap();
        up.seek(0).unwrap();
        up.write(b"HELLO").unwrap();
        assert!(up.marshal_state().is_none());
        assert!(up.seek(12).is_err());
        let mut want = crate::hash::sha2::Sha512::new();
        want.update(b"HELLO world");
        assert_eq!(up.hexdigest().unwrap(), hex::encode(want.finalize()));
    }

    #[test]
    fn atomic_write_and_hash_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c/data");
        let tmp = dir.path().join("a/b/c/data.tmp");
        write_file_atomic(path.to_str().unwrap(), tmp.to_str().unwrap(), b"abc", true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"abc");
        assert!(!tmp.exists());
        assert_eq!(
            hash_file(path.to_str().unwrap(), Algorithm::Sha256, 0).unwrap(),
            sha256_hex(b"abc")
        );
        sync_filesystem(dir.path().to_str().unwrap()).unwrap();
    }

    #[test]
    fn put_blob_stores_once_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let blob = format!("{root}/blobs/sha256/{{hex2}}/{{hex}}/data");
        let link = format!("{root}/repo/_layers/sha256/{{hex}}/link");
        let first = put_blob(b"abc", Algorithm::Sha256, &blob, &link, true, None).unwrap();
        assert!(first.stored);
        assert_eq!(first.hex, sha256_hex(b"abc"));
        let again = put_blob(b"abc", Algorithm::Sha256, &blob, &link, false, None).unwrap();
        assert!(!again.stored);
        let hex = &first.hex;
        let data = fs::read(format!("{root}/blobs/sha256/{}/{hex}/data", &hex[..2])).unwrap();
        assert_eq!(data, b"abc");
        let linked = fs::read(format!("{root}/repo/_layers/sha256/{hex}/link")).unwrap();
        assert_eq!(linked, format!("sha256:{hex}").as_bytes());
        assert!(!write_new_file(
            &format!("{root}/repo/_layers/sha256/{hex}/link"),
            b"x",
            false
        )
        .unwrap());
        let leftovers = fs::read_dir(format!("{root}/blobs/sha256/{}/{hex}", &hex[..2]))
            .unwrap()
            .count();
        assert_eq!(leftovers, 1);
    }

    #[test]
    fn put_blob_of_a_linked_blob_renews_the_link_time() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let blob = format!("{root}/blobs/sha256/{{hex2}}/{{hex}}/data");
        let link = format!("{root}/repo/_layers/sha256/{{hex}}/link");
        let hex = put_blob(b"abc", Algorithm::Sha256, &blob, &link, false, None)
            .unwrap()
            .hex;
        let path = format!("{root}/repo/_layers/sha256/{hex}/link");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        put_blob(b"abc", Algorithm::Sha256, &blob, &link, false, None).unwrap();
        let renewed = fs::metadata(&path).unwrap().modified().unwrap();
        assert!(renewed > old + std::time::Duration::from_secs(86_400 * 365));
    }

    #[test]
    fn put_blob_with_a_wrong_expected_digest_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let blob = format!("{root}/blobs/sha256/{{hex2}}/{{hex}}/data");
        let link = format!("{root}/repo/_layers/sha256/{{hex}}/link");
        let wrong = "0".repeat(64);
        let outcome = put_blob(b"abc", Algorithm::Sha256, &blob, &link, true, Some(&wrong));
        let outcome = outcome.unwrap();
        assert_eq!(outcome.hex, sha256_hex(b"abc"));
        assert!(!outcome.stored);
        assert_eq!(fs::read_dir(root).unwrap().count(), 0);
        let right = sha256_hex(b"abc");
        let outcome = put_blob(b"abc", Algorithm::Sha256, &blob, &link, true, Some(&right));
        assert!(outcome.unwrap().stored);
    }

    #[test]
    fn a_durable_put_blob_that_fails_leaves_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        fs::write(format!("{root}/blobs"), b"a file where a directory must go").unwrap();
        let blob = format!("{root}/blobs/sha256/{{hex2}}/{{hex}}/data");
        let link = format!("{root}/repo/_layers/sha256/{{hex}}/link");
        assert!(put_blob(b"abc", Algorithm::Sha256, &blob, &link, true, None).is_err());
        let hex = sha256_hex(b"abc");
        assert!(!Path::new(&format!("{root}/repo/_layers/sha256/{hex}/link")).exists());
        // A link that was there before is left as it was.
        fs::create_dir_all(format!("{root}/repo/_layers/sha256/{hex}")).unwrap();
        fs::write(
            format!("{root}/repo/_layers/sha256/{hex}/link"),
            b"sha256:old",
        )
        .unwrap();
        assert!(put_blob(b"abc", Algorithm::Sha256, &blob, &link, true, None).is_err());
        let kept = fs::read(format!("{root}/repo/_layers/sha256/{hex}/link")).unwrap();
        assert_eq!(kept, b"sha256:old");
    }

    #[test]
    fn sync_dirs_syncs_each_directory_once_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = a.join("b");
        fs::create_dir_all(&b).unwrap();
        sync_dirs(&b, &[a.clone(), b.clone()]).unwrap();
        let missing = dir.path().join("gone");
        let err = sync_dirs(&b, &[missing.join("x"), a.clone()]).unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
    }

    #[test]
    fn read_from_fd_copies_and_keeps_the_hash_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let bytes = data(COPY_CHUNK + 5_000);
        fs::write(&src_path, &bytes).unwrap();
        let path = dir.path().join("up/data");
        let path = path.to_str().unwrap();
        let mut up =
            UploadFile::open(path, true, Algorithm::Sha256, None, WritebackMode::Paced).unwrap();
        up.write(&bytes[..10]).unwrap();
        let src = File::open(&src_path).unwrap();
        // SAFETY: lseek on a descriptor `src` owns.
        unsafe { libc::lseek(src.as_raw_fd(), 10, libc::SEEK_SET) };
        assert_eq!(up.read_from_fd(src.as_raw_fd(), Some(100)).unwrap(), 100);
        assert_eq!(up.hashed(), 110);
        let rest = up.read_from_fd(src.as_raw_fd(), None).unwrap();
        assert_eq!(rest, bytes.len() as u64 - 110);
        assert_eq!(
            (up.size(), up.position()),
            (bytes.len() as u64, bytes.len() as u64)
        );
        assert_eq!(up.marshal_state().unwrap().0, bytes.len() as u64);
        assert_eq!(up.hexdigest().unwrap(), sha256_hex(&bytes));
        assert_eq!(fs::read(path).unwrap(), bytes);

        // Below the hashed length the running hash is dropped and recomputed from the file.
        up.seek(0).unwrap();
        let patch = dir.path().join("patch");
        fs::write(&patch, b"XYZ").unwrap();
        let patch = File::open(&patch).unwrap();
        assert_eq!(up.read_from_fd(patch.as_raw_fd(), None).unwrap(), 3);
        assert!(up.marshal_state().is_none());
        let mut want = bytes.clone();
        want[..3].copy_from_slice(b"XYZ");
        assert_eq!(up.hexdigest().unwrap(), sha256_hex(&want));
        assert_eq!(up.size(), bytes.len() as u64);
    }

    #[test]
    fn put_blob_fd_stores_once_links_and_refuses_a_changed_size() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let root = root.to_str().unwrap();
        let blob = format!("{root}/blobs/sha256/{{hex2}}/{{hex}}/data");
        let link = format!("{root}/repo/_layers/sha256/{{hex}}/link");
        let src_path = dir.path().join("src");
        let bytes = data(2 * COPY_CHUNK + 1);
        fs::write(&src_path, &bytes).unwrap();
        let put = |expected: Option<u64>, durable: bool| {
            let src = File::open(&src_path).unwrap();
            put_blob_fd(
                src.as_raw_fd(),
                expected,
                Algorithm::Sha256,
                &blob,
                &link,
                durable,
            )
        };
        let (first, size) = put(Some(bytes.len() as u64), true).unwrap().unwrap();
        assert_eq!((first.stored, size), (true, bytes.len() as u64));
        assert_eq!(first.hex, sha256_hex(&bytes));
        let hex = &first.hex;
        let stored = format!("{root}/blobs/sha256/{}/{hex}/data", &hex[..2]);
        assert_eq!(fs::read(&stored).unwrap(), bytes);
        let linked = fs::read(format!("{root}/repo/_layers/sha256/{hex}/link")).unwrap();
        assert_eq!(linked, format!("sha256:{hex}").as_bytes());
        let (again, _) = put(None, false).unwrap().unwrap();
        assert!(!again.stored);

        // The source is not the size the caller saw: an error, and nothing new stored.
        fs::write(&src_path, b"grown or shrunk").unwrap();
        let err = put(Some(bytes.len() as u64), false).unwrap_err();
        assert!(err.to_string().contains("changed size"), "{err}");
        let blobs = fs::read_dir(format!("{root}/blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(blobs, 1);

        // An empty file is a blob too.
        fs::write(&src_path, b"").unwrap();
        let (empty, size) = put(Some(0), false).unwrap().unwrap();
        assert_eq!((empty.hex.as_str(), size), (sha256_hex(b"").as_str(), 0));
    }
}
