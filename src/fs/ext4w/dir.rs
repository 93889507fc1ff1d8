//! Directory blocks: entry parsing, lookup (linear over every block, which
//! also covers htree leaves), insertion (linear, or via the hash index into
//! the right htree leaf) and removal, with leaf checksum tails.

use super::csum::crc32c_raw;
use super::extent::FileMap;
use super::hash::{name_hash, HASH_TEA};
use super::inode::{Inode, INDEX_FL};
use super::layout::{le16, le32, put16, put32};
use super::{Ext4Writer, MAX_DIR_BLOCKS};
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Size of the checksum tail that ends each leaf block with `metadata_csum`.
const TAIL: usize = 12;
/// Deepest htree we descend (3 levels with `largedir`).
const MAX_HTREE_LEVELS: u8 = 3;

/// One parsed directory entry.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// Offset inside the block.
    pub off: usize,
    /// Inode number (0 = unused slot).
    pub ino: u32,
    /// Record length.
    pub rec_len: usize,
    /// Name bytes.
    pub name: Vec<u8>,
    /// File type byte.
    pub ftype: u8,
}

/// Where an htree lookup ended: the leaf, and the index node slot that
/// points at it.
pub(super) struct DxPath {
    /// Logical block of the leaf.
    leaf: u32,
    /// Physical block of the index node holding the leaf's entry.
    parent: u64,
    /// Offset of that node's limit/count header (0x20 root, 0x8 interior).
    base: usize,
    /// Index of the leaf's entry in that node.
    slot: usize,
    /// Hash version from the root.
    version: u8,
    /// The node above `parent` (block, header offset, slot), if any.
    grand: Option<(u64, usize, usize)>,
}

/// Bytes an entry with a name of `len` bytes needs.
fn needed(len: usize) -> usize {
    (8 + len).div_ceil(4) * 4
}

fn rec_len(buf: &[u8], off: usize) -> usize {
    let v = usize::from(le16(buf, off + 4));
    if buf.len() == 65536 && (v == 0 || v == 65535) {
        65536
    } else {
        v
    }
}

/// Whether `buf` ends with a `metadata_csum` leaf tail.
fn has_tail(buf: &[u8]) -> bool {
    let t = buf.len() - TAIL;
    le32(buf, t) == 0 && le16(buf, t + 4) == TAIL as u16 && buf[t + 6] == 0 && buf[t + 7] == 0xDE
}

/// Parses the entries of one directory block (stopping at a checksum tail).
pub(super) fn parse_block(buf: &[u8], at: u64) -> Result<Vec<Entry>> {
    let end = if has_tail(buf) {
        buf.len() - TAIL
    } else {
        buf.len()
    };
    let mut out = Vec::new();
    let mut off = 0;
    while off < end {
        if off + 8 > end {
            return Err(Error::corrupt(
                "directory entry header crosses the block end",
                at + off as u64,
            ));
        }
        let rl = rec_len(buf, off);
        let name_len = usize::from(buf[off + 6]);
        if rl < 8 || rl % 4 != 0 || off + rl > end || 8 + name_len > rl {
            return Err(Error::corrupt("directory entry record length", at + off as u64));
        }
        out.push(Entry {
            off,
            ino: le32(buf, off),
            rec_len: rl,
            name: buf[off + 8..off + 8 + name_len].to_vec(),
            ftype: buf[off + 7],
        });
        off += rl;
    }
    Ok(out)
}

fn write_entry(buf: &mut [u8], off: usize, ino: u32, rl: usize, name: &[u8], ftype: u8) {
    put32(buf, off, ino);
    put16(buf, off + 4, if rl == 65536 { 65535 } else { rl as u16 });
    buf[off + 6] = name.len() as u8;
    buf[off + 7] = ftype;
    buf[off + 8..off + 8 + name.len()].copy_from_slice(name);
}

impl Ext4Writer {
    /// The block map of a directory, with its size capped.
    pub(super) fn dir_map(&self, dir: &Inode) -> Result<FileMap> {
        check_limit(
            "directory size in blocks",
            dir.size().div_ceil(self.bs()),
            MAX_DIR_BLOCKS,
        )?;
        self.file_map(dir)
    }

