//! Directories in every form: shortform (inline in the inode) and the
//! block, leaf and node forms, whose entries all live in the data blocks
//! below the 32 GiB leaf offset of the directory's data fork, whether that
//! fork is an extent list or a btree. Listing reads those data blocks in
//! order; the hash index (leaf and node blocks) is not needed for it.

use super::bmap::{disk_offset, extents, read_mapped};
use super::inode::{ForkFormat, Inode};
use super::sb::{be16, be32, be64, Superblock};
use crate::fs::MAX_DIR_ENTRIES;
use v2x_formats::block::BlockSource;
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Most directory data blocks read for one directory.
pub const MAX_DIR_BLOCKS: u64 = 1 << 18;
/// Byte offset in a directory's fork where leaf (hash index) blocks start.
const LEAF_OFFSET: u64 = 32 << 30;
/// v4 single-block directory magic "XD2B".
const BLOCK_MAGIC_V4: u32 = 0x5844_3242;
/// v4 data block magic "XD2D".
const DATA_MAGIC_V4: u32 = 0x5844_3244;
/// v5 single-block directory magic "XDB3".
const BLOCK_MAGIC_V5: u32 = 0x5844_4233;
/// v5 data block magic "XDD3".
const DATA_MAGIC_V5: u32 = 0x5844_4433;
/// Marks an unused region inside a data block.
const FREE_TAG: u16 = 0xffff;

/// One directory entry as stored (including neither `.` nor `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// Name bytes.
    pub name: Vec<u8>,
    /// Inode number.
    pub ino: u64,
    /// File type from the entry (XFS_DIR3_FT_*), 0 when the filesystem has none.
    pub ftype: u8,
}

/// All entries of directory `dir`, in on-disk order.
pub fn read_dir(src: &dyn BlockSource, sb: &Superblock, dir: &Inode) -> Result<Vec<RawEntry>> {
    match dir.format {
        ForkFormat::Local => shortform(sb, dir),
        ForkFormat::Extents | ForkFormat::Btree => blocks(src, sb, dir),
        ForkFormat::Dev => Err(Error::corrupt(
            format!("XFS directory inode {} has a device fork", dir.ino),
            dir.offset + 5,
        )),
    }
}

fn shortform(sb: &Superblock, dir: &Inode) -> Result<Vec<RawEntry>> {
    let bad = |what: String, at: usize| {
        Err(Error::corrupt(
            format!("XFS shortform directory {}: {what}", dir.ino),
            dir.fork_offset + at as u64,
        ))
    };
    if dir.size > dir.fork.len() as u64 || dir.size < 6 {
        return bad(format!("size {} does not fit the inode", dir.size), 0);
    }
    let b = &dir.fork[..dir.size as usize];
    let count = usize::from(b[0]);
    let wide = b[1] != 0;
    let ino_len = if wide { 8 } else { 4 };
    let ftype_len = usize::from(sb.has_ftype);
    let mut pos = 2 + ino_len;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let Some(&namelen) = b.get(pos) else {
            return bad("entries run past the end".into(), pos);
        };
        let namelen = usize::from(namelen);
        let name_at = pos + 3;
        let ino_at = name_at + namelen + ftype_len;
        if namelen == 0 || ino_at + ino_len > b.len() {
            return bad(format!("entry of {namelen} bytes runs past the end"), pos);
        }
        let ino = if wide {
            be64(b, ino_at)
        } else {
            u64::from(be32(b, ino_at))
        };
        let ftype = if ftype_len == 1 { b[name_at + namelen] } else { 0 };
        out.push(RawEntry {
            name: b[name_at..name_at + namelen].to_vec(),
            ino,
            ftype,
        });
        pos = ino_at + ino_len;
    }
    Ok(out)
}

