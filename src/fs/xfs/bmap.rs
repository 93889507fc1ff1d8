//! Data fork mapping: extent records, the block-mapping btree (bmbt), and
//! reads of file bytes through the map (holes and unwritten extents read as
//! zeros).

use super::inode::{ForkFormat, Inode};
use super::read_disk;
use super::sb::{be16, be32, be64, Superblock};
use v2x_formats::block::BlockSource;
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Most extents one fork may have (each costs 32 bytes of memory).
pub const MAX_EXTENTS: u64 = 1 << 21;
/// Deepest bmbt we walk (real ones stay under 10 levels).
pub const MAX_BTREE_DEPTH: u16 = 10;
/// Most bmbt blocks read for one fork.
pub const MAX_BTREE_BLOCKS: u64 = 1 << 16;

/// v4 bmbt block magic "BMAP".
const BMAP_MAGIC: u32 = 0x424d_4150;
/// v5 bmbt block magic "BMA3".
const BMAP_CRC_MAGIC: u32 = 0x424d_4133;
/// Long-format btree block header, v4.
const BMBT_HDR_V4: usize = 24;
/// Long-format btree block header, v5 (with blkno, lsn, uuid, owner, crc).
const BMBT_HDR_V5: usize = 72;
/// Size of one extent record, one key+pointer pair.
const REC: usize = 16;

/// One mapping of file blocks to filesystem blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First file block.
    pub file_block: u64,
    /// First filesystem block (AG number in the high bits).
    pub fs_block: u64,
    /// Length in blocks; never zero.
    pub count: u64,
    /// Preallocated but never written: reads as zeros.
    pub unwritten: bool,
}

impl Extent {
    fn decode(r: &[u8]) -> Self {
        let hi = be64(r, 0);
        let lo = be64(r, 8);
        let x = (u128::from(hi) << 64) | u128::from(lo);
        Extent {
            unwritten: x >> 127 != 0,
            file_block: ((x >> 73) & ((1u128 << 54) - 1)) as u64,
            fs_block: ((x >> 21) & ((1u128 << 52) - 1)) as u64,
            count: (x & ((1u128 << 21) - 1)) as u64,
        }
    }

    /// One past the last file block.
    pub fn end(&self) -> u64 {
        self.file_block + self.count
    }
}

/// The extent map of an inode's data fork, sorted and checked.
pub fn extents(src: &dyn BlockSource, sb: &Superblock, inode: &Inode) -> Result<Vec<Extent>> {
    check_limit("XFS extents in one fork", inode.nextents, MAX_EXTENTS)?;
    let mut out = Vec::new();
    match inode.format {
        ForkFormat::Extents => {
            let n = inode.nextents as usize;
            if n * REC > inode.fork.len() {
                return Err(Error::corrupt(
                    format!("XFS inode {}: {n} extents do not fit in the data fork", inode.ino),
                    inode.offset + 76,
                ));
            }
            out.extend(inode.fork.chunks_exact(REC).take(n).map(Extent::decode));
        }
        ForkFormat::Btree => {
            let mut walk = Walk {
                src,
                sb,
                ino: inode.ino,
                blocks: 0,
                out: &mut out,
            };
            walk.root(&inode.fork, inode.fork_offset)?;
            if out.len() as u64 != inode.nextents {
                return Err(Error::corrupt(
                    format!(
                        "XFS inode {}: bmap btree holds {} extents, the inode says {}",
                        inode.ino,
                        out.len(),
                        inode.nextents
                    ),
                    inode.offset,
                ));
            }
        }
        ForkFormat::Local | ForkFormat::Dev => return Ok(out),
    }
    let mut prev_end = 0u64;
    for e in &out {
        if e.count == 0 || e.file_block < prev_end || !sb.check_run(e.fs_block, e.count) {
            return Err(Error::corrupt(
                format!(
                    "XFS inode {}: bad extent {}+{} at block {:#x} (overlapping, empty or outside the filesystem)",
                    inode.ino, e.file_block, e.count, e.fs_block
                ),
                inode.offset,
            ));
        }
        prev_end = e.end();
    }
    Ok(out)
}

/// A bmbt walk with its budget.
struct Walk<'a> {
    src: &'a dyn BlockSource,
    sb: &'a Superblock,
    ino: u64,
    blocks: u64,
    out: &'a mut Vec<Extent>,
}

