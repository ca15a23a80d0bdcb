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

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

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

/// The state of early writeback: how far writeback has been started.
#[derive(Debug, Default)]
struct Writeback {
    started: u64,
}

impl Writeback {
    /// Starts writeback of each window that `end` completed, and waits for the one before it.
    /// These calls only schedule and pace I/O; errors surface at the commit's `fsync`, so they
    /// are ignored here.
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
                if self.started >= WRITEBACK_WINDOW {
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
}

impl UploadFile {
    /// Opens the upload data at `path`.
    ///
    /// With `create`, the file must not exist yet (and its directory is created); otherwise it
    /// must exist. `state`, a marshalled hasher state of `algorithm`, resumes the hash at the
    /// state's length without rereading what it covers; a state claiming more bytes than the
    /// file holds is refused. `writeback` starts writing the page cache to disk early, for
    /// uploads that will be committed durably.
    pub fn open(
        path: &str,
        create: bool,
        algorithm: Algorithm,
        state: Option<&[u8]>,
        writeback: bool,
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
        let writeback = writeback.then(|| Writeback {
            // Whatever is already in the file was written by an earlier writer; pace only the
            // bytes from here on.
            started: size - size % WRITEBACK_WINDOW,
        });
        Ok(UploadFile {
            file,
            path: path.to_owned(),
            size,
            pos: size,
            hasher,
            in_order: true,
            writeback,
        })
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
            ..
        } = self;
        let written = if *in_order && data.len() >= OVERLAP_THRESHOLD {
            let before = hasher.clone();
            let (written, ()) = crate::pool::pool(0).join(
                || write_and_pace(file, writeback, data, pos, end),
                || hasher.update(data),
            );
            if written.is_err() {
                *hasher = before;
            }
            written
        } else {
            let written = write_and_pace(file, writeback, data, pos, end);
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

    /// Reads `fd` to its end (or `limit` bytes) and writes what it reads. Returns the bytes
    /// copied.
    pub fn read_from_fd(&mut self, fd: i32, limit: Option<u64>) -> Result<u64> {
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut copied = 0u64;
        loop {
            let want = match limit {
                Some(limit) if limit - copied < READ_CHUNK as u64 => (limit - copied) as usize,
                _ => READ_CHUNK,
            };
            if want == 0 {
                return Ok(copied);
            }
            // SAFETY: `buffer` has at least `want` writable bytes and outlives the call; `fd`
            // is only read from, and a bad descriptor makes read fail with EBADF.
            let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), want) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io(format!("<fd {fd}>"), err));
            }
            if n == 0 {
                return Ok(copied);
            }
            self.write(&buffer[..n as usize])?;
            copied += n as u64;
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
    writeback: &mut Option<Writeback>,
    data: &[u8],
    pos: u64,
    end: u64,
) -> io::Result<()> {
    file.write_all_at(data, pos)?;
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
        fsync_dir(dir).map_err(|e| Error::io(dir.to_string_lossy(), e))?;
        for made in &created {
            if let Some(parent) = made.parent() {
                fsync_dir(parent).map_err(|e| Error::io(parent.to_string_lossy(), e))?;
            }
        }
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
        fsync_dir(dir).map_err(|e| Error::io(dir.to_string_lossy(), e))?;
        for made in &created {
            if let Some(parent) = made.parent() {
                fsync_dir(parent).map_err(|e| Error::io(parent.to_string_lossy(), e))?;
            }
        }
    }
    Ok(stored)
}

/// How often [`write_new_file`] retries when a concurrent delete removes its directory.
const RACE_RETRIES: u32 = 5;

/// Writes `data` as an unnamed file in `dir` and links it at `path`. `Some(false)` when `path`
/// exists already, `None` when the filesystem has no `O_TMPFILE`.
fn link_new_file(dir: &Path, path: &str, data: &[u8], durable: bool) -> io::Result<Option<bool>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match OpenOptions::new()
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Ok(file) => file,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    file.write_all_at(data, 0)?;
    if durable {
        file.sync_data()?;
    }
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
        return Ok(Some(true));
    }
    let err = io::Error::last_os_error();
    if err.kind() == ErrorKind::AlreadyExists {
        Ok(Some(false))
    } else {
        Err(err)
    }
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
pub fn put_blob(
    data: &[u8],
    algorithm: Algorithm,
    blob_template: &str,
    link_template: &str,
    durable: bool,
) -> Result<PutOutcome> {
    let mut hasher = AnyHasher::new(algorithm);
    hasher.update(data);
    let hex = hasher.hex();
    let blob = fill(blob_template, &hex);
    let stored = if fs::metadata(&blob).is_ok() {
        false
    } else {
        write_new_file(&blob, data, durable)?
    };
    let link = fill(link_template, &hex);
    let content = format!("{}:{hex}", algorithm.name());
    if !write_new_file(&link, content.as_bytes(), durable)? {
        // A link is there already: keep it if it names this blob, else replace it.
        if fs::read(&link).map_err(|e| Error::io(&link, e))? != content.as_bytes() {
            write_file_atomic(&link, &temp_name(&link), content.as_bytes(), durable)?;
        }
    }
    Ok(PutOutcome { hex, stored })
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
    fn writes_land_on_disk_and_in_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up/data");
        let path = path.to_str().unwrap();
        let bytes = data(3 << 20);
        let mut up = UploadFile::open(path, true, Algorithm::Sha256, None, true).unwrap();
        up.write(&bytes[..100]).unwrap();
        up.write(&bytes[100..(1 << 20)]).unwrap();
        up.write(&bytes[1 << 20..]).unwrap();
        up.sync().unwrap();
        assert_eq!(up.size(), bytes.len() as u64);
        assert_eq!(fs::read(path).unwrap(), bytes);
        assert_eq!(up.hexdigest().unwrap(), sha256_hex(&bytes));
        assert!(UploadFile::open(path, true, Algorithm::Sha256, None, false).is_err());
    }

    #[test]
    fn resume_from_a_state_and_from_an_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let path = path.to_str().unwrap();
        let bytes = data(1_000_000);
        let mut up = UploadFile::open(path, true, Algorithm::Sha256, None, false).unwrap();
        up.write(&bytes[..300_000]).unwrap();
        let (offset, early) = up.marshal_state().unwrap();
        assert_eq!(offset, 300_000);
        up.write(&bytes[300_000..600_000]).unwrap();
        drop(up);

        // The newest state is older than the data: the gap is hashed on the next write.
        let mut up = UploadFile::open(path, false, Algorithm::Sha256, Some(&early), false).unwrap();
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
            false,
        )
        .unwrap_err();
        assert!(matches!(err, Error::HashState(_)));
    }

    #[test]
    fn an_out_of_order_write_is_rehashed_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let path = path.to_str().unwrap();
        let mut up = UploadFile::open(path, true, Algorithm::Sha512, None, false).unwrap();
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
        let first = put_blob(b"abc", Algorithm::Sha256, &blob, &link, true).unwrap();
        assert!(first.stored);
        assert_eq!(first.hex, sha256_hex(b"abc"));
        let again = put_blob(b"abc", Algorithm::Sha256, &blob, &link, false).unwrap();
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
}