    /// Seals a leaf block: writes the tail checksum when the fs has them.
    fn seal_leaf(&self, dir: &Inode, buf: &mut [u8]) -> Result<()> {
        if self.sb.metadata_csum {
            if !has_tail(buf) {
                return Err(Error::unsupported(format!(
                    "directory inode {} block without a checksum tail",
                    dir.ino
                )));
            }
            let t = buf.len() - TAIL;
            let c = crc32c_raw(dir.csum_seed(&self.sb), &buf[..t]);
            put32(buf, t + 8, c);
        }
        Ok(())
    }

    /// An empty leaf block holding one entry spanning it, plus the tail.
    pub(super) fn new_leaf(&self, dir: &Inode, entries: &[(u32, &[u8], u8)]) -> Result<Vec<u8>> {
        let bs = self.bs() as usize;
        let mut buf = vec![0u8; bs];
        let end = if self.sb.metadata_csum { bs - TAIL } else { bs };
        let mut off = 0;
        for (i, (ino, name, ftype)) in entries.iter().enumerate() {
            let rl = if i + 1 == entries.len() {
                end - off
            } else {
                needed(name.len())
            };
            write_entry(&mut buf, off, *ino, rl, name, *ftype);
            off += rl;
        }
        if entries.is_empty() {
            write_entry(&mut buf, 0, 0, end, b"", 0);
        }
        if self.sb.metadata_csum {
            write_entry(&mut buf, end, 0, TAIL, b"", 0xDE);
        }
        self.seal_leaf(dir, &mut buf)?;
        Ok(buf)
    }

    /// Entries of directory `dir` (all blocks, `.` and `..` included).
    pub(super) fn dir_entries(&self, dir: &Inode) -> Result<Vec<(Vec<u8>, u32, u8)>> {
        let map = self.dir_map(dir)?;
        let mut out = Vec::new();
        let nblocks = dir.size().div_ceil(self.bs());
        for lblk in 0..nblocks as u32 {
            let Some(pblk) = map.lookup(lblk) else { continue };
            let buf = self.read_block(pblk)?;
            for e in parse_block(&buf, pblk * self.bs())? {
                if e.ino != 0 {
                    out.push((e.name, e.ino, e.ftype));
                }
            }
        }
        Ok(out)
    }

    /// Finds `name` in directory `dir`: `(physical block, entry)`.
    pub(super) fn find_entry(&self, dir: &Inode, name: &[u8]) -> Result<Option<(u64, Entry)>> {
        let map = self.dir_map(dir)?;
        let nblocks = dir.size().div_ceil(self.bs());
        for lblk in 0..nblocks as u32 {
            let Some(pblk) = map.lookup(lblk) else { continue };
            let buf = self.read_block(pblk)?;
            for e in parse_block(&buf, pblk * self.bs())? {
                if e.ino != 0 && e.name == name {
                    return Ok(Some((pblk, e)));
                }
            }
        }
        Ok(None)
    }

