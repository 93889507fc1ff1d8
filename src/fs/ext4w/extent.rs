//! File block maps: reading extent trees (any depth) and old indirect block
//! maps, and writing new extent trees (depth 0, or depth 1 with one leaf).

use super::csum::crc32c_raw;
use super::inode::{Inode, EXTENTS_FL};
use super::layout::{le16, le32, put16, put32, Superblock};
use super::Device;
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Most extents (or mapped runs) one file may have.
pub const MAX_EXTENTS: u64 = 1 << 20;
/// Deepest extent tree we walk (the kernel allows 5).
pub const MAX_DEPTH: u16 = 5;
/// Longest initialised extent.
pub const MAX_EXTENT_LEN: u32 = 32768;
const EXT_MAGIC: u16 = 0xF30A;

/// A run of contiguous file blocks mapped to contiguous disk blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First logical block.
    pub lblk: u32,
    /// First physical block.
    pub pblk: u64,
    /// Length in blocks.
    pub len: u32,
    /// Allocated but unwritten (reads as zeros).
    pub uninit: bool,
}

/// Where a file's data lives, plus the blocks holding the map itself.
#[derive(Debug, Clone, Default)]
pub struct FileMap {
    /// Data runs in logical order.
    pub runs: Vec<Run>,
    /// Extent index/leaf blocks or indirect blocks owned by the file.
    pub meta: Vec<u64>,
}

impl FileMap {
    /// Physical block of logical block `lblk`, if mapped and initialised.
    pub fn lookup(&self, lblk: u32) -> Option<u64> {
        self.runs
            .iter()
            .find(|r| lblk >= r.lblk && lblk - r.lblk < r.len && !r.uninit)
            .map(|r| r.pblk + u64::from(lblk - r.lblk))
    }

    /// Total blocks the file owns (data and map).
    pub fn total_blocks(&self) -> u64 {
        self.runs.iter().map(|r| u64::from(r.len)).sum::<u64>() + self.meta.len() as u64
    }
}

/// Reads the block map of `inode`.
/// `at` is the inode record's byte offset, for error messages.
pub fn read_map(dev: &dyn Device, sb: &Superblock, inode: &Inode, at: u64) -> Result<FileMap> {
    let mut map = FileMap::default();
    if inode.flags() & EXTENTS_FL != 0 {
        let root = inode.i_block().to_vec();
        walk_extents(dev, sb, &root, MAX_DEPTH + 1, at, &mut map)?;
    } else {
        read_indirect(dev, sb, inode, at, &mut map)?;
    }
    map.runs.sort_by_key(|r| r.lblk);
    Ok(map)
}

fn check_block(sb: &Superblock, b: u64, at: u64) -> Result<u64> {
    if b < u64::from(sb.first_data_block) || b >= sb.blocks_count {
        return Err(Error::corrupt(
            format!("block number {b} outside the filesystem"),
            at,
        ));
    }
    Ok(b)
}

fn walk_extents(
    dev: &dyn Device,
    sb: &Superblock,
    node: &[u8],
    depth_left: u16,
    at: u64,
    map: &mut FileMap,
) -> Result<()> {
    if le16(node, 0) != EXT_MAGIC {
        return Err(Error::corrupt("extent header magic", at));
    }
    let entries = usize::from(le16(node, 2));
    let max = usize::from(le16(node, 4));
    let depth = le16(node, 6);
    if entries > max || 12 + max * 12 > node.len() {
        return Err(Error::corrupt("extent header entry count", at));
    }
    if depth >= depth_left {
        return Err(Error::corrupt(format!("extent tree depth {depth}"), at));
    }
    for i in 0..entries {
        let e = &node[12 + i * 12..24 + i * 12];
        if depth == 0 {
            let raw_len = le16(e, 4);
            let (len, uninit) = if raw_len > 32768 {
                (u32::from(raw_len) - 32768, true)
            } else {
                (u32::from(raw_len), false)
            };
            let pblk = u64::from(le32(e, 8)) | (u64::from(le16(e, 6)) << 32);
            check_block(sb, pblk, at)?;
            check_block(sb, pblk + u64::from(len.max(1)) - 1, at)?;
            check_limit("extents in one file", map.runs.len() as u64 + 1, MAX_EXTENTS)?;
            map.runs.push(Run {
                lblk: le32(e, 0),
                pblk,
                len,
                uninit,
            });
        } else {
            let child = u64::from(le32(e, 4)) | (u64::from(le16(e, 8)) << 32);
            let child = check_block(sb, child, at)?;
            check_limit(
                "extent tree blocks in one file",
                map.meta.len() as u64 + 1,
                MAX_EXTENTS,
            )?;
            map.meta.push(child);
            let mut buf = vec![0u8; sb.block_size as usize];
            dev.read_at(child * sb.block_size, &mut buf)?;
            walk_extents(dev, sb, &buf, depth, child * sb.block_size, map)?;
            if u32::from(le16(&buf, 6)) + 1 != u32::from(depth) {
                return Err(Error::corrupt("extent tree child depth", child * sb.block_size));
            }
        }
    }
    Ok(())
}

