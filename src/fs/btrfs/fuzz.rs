//! The `btrfs` fuzz target's input format and walk. A btrfs image is at least
//! ~100 MiB, mostly zeros, so a fuzz input is a sparse image: records of a
//! LE32 block number followed by one 4 KiB block, over a 1 GiB disk of zeros.

use super::Btrfs;
use crate::fs::{FileType, Filesystem};
use std::collections::BTreeMap;
use std::sync::Arc;
use v2x_formats::block::{check_range, BlockSource, Extent, ExtentKind, ImageInfo};
use v2x_formats::Result;

/// Block size of the sparse fuzz image.
pub const BLOCK: usize = 4096;
/// Size of the sparse fuzz image.
pub const DISK_SIZE: u64 = 1 << 30;
/// Most objects the walk visits.
const MAX_VISITS: usize = 2000;
/// Most file bytes the walk reads.
const MAX_READ: u64 = 4 << 20;

/// A disk of zeros with some 4 KiB blocks set.
pub struct SparseDisk {
    blocks: BTreeMap<u64, Vec<u8>>,
}

impl SparseDisk {
    /// Decodes fuzz input records (a short tail is ignored).
    pub fn from_records(data: &[u8]) -> Self {
        let mut blocks = BTreeMap::new();
        for rec in data.chunks_exact(4 + BLOCK) {
            let n = u64::from(u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]));
            if n < DISK_SIZE / BLOCK as u64 {
                blocks.insert(n, rec[4..].to_vec());
            }
        }
        Self { blocks }
    }

    /// Encodes the non-zero blocks of an image as fuzz input records.
    pub fn to_records(image: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, b) in image.chunks(BLOCK).enumerate() {
            if b.len() == BLOCK && b.iter().any(|&x| x != 0) {
                out.extend_from_slice(&(i as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
        out
    }
}

impl BlockSource for SparseDisk {
    fn size(&self) -> u64 {
        DISK_SIZE
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(DISK_SIZE, offset, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (blk, within) = (pos / BLOCK as u64, (pos % BLOCK as u64) as usize);
            let n = (BLOCK - within).min(buf.len() - done);
            match self.blocks.get(&blk) {
                Some(b) => buf[done..done + n].copy_from_slice(&b[within..within + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }
    fn map(&self, start: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(DISK_SIZE, start, len)?;
        Ok(vec![Extent {
            start,
            len,
            kind: ExtentKind::Data,
            layer: 0,
        }])
    }
    fn info(&self) -> ImageInfo {
        ImageInfo {
            path: "fuzz-input".into(),
            format: "raw".into(),
            virtual_size: DISK_SIZE,
            ..ImageInfo::default()
        }
    }
}

/// Opens fuzz input `data` as btrfs and walks it within fixed budgets.
pub fn exercise(data: &[u8]) {
    let disk: Arc<dyn BlockSource> = Arc::new(SparseDisk::from_records(data));
    let Ok(fs) = Btrfs::open(disk) else { return };
    let _ = (fs.label(), fs.uuid(), fs.notes());
    let mut visits = 0;
    let mut read = 0;
    walk(&fs, "/", &mut visits, &mut read);
    for s in fs.subvolumes().into_iter().take(8) {
        if let Ok(sub) = fs.open_subvolume(&s.path) {
            walk(sub.as_ref(), "/", &mut visits, &mut read);
        }
    }
}

fn walk(fs: &dyn Filesystem, dir: &str, visits: &mut usize, read: &mut u64) {
    let Ok(entries) = fs.read_dir(dir) else { return };
    for e in entries {
        if *visits >= MAX_VISITS {
            return;
        }
        *visits += 1;
        let p = if dir == "/" {
            format!("/{}", e.name)
        } else {
            format!("{dir}/{}", e.name)
        };
        let Ok(meta) = fs.lstat(&p) else { continue };
        match meta.file_type {
            FileType::Dir => walk(fs, &p, visits, read),
            FileType::File => {
                let len = meta.size.min(MAX_READ.saturating_sub(*read)).min(1 << 20);
                if fs.read_range(&p, 0, len).is_ok() {
                    *read += len;
                }
            }
            FileType::Symlink => {
                let _ = fs.read_link(&p);
            }
            FileType::Other => {}
        }
    }
}