    /// Places an entry in `buf` if one record has enough slack.
    fn place_in_block(buf: &mut [u8], at: u64, name: &[u8], ino: u32, ftype: u8) -> Result<bool> {
        let need = needed(name.len());
        for e in parse_block(buf, at)? {
            if e.ino == 0 && e.rec_len >= need {
                write_entry(buf, e.off, ino, e.rec_len, name, ftype);
                return Ok(true);
            }
            let used = needed(e.name.len());
            if e.ino != 0 && e.rec_len >= used + need {
                put16(buf, e.off + 4, used as u16);
                write_entry(buf, e.off + used, ino, e.rec_len - used, name, ftype);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Adds entry `name -> ino` to directory `dir` (whose inode may grow).
    pub(super) fn add_entry(&mut self, dir: &mut Inode, name: &[u8], ino: u32, ftype: u8) -> Result<()> {
        let map = self.dir_map(dir)?;
        if dir.flags() & INDEX_FL != 0 {
            let path = self.htree_leaf(dir, &map, name)?;
            let lblk = path.leaf;
            let pblk = map.lookup(lblk).ok_or_else(|| {
                Error::corrupt(format!("htree leaf {lblk} of inode {} unmapped", dir.ino), 0)
            })?;
            let mut buf = self.read_block(pblk)?;
            if !Self::place_in_block(&mut buf, pblk * self.bs(), name, ino, ftype)? {
                return self.split_leaf(dir, map, &path, pblk, &buf, (name, ino, ftype));
            }
            self.seal_leaf(dir, &mut buf)?;
            return self.write_block(pblk, &buf);
        }
        let nblocks = dir.size().div_ceil(self.bs());
        for lblk in 0..nblocks as u32 {
            let Some(pblk) = map.lookup(lblk) else { continue };
            let mut buf = self.read_block(pblk)?;
            if Self::place_in_block(&mut buf, pblk * self.bs(), name, ino, ftype)? {
                self.seal_leaf(dir, &mut buf)?;
                return self.write_block(pblk, &buf);
            }
        }
        check_limit("directory size in blocks", nblocks + 1, MAX_DIR_BLOCKS)?;
        let buf = self.new_leaf(dir, &[(ino, name, ftype)])?;
        let pblk = self.append_block(dir, map)?;
        self.write_block(pblk, &buf)?;
        dir.set_size((nblocks + 1) * self.bs());
        Ok(())
    }

    /// Removes entry `name` from `dir`, returning its inode number.
    pub(super) fn remove_entry(&mut self, dir: &Inode, name: &[u8]) -> Result<u32> {
        let (pblk, victim) = self
            .find_entry(dir, name)?
            .ok_or_else(|| Error::not_found(String::from_utf8_lossy(name).into_owned()))?;
        let mut buf = self.read_block(pblk)?;
        let entries = parse_block(&buf, pblk * self.bs())?;
        match entries.iter().rposition(|e| e.off == victim.off) {
            Some(0) | None => put32(&mut buf, victim.off, 0),
            Some(i) => {
                let prev = &entries[i - 1];
                let merged = prev.rec_len + victim.rec_len;
                put16(
                    &mut buf,
                    prev.off + 4,
                    if merged == 65536 { 65535 } else { merged as u16 },
                );
            }
        }
        self.seal_leaf(dir, &mut buf)?;
        self.write_block(pblk, &buf)?;
        Ok(victim.ino)
    }

    /// Points the `..` entry of directory `dir` at `parent`.
    pub(super) fn set_dotdot(&mut self, dir: &Inode, parent: u32) -> Result<()> {
        let map = self.dir_map(dir)?;
        let pblk = map
            .lookup(0)
            .ok_or_else(|| Error::corrupt(format!("directory inode {} has no first block", dir.ino), 0))?;
        let mut buf = self.read_block(pblk)?;
        let entries = parse_block(&buf, pblk * self.bs())?;
        let dd = entries.iter().find(|e| e.name == b"..").ok_or_else(|| {
            Error::corrupt(
                format!("directory inode {} has no '..'", dir.ino),
                pblk * self.bs(),
            )
        })?;
        put32(&mut buf, dd.off, parent);
        if dir.flags() & INDEX_FL != 0 {
            self.seal_dx_root(dir, &mut buf)?;
        } else {
            self.seal_leaf(dir, &mut buf)?;
        }
        self.write_block(pblk, &buf)
    }

    /// Recomputes the dx tail checksum of an htree root block.
    fn seal_dx_root(&self, dir: &Inode, buf: &mut [u8]) -> Result<()> {
        self.seal_dx_node(dir, buf, 0x20)
    }

    /// Recomputes the dx tail checksum of an index node whose limit/count
    /// header is at `base`.
    fn seal_dx_node(&self, dir: &Inode, buf: &mut [u8], base: usize) -> Result<()> {
        if !self.sb.metadata_csum {
            return Ok(());
        }
        let (limit, count) = (usize::from(le16(buf, base)), usize::from(le16(buf, base + 2)));
        let tail = base + limit * 8;
        if count > limit || tail + 8 > buf.len() {
            return Err(Error::corrupt("htree node limit", 0));
        }
        let c = crc32c_raw(dir.csum_seed(&self.sb), &buf[..base + count * 8]);
        let c = crc32c_raw(c, &buf[tail..tail + 4]);
        // The checksum field itself counts as zeros.
        let c = crc32c_raw(c, &[0u8; 4]);
        put32(buf, tail + 4, c);
        Ok(())
    }

    /// Walks the hash index of `dir` to the logical leaf block for `name`.
    fn htree_leaf(&self, dir: &Inode, map: &FileMap, name: &[u8]) -> Result<DxPath> {
        let root_blk = map
            .lookup(0)
            .ok_or_else(|| Error::corrupt(format!("htree root of inode {} unmapped", dir.ino), 0))?;
        let root = self.read_block(root_blk)?;
        let at = root_blk * self.bs();
        let version = root[0x1C];
        let levels = root[0x1E];
        if root[0x1D] != 8 || levels >= MAX_HTREE_LEVELS {
            return Err(Error::corrupt("htree root info", at + 0x18));
        }
        let hash = name_hash(
            version,
            name,
            self.sb.hash_seed,
            self.sb.unsigned_hash && version <= HASH_TEA,
        )
        .ok_or_else(|| Error::unsupported(format!("htree hash version {version}")))?;
        let mut node = root;
        let mut base = 0x20;
        let mut node_at = at;
        let mut node_blk = root_blk;
        let mut grand = None;
        for level in 0..=levels {
            let limit = usize::from(le16(&node, base));
            let count = usize::from(le16(&node, base + 2));
            if count == 0 || count > limit || base + limit * 8 > node.len() {
                return Err(Error::corrupt("htree node entry count", node_at + base as u64));
            }
            let mut pick = le32(&node, base + 4) & 0x0FFF_FFFF;
            let mut slot = 0;
            for i in 1..count {
                if le32(&node, base + i * 8) > hash {
                    break;
                }
                pick = le32(&node, base + i * 8 + 4) & 0x0FFF_FFFF;
                slot = i;
            }
            if level == levels {
                return Ok(DxPath {
                    leaf: pick,
                    parent: node_blk,
                    base,
                    slot,
                    version,
                    grand,
                });
            }
            let pblk = map
                .lookup(pick)
                .ok_or_else(|| Error::corrupt(format!("htree node {pick} unmapped"), node_at))?;
            node = self.read_block(pblk)?;
            node_at = pblk * self.bs();
            grand = Some((node_blk, base, slot));
            node_blk = pblk;
            base = 0x8;
        }
        Err(Error::corrupt("htree deeper than its root says", at))
    }

    fn dx_hash(&self, version: u8, name: &[u8]) -> Result<u32> {
        name_hash(
            version,
            name,
            self.sb.hash_seed,
            self.sb.unsigned_hash && version <= HASH_TEA,
        )
        .ok_or_else(|| Error::unsupported(format!("htree hash version {version}")))
    }

    /// Splits a full htree leaf in two by hash, adds the new entry to the
    /// right half and records the new leaf in the parent index node. Refuses
    /// (before changing anything) when the parent node is full too, or when
    /// no split point separates distinct hashes.
    fn split_leaf(
        &mut self,
        dir: &mut Inode,
        map: FileMap,
        path: &DxPath,
        pblk: u64,
        leaf: &[u8],
        new: (&[u8], u32, u8),
    ) -> Result<()> {
        let mut parent = self.read_block(path.parent)?;
        let (limit, count) = (
            usize::from(le16(&parent, path.base)),
            usize::from(le16(&parent, path.base + 2)),
        );
        if count >= limit {
            self.split_index(dir, map, path)?;
            // The index has room now; insert from the top again.
            return self.add_entry(dir, new.0, new.1, new.2);
        }
        let mut entries = Vec::new();
        for e in parse_block(leaf, pblk * self.bs())? {
            if e.ino != 0 {
                entries.push((self.dx_hash(path.version, &e.name)?, e));
            }
        }
        entries.sort_by_key(|(h, _)| *h);
        let mut mid = entries.len() / 2;
        while mid < entries.len() && mid > 0 && entries[mid].0 == entries[mid - 1].0 {
            mid += 1;
        }
        if mid == 0 || mid >= entries.len() {
            return Err(Error::unsupported(format!(
                "htree leaf of directory inode {} holds one hash only; cannot split",
                dir.ino
            )));
        }
        let split_hash = entries[mid].0;
        let new_hash = self.dx_hash(path.version, new.0)?;
        let as_tuple = |v: &[(u32, Entry)]| -> Vec<(u32, Vec<u8>, u8)> {
            v.iter().map(|(_, e)| (e.ino, e.name.clone(), e.ftype)).collect()
        };
        let mut low = as_tuple(&entries[..mid]);
        let mut high = as_tuple(&entries[mid..]);
        let side = if new_hash >= split_hash {
            &mut high
        } else {
            &mut low
        };
        side.push((new.1, new.0.to_vec(), new.2));
        let room = self.bs() as usize - if self.sb.metadata_csum { TAIL } else { 0 };
        for half in [&low, &high] {
            if half.iter().map(|(_, n, _)| needed(n.len())).sum::<usize>() > room {
                return Err(Error::unsupported("htree leaf split leaves a half too full"));
            }
        }
        let new_lblk = u32::try_from(dir.size().div_ceil(self.bs()))
            .map_err(|_| Error::invalid("directory too large"))?;
        let low_list: Vec<(u32, &[u8], u8)> = low.iter().map(|(i, n, t)| (*i, n.as_slice(), *t)).collect();
        let high_list: Vec<(u32, &[u8], u8)> = high.iter().map(|(i, n, t)| (*i, n.as_slice(), *t)).collect();
        let low_block = self.new_leaf(dir, &low_list)?;
        let high_block = self.new_leaf(dir, &high_list)?;
        let new_pblk = self.append_block(dir, map)?;
        dir.set_size((u64::from(new_lblk) + 1) * self.bs());
        self.write_block(new_pblk, &high_block)?;
        self.write_block(pblk, &low_block)?;
        // Shift the parent's entries after the slot and insert ours.
        let at = path.base + (path.slot + 1) * 8;
        let end = path.base + count * 8;
        parent.copy_within(at..end, at + 8);
        put32(&mut parent, at, split_hash);
        put32(&mut parent, at + 4, new_lblk);
        put16(&mut parent, path.base + 2, (count + 1) as u16);
        self.seal_dx_node(dir, &mut parent, path.base)?;
        self.write_block(path.parent, &parent)
    }

    /// Splits a full interior index node in two, recording the new node in
    /// the node above it. Refuses when there is none (a full root) or it is
    /// full as well.
    fn split_index(&mut self, dir: &mut Inode, map: FileMap, path: &DxPath) -> Result<()> {
        let refuse = || {
            Err(Error::unsupported(format!(
                "htree index of directory inode {} is full; growing the index depth is not implemented",
                dir.ino
            )))
        };
        let Some((gblk, gbase, gslot)) = path.grand else {
            return refuse();
        };
        let mut grand = self.read_block(gblk)?;
        let (glimit, gcount) = (
            usize::from(le16(&grand, gbase)),
            usize::from(le16(&grand, gbase + 2)),
        );
        if gcount >= glimit || gslot >= gcount {
            return refuse();
        }
        let bs = self.bs() as usize;
        let mut node = self.read_block(path.parent)?;
        let base = path.base;
        let (limit, count) = (usize::from(le16(&node, base)), usize::from(le16(&node, base + 2)));
        if count < 2 || base + limit * 8 > bs {
            return Err(Error::corrupt("htree index node counts", path.parent * self.bs()));
        }
        let mid = count / 2;
        let key = le32(&node, base + mid * 8);
        let mut fresh = vec![0u8; bs];
        fresh[..8].copy_from_slice(&node[..8]);
        fresh[base + 8..base + (count - mid) * 8]
            .copy_from_slice(&node[base + (mid + 1) * 8..base + count * 8]);
        put16(&mut fresh, base, limit as u16);
        put16(&mut fresh, base + 2, (count - mid) as u16);
        put32(&mut fresh, base + 4, le32(&node, base + mid * 8 + 4));
        node[base + mid * 8..base + count * 8].fill(0);
        put16(&mut node, base + 2, mid as u16);
        let new_lblk = u32::try_from(dir.size().div_ceil(self.bs()))
            .map_err(|_| Error::invalid("directory too large"))?;
        let new_pblk = self.append_block(dir, map)?;
        dir.set_size((u64::from(new_lblk) + 1) * self.bs());
        self.seal_dx_node(dir, &mut fresh, base)?;
        self.seal_dx_node(dir, &mut node, base)?;
        self.write_block(new_pblk, &fresh)?;
        self.write_block(path.parent, &node)?;
        let at = gbase + (gslot + 1) * 8;
        grand.copy_within(at..gbase + gcount * 8, at + 8);
        put32(&mut grand, at, key);
        put32(&mut grand, at + 4, new_lblk);
        put16(&mut grand, gbase + 2, (gcount + 1) as u16);
        self.seal_dx_node(dir, &mut grand, gbase)?;
        self.write_block(gblk, &grand)
    }
}
