//! Positional access to a host file, with errors that name the file.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A read-only host file read with `pread`, never with a shared cursor.
/// Tests and fuzz targets may back it with memory instead of a file.
#[derive(Debug)]
pub struct HostFile {
    backing: Backing,
    path: PathBuf,
    len: u64,
}

#[derive(Debug)]
enum Backing {
    File(File),
    Memory(Vec<u8>),
}

impl HostFile {
    /// Opens `path` read-only and learns its length (block devices included).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Self::from_file(file, path)
    }

    /// Wraps an already open file.
    pub fn from_file(file: File, path: &Path) -> Result<Self> {
        let len = file_len(&file).map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
        Ok(HostFile {
            backing: Backing::File(file),
            path: path.to_path_buf(),
            len,
        })
    }

    /// An in-memory "file" named `name`, for tests and fuzzing.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Self {
        HostFile {
            len: bytes.len() as u64,
            backing: Backing::Memory(bytes),
            path: PathBuf::from(name),
        }
    }

    /// Length of the file (or device) in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file, for `SEEK_DATA` queries; None when backed by memory.
    pub fn file(&self) -> Option<&File> {
        match &self.backing {
            Backing::File(f) => Some(f),
            Backing::Memory(_) => None,
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`. A short file is corruption:
    /// a table or data block points past its end.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(Error::corrupt(
                format!(
                    "{} bytes at {offset:#x} lie past the end of {} ({} bytes)",
                    buf.len(),
                    self.path.display(),
                    self.len
                ),
                offset,
            ));
        }
        match &self.backing {
            Backing::File(f) => f
                .read_exact_at(buf, offset)
                .map_err(|e| Error::io(format!("reading {} at {offset:#x}", self.path.display()), e)),
            Backing::Memory(m) => {
                // In range: checked against len above.
                let start = offset as usize;
                buf.copy_from_slice(&m[start..start + buf.len()]);
                Ok(())
            }
        }
    }

    /// Reads up to `buf.len()` bytes at `offset`, zero-filling what lies past
    /// the end of the file. Used where formats allow a short last block.
    pub fn read_at_zero_fill(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let avail = self.len.saturating_sub(offset).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(avail);
        if !head.is_empty() {
            self.read_exact_at(offset, head)?;
        }
        tail.fill(0);
        Ok(())
    }

    /// Reads a small structure at `offset` into a fresh vector of `len` bytes.
    pub fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read_exact_at(offset, &mut v)?;
        Ok(v)
    }
}

/// Length of a file or block device: metadata for files, seek-to-end for devices.
fn file_len(file: &File) -> std::io::Result<u64> {
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    let len = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(len)
}
