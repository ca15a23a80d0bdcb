//! Writing the large middle of an upload's writes past the page cache (`O_DIRECT`).
//!
//! On the 2-core VMs this project is measured on, a write into the page cache costs more CPU
//! than hashing the same bytes: every page taken is zeroed and, where the host reclaims freed
//! memory, faulted in from the host again (`benches/pagecache.py` measures both paths). An
//! `O_DIRECT` write goes from the buffer to the device without taking page-cache pages. Object
//! stores write large objects this way (MinIO, for one, with a switch to turn it off).
//!
//! `O_DIRECT` needs the file offset, the length and the memory to be aligned to the device's
//! logical block size. [`DIRECT_ALIGN`] (4 KiB) suits 512-byte and 4 KiB devices alike. Each
//! write is split: the head up to the first aligned offset and the tail after the last one go
//! through the page cache on the upload's ordinary descriptor; the aligned middle goes through a
//! second descriptor opened with `O_DIRECT` on the same file, straight from the caller's buffer
//! when it happens to be aligned, else from an aligned staging buffer. Page-cache pages and direct
//! writes never cover the same bytes at once, and the kernel writes back and drops any cached
//! page a direct write covers, so reads (the digest's read-back, a GET) see the bytes written.
//!
//! Durability is unchanged: a direct write is on the device but, like a page-cache write, not
//! safe from a power cut until the commit's `fdatasync`, which also writes the file's size and
//! flushes the device's cache.
//!
//! Where `O_DIRECT` is refused (tmpfs, some FUSE and network filesystems say `EINVAL` at open or
//! at the first write), the upload goes on through the page cache, as without it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;

/// The alignment of a direct write's offset, length and memory.
pub const DIRECT_ALIGN: usize = 4096;

/// In `auto`, the first bytes of an upload go through the page cache: small blobs (configs,
/// manifests, small layers) are read soon after they are pushed and stay cached for that, and
/// their commit's `fdatasync` is cheap anyway.
pub const AUTO_FROM: u64 = 32 << 20;

/// In `auto`, a write whose aligned middle is smaller than this goes through the page cache: a
/// direct write waits for the device, which only pays off for large pieces.
pub const AUTO_MIN: usize = 256 << 10;

/// The most staged at once for a caller's buffer that is not aligned.
const STAGING: usize = 4 << 20;

/// Which writes of an upload go past the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectMode {
    /// None: everything through the page cache.
    Off,
    /// The aligned middle of writes past the upload's first [`AUTO_FROM`] bytes, when it is at
    /// least [`AUTO_MIN`] bytes.
    Auto,
    /// The aligned middle of every write.
    On,
}

impl DirectMode {
    /// `off`, `auto` or `on`.
    pub fn parse(name: &str) -> Option<DirectMode> {
        match name {
            "off" => Some(DirectMode::Off),
            "auto" => Some(DirectMode::Auto),
            "on" => Some(DirectMode::On),
            _ => None,
        }
    }
}

/// The `O_DIRECT` side of one upload file.
#[derive(Debug)]
pub struct Direct {
    file: File,
    /// Writes starting before this offset go through the page cache.
    from: u64,
    /// The smallest aligned middle written directly.
    min: usize,
    /// Allocated on first need: room for [`STAGING`] bytes at an aligned address.
    staging: Vec<u8>,
    /// Bytes written past the page cache (for tests and statistics).
    written: u64,
    /// Tests: the error the next direct write fails with, as a filesystem that takes the flag
    /// at open but refuses the write would.
    #[cfg(test)]
    pub fail_with: Option<i32>,
}

/// How one write is split: `head` bytes through the page cache, `middle` bytes direct, the
/// rest through the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub head: usize,
    pub middle: usize,
}