/// Reads an ext2/ext3 indirect block map (12 direct, then single, double
/// and triple indirect blocks), bounded by the file size.
fn read_indirect(dev: &dyn Device, sb: &Superblock, inode: &Inode, at: u64, map: &mut FileMap) -> Result<()> {
    let nblocks = inode.size().div_ceil(sb.block_size);
    check_limit("blocks in one block-mapped file", nblocks, MAX_EXTENTS * 16)?;
    let ib = inode.i_block();
    let ptr = |i: usize| u64::from(le32(ib, i * 4));
    let per = sb.block_size / 4;
    let mut lblk = 0u64;
    for i in 0..12 {
        if lblk >= nblocks {
            return Ok(());
        }
        push_block(sb, map, lblk, ptr(i), at)?;
        lblk += 1;
    }
    for (level, slot) in [(1u32, 12usize), (2, 13), (3, 14)] {
        if lblk >= nblocks {
            break;
        }
        let span = per.pow(level);
        if ptr(slot) != 0 {
            walk_indirect(dev, sb, map, ptr(slot), level, lblk, nblocks)?;
        }
        lblk += span;
    }
    Ok(())
}

fn push_block(sb: &Superblock, map: &mut FileMap, lblk: u64, pblk: u64, at: u64) -> Result<()> {
    if pblk == 0 {
        return Ok(());
    }
    check_block(sb, pblk, at)?;
    let lblk = u32::try_from(lblk).map_err(|_| Error::corrupt("logical block beyond 2^32", at))?;
    if let Some(last) = map.runs.last_mut() {
        if last.lblk + last.len == lblk
            && last.pblk + u64::from(last.len) == pblk
            && last.len < MAX_EXTENT_LEN
        {
            last.len += 1;
            return Ok(());
        }
    }
    check_limit("extents in one file", map.runs.len() as u64 + 1, MAX_EXTENTS)?;
    map.runs.push(Run {
        lblk,
        pblk,
        len: 1,
        uninit: false,
    });
    Ok(())
}

fn walk_indirect(
    dev: &dyn Device,
    sb: &Superblock,
    map: &mut FileMap,
    blk: u64,
    level: u32,
    first: u64,
    nblocks: u64,
) -> Result<()> {
    let at = check_block(sb, blk, 0)? * sb.block_size;
    check_limit(
        "indirect blocks in one file",
        map.meta.len() as u64 + 1,
        MAX_EXTENTS,
    )?;
    map.meta.push(blk);
    let mut buf = vec![0u8; sb.block_size as usize];
    dev.read_at(at, &mut buf)?;
    let per = sb.block_size / 4;
    let span = per.pow(level - 1);
    for i in 0..per {
        let lblk = first + i * span;
        if lblk >= nblocks {
            break;
        }
        let p = u64::from(le32(&buf, (i * 4) as usize));
        if level == 1 {
            push_block(sb, map, lblk, p, at)?;
        } else if p != 0 {
            walk_indirect(dev, sb, map, p, level - 1, lblk, nblocks)?;
        }
    }
    Ok(())
}

