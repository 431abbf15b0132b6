//! The one byte-range-of-an-open-file type: what a log read hands out for splice/sendfile,
//! what a Kafka response part sends, what a producer-table rebuild replays.
//!
//! The range holds its file through an `Rc`, so the descriptor stays open (and the bytes
//! readable, even if retention deletes the segment meanwhile) until the range is dropped.
//! `F` is the handle: `dyn FileHandle` (the default) where only the descriptor matters,
//! [`BufferedFile`] where the holder reads through glommio.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use glommio::io::BufferedFile;

/// Anything that holds an open file descriptor we may splice or pread from.
pub trait FileHandle {
    fn raw_fd(&self) -> RawFd;
}

impl FileHandle for File {
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

impl FileHandle for BufferedFile {
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

/// `len` bytes at `position` of `file`. A range never spans more than one segment, and a
/// segment is below 2 GiB (`segment_bytes`' range), so `len` fits a u32.
pub struct FileRange<F: ?Sized = dyn FileHandle> {
    pub file: Rc<F>,
    pub position: u64,
    pub len: u32,
}

// Not derived: a derive would ask `F: Clone`, and the range only clones its `Rc`.
impl<F: ?Sized> Clone for FileRange<F> {
    fn clone(&self) -> Self {
        FileRange {
            file: self.file.clone(),
            position: self.position,
            len: self.len,
        }
    }
}

impl<F: FileHandle + ?Sized> FileRange<F> {
    /// The file descriptor, for splice/sendfile.
    pub fn raw_fd(&self) -> RawFd {
        self.file.raw_fd()
    }

    /// The file position after the range.
    pub fn end(&self) -> u64 {
        self.position + self.len as u64
    }

    /// Copies the range into `out` with pread (for callers that cannot splice, and tests).
    pub fn read_into(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let at = out.len();
        out.resize(at + self.len as usize, 0);
        // A std view of the descriptor for pread; `self.file` keeps owning (and closes) it.
        // SAFETY: the fd is open for as long as `self.file` lives, which outlives `view`.
        let view = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(self.raw_fd()) });
        view.read_exact_at(&mut out[at..], self.position)
    }
}

impl<F: FileHandle + ?Sized> fmt::Debug for FileRange<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRange")
            .field("fd", &self.raw_fd())
            .field("position", &self.position)
            .field("len", &self.len)
            .finish()
    }
}