fn blocks(src: &dyn BlockSource, sb: &Superblock, dir: &Inode) -> Result<Vec<RawEntry>> {
    let map = extents(src, sb, dir)?;
    let dbs = u64::from(sb.dir_block_size);
    let per_dir_block = dbs >> sb.block_log;
    let leaf_fb = LEAF_OFFSET >> sb.block_log;
    // Directory blocks (in directory-block units) that hold data.
    let mut wanted: Vec<(u64, u64)> = Vec::new();
    let mut total = 0u64;
    for e in map.iter().filter(|e| e.file_block < leaf_fb) {
        let first = e.file_block / per_dir_block;
        let last = (e.end().min(leaf_fb) - 1) / per_dir_block;
        let first = match wanted.last() {
            Some(&(_, prev_last)) if prev_last >= first => prev_last + 1,
            _ => first,
        };
        if first > last {
            continue;
        }
        total += last - first + 1;
        check_limit("XFS directory data blocks", total, MAX_DIR_BLOCKS)?;
        wanted.push((first, last));
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; sb.dir_block_size as usize];
    for &(first, last) in &wanted {
        for db in first..=last {
            read_mapped(src, sb, dir, &map, db * dbs, &mut buf, false)?;
            let at = disk_offset(sb, &map, db * per_dir_block).unwrap_or(dir.offset);
            data_block(sb, dir, &buf, (db, at), &mut out)?;
        }
    }
    Ok(out)
}

/// Parses one data block (or the single block of a block-form directory);
/// `db` is its number in the directory and `disk` its volume offset.
fn data_block(
    sb: &Superblock,
    dir: &Inode,
    b: &[u8],
    (db, disk): (u64, u64),
    out: &mut Vec<RawEntry>,
) -> Result<()> {
    let bad = |what: String, at: usize| {
        Err(Error::corrupt(
            format!("XFS directory {} data block {db}: {what}", dir.ino),
            disk + at as u64,
        ))
    };
    let (hdr, block_magic, data_magic) = if sb.is_v5() {
        (64, BLOCK_MAGIC_V5, DATA_MAGIC_V5)
    } else {
        (16, BLOCK_MAGIC_V4, DATA_MAGIC_V4)
    };
    let magic = be32(b, 0);
    let end = if magic == data_magic {
        b.len()
    } else if magic == block_magic {
        // A block-form directory keeps its hash index and a tail at the end.
        let count = u64::from(be32(b, b.len() - 8));
        match (b.len() as u64 - 8).checked_sub(count * 8) {
            Some(e) if e >= hdr as u64 => e as usize,
            _ => return bad(format!("{count} leaf entries do not fit"), b.len() - 8),
        }
    } else {
        return bad(format!("bad magic {magic:#x}"), 0);
    };
    if sb.is_v5() && be64(b, 40) != dir.ino {
        return bad(format!("block belongs to inode {}", be64(b, 40)), 40);
    }
    let ftype_len = usize::from(sb.has_ftype);
    let mut pos = hdr;
    while pos < end {
        if end - pos < 8 {
            return bad("truncated entry".into(), pos);
        }
        if be16(b, pos) == FREE_TAG {
            let len = usize::from(be16(b, pos + 2));
            if len < 8 || len % 8 != 0 || len > end - pos {
                return bad(format!("unused region of {len} bytes"), pos);
            }
            pos += len;
            continue;
        }
        let namelen = usize::from(b[pos + 8]);
        let size = (8 + 1 + namelen + ftype_len + 2).next_multiple_of(8);
        if namelen == 0 || size > end - pos {
            return bad(format!("entry with a {namelen}-byte name"), pos);
        }
        if usize::from(be16(b, pos + size - 2)) != pos {
            return bad("entry tag does not match its offset".into(), pos);
        }
        let name = &b[pos + 9..pos + 9 + namelen];
        if name != b"." && name != b".." {
            check_limit(
                "entries in one directory",
                out.len() as u64 + 1,
                MAX_DIR_ENTRIES as u64,
            )?;
            out.push(RawEntry {
                name: name.to_vec(),
                ino: be64(b, pos),
                ftype: if ftype_len == 1 { b[pos + 9 + namelen] } else { 0 },
            });
        }
        pos += size;
    }
    Ok(())
}