impl Direct {
    /// Opens the `O_DIRECT` side of `file` for `mode`, or `None` when the mode is off or the
    /// filesystem refuses `O_DIRECT`. The file is reopened through `/proc/self/fd`, so the
    /// second descriptor is on the same inode even if the path was renamed meanwhile.
    pub fn open(file: &File, path: &str, mode: DirectMode) -> Option<Direct> {
        let (from, min) = match mode {
            DirectMode::Off => return None,
            DirectMode::Auto => (AUTO_FROM, AUTO_MIN),
            DirectMode::On => (0, DIRECT_ALIGN),
        };
        let mut options = OpenOptions::new();
        options.write(true).custom_flags(libc::O_DIRECT);
        let reopened = options
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .or_else(|_| options.open(path))
            .ok()?;
        // The path might name another file by now; only the same inode will do.
        let (a, b) = (file.metadata().ok()?, reopened.metadata().ok()?);
        use std::os::unix::fs::MetadataExt;
        if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
            return None;
        }
        Some(Direct {
            file: reopened,
            from,
            min,
            staging: Vec::new(),
            written: 0,
            #[cfg(test)]
            fail_with: None,
        })
    }

    /// Bytes written past the page cache so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// How a write of `len` bytes at `pos` is split, or `None` when it all goes through the
    /// page cache.
    pub fn split(&self, pos: u64, len: usize) -> Option<Split> {
        if pos < self.from {
            return None;
        }
        let head = (DIRECT_ALIGN - (pos % DIRECT_ALIGN as u64) as usize) % DIRECT_ALIGN;
        if len < head {
            return None;
        }
        let middle = (len - head) / DIRECT_ALIGN * DIRECT_ALIGN;
        (middle >= self.min.max(DIRECT_ALIGN)).then_some(Split { head, middle })
    }

    /// Writes `data` (a whole number of blocks) at `pos` (aligned) past the page cache. An
    /// error leaves some of it written, as a failed `pwrite` may; the caller retries through
    /// the page cache or cuts the file back.
    pub fn write(&mut self, data: &[u8], pos: u64) -> io::Result<()> {
        debug_assert!(
            pos.is_multiple_of(DIRECT_ALIGN as u64) && data.len().is_multiple_of(DIRECT_ALIGN)
        );
        #[cfg(test)]
        if let Some(errno) = self.fail_with {
            return Err(io::Error::from_raw_os_error(errno));
        }
        if data.as_ptr().align_offset(DIRECT_ALIGN) == 0 {
            self.file.write_all_at(data, pos)?;
        } else {
            if self.staging.is_empty() {
                self.staging = vec![0u8; STAGING + DIRECT_ALIGN];
            }
            let start = self.staging.as_ptr().align_offset(DIRECT_ALIGN);
            let staging = &mut self.staging[start..start + STAGING];
            let mut at = 0;
            while at < data.len() {
                let n = (data.len() - at).min(STAGING);
                staging[..n].copy_from_slice(&data[at..at + n]);
                self.file.write_all_at(&staging[..n], pos + at as u64)?;
                at += n;
            }
        }
        self.written += data.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(from: u64, min: usize) -> Direct {
        let file = tempfile::tempfile().unwrap();
        Direct {
            file,
            from,
            min,
            staging: Vec::new(),
            written: 0,
            fail_with: None,
        }
    }

    #[test]
    fn split_keeps_head_and_tail_off_the_direct_path() {
        let d = direct(0, DIRECT_ALIGN);
        assert_eq!(
            d.split(0, 3 * 4096 + 5),
            Some(Split {
                head: 0,
                middle: 3 * 4096
            })
        );
        assert_eq!(
            d.split(100, 3 * 4096),
            Some(Split {
                head: 3996,
                middle: 2 * 4096
            })
        );
        assert_eq!(d.split(100, 4000), None); // not one whole aligned block
        assert_eq!(d.split(4096, 4095), None);
    }

    #[test]
    fn split_in_auto_waits_for_the_offset_and_the_size() {
        let d = direct(AUTO_FROM, AUTO_MIN);
        assert_eq!(d.split(0, 8 << 20), None);
        assert_eq!(d.split(AUTO_FROM - 1, 8 << 20), None);
        assert_eq!(d.split(AUTO_FROM, AUTO_MIN - 1), None);
        assert_eq!(
            d.split(AUTO_FROM + 1, AUTO_MIN + 4096),
            Some(Split {
                head: 4095,
                middle: AUTO_MIN
            })
        );
    }

    #[test]
    fn modes_parse() {
        assert_eq!(DirectMode::parse("auto"), Some(DirectMode::Auto));
        assert_eq!(DirectMode::parse("on"), Some(DirectMode::On));
        assert_eq!(DirectMode::parse("off"), Some(DirectMode::Off));
        assert_eq!(DirectMode::parse("yes"), None);
    }
}