/// Extents that fit in one leaf block (after the header and checksum tail).
pub fn leaf_capacity(sb: &Superblock) -> usize {
    ((sb.block_size as usize) - 12) / 12
}

fn write_header(node: &mut [u8], entries: usize, max: usize, depth: u16) {
    put16(node, 0, EXT_MAGIC);
    put16(node, 2, entries as u16);
    put16(node, 4, max as u16);
    put16(node, 6, depth);
    put32(node, 8, 0);
}

fn write_extent(node: &mut [u8], i: usize, r: &Run) {
    let e = &mut node[12 + i * 12..24 + i * 12];
    put32(e, 0, r.lblk);
    put16(
        e,
        4,
        if r.uninit {
            r.len as u16 + 32768
        } else {
            r.len as u16
        },
    );
    put16(e, 6, (r.pblk >> 32) as u16);
    put32(e, 8, r.pblk as u32);
}

/// Splits runs longer than an extent may be.
pub fn to_extents(runs: &[Run]) -> Vec<Run> {
    let mut out = Vec::new();
    for r in runs {
        let mut done = 0;
        while done < r.len {
            let n = (r.len - done).min(MAX_EXTENT_LEN);
            out.push(Run {
                lblk: r.lblk + done,
                pblk: r.pblk + u64::from(done),
                len: n,
                uninit: r.uninit,
            });
            done += n;
        }
    }
    out
}

/// Number of tree blocks (depth-1 leaves) a file with `extents` extents
/// needs: none up to 4, else one leaf per `leaf_capacity`, at most 4 leaves.
pub fn tree_blocks_needed(sb: &Superblock, extents: usize) -> Result<u64> {
    if extents <= 4 {
        return Ok(0);
    }
    let leaves = extents.div_ceil(leaf_capacity(sb));
    if leaves > 4 {
        return Err(Error::unsupported(format!(
            "file needs {extents} extents; extent trees deeper than one level are not written"
        )));
    }
    Ok(leaves as u64)
}

/// Writes the extent tree for `extents` into `inode` (its i_block) and, for
/// more than four extents, into the leaf blocks `leaves` (one per
/// [`leaf_capacity`] extents, each with its checksum tail). Sets EXTENTS_FL.
pub fn write_tree(
    dev: &dyn Device,
    sb: &Superblock,
    inode: &mut Inode,
    extents: &[Run],
    leaves: &[u64],
) -> Result<()> {
    inode.set_flags(inode.flags() | EXTENTS_FL);
    let seed = inode.csum_seed(sb);
    let root = inode.i_block_mut();
    root.fill(0);
    if leaves.is_empty() {
        if extents.len() > 4 {
            return Err(Error::invalid("more than 4 extents need leaf blocks"));
        }
        write_header(root, extents.len(), 4, 0);
        for (i, r) in extents.iter().enumerate() {
            write_extent(root, i, r);
        }
        return Ok(());
    }
    let cap = leaf_capacity(sb);
    let chunks: Vec<&[Run]> = extents.chunks(cap).collect();
    if chunks.len() != leaves.len() || leaves.len() > 4 {
        return Err(Error::invalid("extent leaf count does not match the extents"));
    }
    write_header(root, leaves.len(), 4, 1);
    for (i, (chunk, &blk)) in chunks.iter().zip(leaves).enumerate() {
        let mut buf = vec![0u8; sb.block_size as usize];
        write_header(&mut buf, chunk.len(), cap, 0);
        for (j, r) in chunk.iter().enumerate() {
            write_extent(&mut buf, j, r);
        }
        let tail = 12 + cap * 12;
        if sb.metadata_csum {
            let c = crc32c_raw(seed, &buf[..tail]);
            put32(&mut buf, tail, c);
        }
        dev.write_at(blk * sb.block_size, &buf)?;
        let e = &mut root[12 + i * 12..24 + i * 12];
        put32(e, 0, chunk.first().map_or(0, |r| r.lblk));
        put32(e, 4, blk as u32);
        put16(e, 8, (blk >> 32) as u16);
    }
    Ok(())
}