impl Walk<'_> {
    /// The root lives in the inode: level, numrecs, then keys and pointers
    /// laid out for as many records as the fork could hold.
    fn root(&mut self, fork: &[u8], at: u64) -> Result<()> {
        if fork.len() < 4 + REC {
            return Err(Error::corrupt(
                format!("XFS inode {}: bmap root is too small", self.ino),
                at,
            ));
        }
        let level = be16(fork, 0);
        let numrecs = usize::from(be16(fork, 2));
        let maxrecs = (fork.len() - 4) / REC;
        if level == 0 || level > MAX_BTREE_DEPTH || numrecs == 0 || numrecs > maxrecs {
            return Err(Error::corrupt(
                format!(
                    "XFS inode {}: bmap root with level {level} and {numrecs} records",
                    self.ino
                ),
                at,
            ));
        }
        let ptrs = 4 + maxrecs * 8;
        for i in 0..numrecs {
            self.node(be64(fork, ptrs + i * 8), level - 1)?;
        }
        Ok(())
    }

    fn node(&mut self, fsb: u64, level: u16) -> Result<()> {
        self.blocks += 1;
        check_limit("XFS bmap btree blocks in one fork", self.blocks, MAX_BTREE_BLOCKS)?;
        let off = self.sb.fsb_offset(fsb).map_err(|_| {
            Error::corrupt(
                format!(
                    "XFS inode {}: bmap btree pointer {fsb:#x} is out of range",
                    self.ino
                ),
                0,
            )
        })?;
        let mut b = vec![0u8; self.sb.block_size as usize];
        read_disk(self.src, off, &mut b)?;
        let (magic, hdr) = if self.sb.is_v5() {
            (BMAP_CRC_MAGIC, BMBT_HDR_V5)
        } else {
            (BMAP_MAGIC, BMBT_HDR_V4)
        };
        let bad = |what: String| {
            Err(Error::corrupt(
                format!("XFS inode {} bmap btree block: {what}", self.ino),
                off,
            ))
        };
        if be32(&b, 0) != magic {
            return bad("bad magic".into());
        }
        if be16(&b, 4) != level {
            return bad(format!("level {} where {level} was expected", be16(&b, 4)));
        }
        if self.sb.is_v5() && (be64(&b, 56) != self.ino || be64(&b, 24) != off >> 9) {
            return bad("block belongs to another inode or location".into());
        }
        let numrecs = usize::from(be16(&b, 6));
        let maxrecs = (b.len() - hdr) / REC;
        if numrecs == 0 || numrecs > maxrecs {
            return bad(format!("{numrecs} records"));
        }
        if level == 0 {
            check_limit(
                "XFS extents in one fork",
                (self.out.len() + numrecs) as u64,
                MAX_EXTENTS,
            )?;
            let recs = &b[hdr..hdr + numrecs * REC];
            self.out.extend(recs.chunks_exact(REC).map(Extent::decode));
            return Ok(());
        }
        let ptrs = hdr + maxrecs * 8;
        for i in 0..numrecs {
            self.node(be64(&b, ptrs + i * 8), level - 1)?;
        }
        Ok(())
    }
}

/// Volume byte offset of file block `fb`, if it is mapped.
pub fn disk_offset(sb: &Superblock, map: &[Extent], fb: u64) -> Option<u64> {
    let e = map.get(map.partition_point(|e| e.end() <= fb))?;
    if e.file_block > fb {
        return None;
    }
    sb.fsb_offset(e.fs_block + (fb - e.file_block)).ok()
}

/// Reads `buf.len()` bytes at byte `pos` of a fork mapped by `map`. Holes
/// and unwritten extents read as zeros when `holes_ok`; otherwise (metadata
/// such as directory blocks) they are corruption.
pub fn read_mapped(
    src: &dyn BlockSource,
    sb: &Superblock,
    inode: &Inode,
    map: &[Extent],
    mut pos: u64,
    buf: &mut [u8],
    holes_ok: bool,
) -> Result<()> {
    let bs = u64::from(sb.block_size);
    let mut done = 0usize;
    while done < buf.len() {
        let want = (buf.len() - done) as u64;
        let fb = pos >> sb.block_log;
        let i = map.partition_point(|e| e.end() <= fb);
        let n;
        match map.get(i) {
            Some(e) if e.file_block <= fb => {
                let left = (e.end() - fb).saturating_mul(bs) - (pos & (bs - 1));
                n = want.min(left) as usize;
                let out = &mut buf[done..done + n];
                if e.unwritten {
                    if !holes_ok {
                        return Err(Error::corrupt(
                            format!("XFS inode {}: metadata block {fb} is unwritten", inode.ino),
                            inode.offset,
                        ));
                    }
                    out.fill(0);
                } else {
                    let disk = sb.fsb_offset(e.fs_block + (fb - e.file_block))? + (pos & (bs - 1));
                    read_disk(src, disk, out)?;
                }
            }
            next => {
                if !holes_ok {
                    return Err(Error::corrupt(
                        format!("XFS inode {}: metadata block {fb} is not mapped", inode.ino),
                        inode.offset,
                    ));
                }
                let left = next.map_or(u64::MAX, |e| e.file_block.saturating_mul(bs).saturating_sub(pos));
                n = want.min(left) as usize;
                buf[done..done + n].fill(0);
            }
        }
        done += n;
        pos += n as u64;
    }
    Ok(())
}
