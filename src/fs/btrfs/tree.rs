//! Tree blocks: reading logical addresses through the chunk map, checking
//! node headers and checksums, and walking a key range of a B-tree in order.
//!
//! Hostile trees cannot loop: a child's level must be its parent's minus one,
//! and every key of a child must lie inside the key range its parent pointer
//! gives it (starting exactly at the pointer's key), so no node is reachable
//! twice in one walk.

use super::chunk::ChunkMap;
use super::sb::{crc32c, le32, le64};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use v2x_formats::block::BlockSource;
use v2x_formats::{Error, Result};

/// btrfs's maximum tree height.
pub const MAX_TREE_DEPTH: u8 = 8;
/// Size of a tree block header.
pub const HEADER_SIZE: usize = 0x65;
/// Size of a leaf item record (key, data offset, data size).
const ITEM_SIZE: usize = 25;
/// Size of an internal node's key pointer (key, block pointer, generation).
const KEY_PTR_SIZE: usize = 33;
/// Tree blocks kept in memory.
pub const MAX_CACHED_NODES: usize = 1024;
/// Most tree blocks one walk may read (a 16 KiB-node tree this large holds
/// far more than any guest filesystem's directory or file).
pub const MAX_NODES_PER_WALK: usize = 1 << 20;

/// A btrfs key: (objectid, type, offset), ordered in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Object id (inode number, tree id, ...).
    pub objectid: u64,
    /// Item type.
    pub ty: u8,
    /// Type-specific offset (file offset, name hash, parent id, ...).
    pub offset: u64,
}

impl Key {
    /// Builds a key.
    pub const fn new(objectid: u64, ty: u8, offset: u64) -> Self {
        Self { objectid, ty, offset }
    }

    /// Parses a 17-byte on-disk key (callers pass at least 17 bytes).
    pub fn parse(b: &[u8]) -> Self {
        Self {
            objectid: le64(b, 0),
            ty: b.get(8).copied().unwrap_or(0),
            offset: le64(b, 9),
        }
    }

    /// The smallest key with this objectid and type.
    pub const fn first(objectid: u64, ty: u8) -> Self {
        Self::new(objectid, ty, 0)
    }

    /// The largest key with this objectid and type.
    pub const fn last(objectid: u64, ty: u8) -> Self {
        Self::new(objectid, ty, u64::MAX)
    }
}

/// Where a tree starts: its top node and that node's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeRoot {
    /// Logical address of the top node.
    pub bytenr: u64,
    /// Level of the top node (0 = leaf).
    pub level: u8,
}

/// One leaf item handed to a walk's visitor.
pub struct Item<'a> {
    /// The item's key.
    pub key: Key,
    /// The item's data.
    pub data: &'a [u8],
    /// Physical byte offset of the data on the device (for error messages).
    pub at: u64,
}

/// Reads tree blocks and data through the chunk map.
pub struct Reader {
    source: Arc<dyn BlockSource>,
    chunks: ChunkMap,
    node_size: u32,
    metadata_uuid: [u8; 16],
    verify_csum: bool,
    cache: Mutex<HashMap<u64, Arc<Node>>>,
}

/// A checked tree block.
struct Node {
    data: Vec<u8>,
    /// Physical offset of the copy that was read.
    phys: u64,
}

impl Reader {
    /// A reader over `source` with a bootstrap chunk map (more chunks are
    /// added with [`Reader::set_chunks`] once the chunk tree is read).
    pub fn new(
        source: Arc<dyn BlockSource>,
        chunks: ChunkMap,
        node_size: u32,
        metadata_uuid: [u8; 16],
        verify_csum: bool,
    ) -> Self {
        Self {
            source,
            chunks,
            node_size,
            metadata_uuid,
            verify_csum,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the chunk map (after reading the chunk tree).
    pub fn set_chunks(&mut self, chunks: ChunkMap) {
        self.chunks = chunks;
        self.cache.lock().map(|mut c| c.clear()).ok();
    }

    /// Physical offset of logical byte `logical` (first copy), for messages.
    pub fn phys(&self, logical: u64) -> u64 {
        self.chunks.map(logical).map_or(0, |(c, _)| c[0])
    }

    /// Reads `buf.len()` bytes at a logical address (first copy of each chunk).
    pub fn read_logical(&self, logical: u64, buf: &mut [u8], at: u64) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = logical
                .checked_add(done as u64)
                .ok_or_else(|| Error::corrupt("btrfs logical address overflows", at))?;
            let Some((copies, avail)) = self.chunks.map(pos) else {
                return Err(Error::corrupt(
                    format!("btrfs logical address {pos:#x} is in no chunk"),
                    at,
                ));
            };
            let n = (buf.len() - done).min(usize::try_from(avail).unwrap_or(usize::MAX));
            self.source.read_at(copies[0], &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn read_node(&self, logical: u64, level: u8, at: u64) -> Result<Arc<Node>> {
        if let Some(n) = self.cache.lock().ok().and_then(|c| c.get(&logical).cloned()) {
            return check_level(n, logical, level);
        }
        let size = self.node_size as usize;
        let Some((copies, avail)) = self.chunks.map(logical) else {
            return Err(Error::corrupt(
                format!("btrfs tree block {logical:#x} is in no chunk"),
                at,
            ));
        };
        if avail < size as u64 {
            return Err(Error::corrupt(
                format!("btrfs tree block {logical:#x} crosses the end of its chunk"),
                at,
            ));
        }
        let mut last_err = None;
        for phys in copies {
            let mut data = vec![0u8; size];
            if let Err(e) = self.source.read_at(phys, &mut data) {
                last_err = Some(e);
                continue;
            }
            match self.check_header(&data, logical, phys) {
                Ok(()) => {
                    let node = Arc::new(Node { data, phys });
                    if let Ok(mut c) = self.cache.lock() {
                        if c.len() >= MAX_CACHED_NODES {
                            c.clear();
                        }
                        c.insert(logical, node.clone());
                    }
                    return check_level(node, logical, level);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::corrupt("btrfs tree block has no copy", at)))
    }

    fn check_header(&self, data: &[u8], logical: u64, phys: u64) -> Result<()> {
        if self.verify_csum {
            let want = le32(data, 0);
            let got = crc32c(&data[0x20..]);
            if want != got {
                return Err(Error::corrupt(
                    format!("btrfs tree block {logical:#x} checksum mismatch (stored {want:#010x}, computed {got:#010x})"),
                    phys,
                ));
            }
        }
        if le64(data, 0x30) != logical {
            return Err(Error::corrupt(
                format!(
                    "btrfs tree block at logical {logical:#x} says it is at {:#x}",
                    le64(data, 0x30)
                ),
                phys + 0x30,
            ));
        }
        if data[0x20..0x30] != self.metadata_uuid {
            return Err(Error::corrupt(
                format!("btrfs tree block {logical:#x} belongs to another filesystem"),
                phys + 0x20,
            ));
        }
        Ok(())
    }

    /// Visits the items with keys in `[lo, hi]` of the tree at `root`, in key
    /// order, until `visit` returns `Ok(false)`.
    pub fn walk(
        &self,
        root: TreeRoot,
        lo: Key,
        hi: Key,
        visit: &mut dyn FnMut(Item<'_>) -> Result<bool>,
    ) -> Result<()> {
        if root.level >= MAX_TREE_DEPTH {
            return Err(Error::corrupt(
                format!("btrfs tree at {:#x} claims level {}", root.bytenr, root.level),
                self.phys(root.bytenr),
            ));
        }
        let mut budget = MAX_NODES_PER_WALK;
        let bounds = Bounds {
            first: None,
            lo: Key::new(0, 0, 0),
            hi: None,
        };
        self.walk_node(root.bytenr, root.level, bounds, lo, hi, visit, &mut budget, 0)
            .map(|_| ())
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_node(
        &self,
        bytenr: u64,
        level: u8,
        bounds: Bounds,
        lo: Key,
        hi: Key,
        visit: &mut dyn FnMut(Item<'_>) -> Result<bool>,
        budget: &mut usize,
        parent_at: u64,
    ) -> Result<bool> {
        if *budget == 0 {
            return Err(Error::LimitExceeded {
                what: "btrfs tree blocks read in one walk",
                value: MAX_NODES_PER_WALK as u64 + 1,
                max: MAX_NODES_PER_WALK as u64,
            });
        }
        *budget -= 1;
        let node = self.read_node(bytenr, level, parent_at)?;
        let d = &node.data;
        let nritems = le32(d, 0x60) as usize;
        let rec = if level == 0 { ITEM_SIZE } else { KEY_PTR_SIZE };
        if nritems > (d.len() - HEADER_SIZE) / rec || (level > 0 && nritems == 0) {
            return Err(Error::corrupt(
                format!("btrfs tree block {bytenr:#x} claims {nritems} items"),
                node.phys + 0x60,
            ));
        }
        let key_at = |i: usize| Key::parse(&d[HEADER_SIZE + i * rec..]);
        // Key order and bounds.
        let mut prev: Option<Key> = None;
        for i in 0..nritems {
            let k = key_at(i);
            let bad_order = prev.is_some_and(|p| p >= k);
            let bad_first = i == 0 && bounds.first.is_some_and(|f| f != k);
            let out = k < bounds.lo || bounds.hi.is_some_and(|h| k >= h);
            if bad_order || bad_first || out {
                return Err(Error::corrupt(
                    format!("btrfs tree block {bytenr:#x}: key {i} is out of order"),
                    node.phys + (HEADER_SIZE + i * rec) as u64,
                ));
            }
            prev = Some(k);
        }
        if level == 0 {
            for i in 0..nritems {
                let k = key_at(i);
                if k < lo {
                    continue;
                }
                if k > hi {
                    return Ok(false);
                }
                let r = HEADER_SIZE + i * rec;
                let off = le32(d, r + 17) as usize;
                let size = le32(d, r + 21) as usize;
                let start = HEADER_SIZE + off;
                let Some(data) = d.get(start..start.saturating_add(size)) else {
                    return Err(Error::corrupt(
                        format!("btrfs leaf {bytenr:#x}: item {i} data lies outside the block"),
                        node.phys + r as u64,
                    ));
                };
                let item = Item {
                    key: k,
                    data,
                    at: node.phys + start as u64,
                };
                if !visit(item)? {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        for i in 0..nritems {
            let k = key_at(i);
            let next = (i + 1 < nritems).then(|| key_at(i + 1));
            if k > hi {
                return Ok(false);
            }
            if next.is_some_and(|n| n <= lo) {
                continue;
            }
            let r = HEADER_SIZE + i * rec;
            let child = le64(d, r + 17);
            let child_bounds = Bounds {
                first: Some(k),
                lo: k,
                hi: next.or(bounds.hi),
            };
            let at = node.phys + r as u64;
            if !self.walk_node(child, level - 1, child_bounds, lo, hi, visit, budget, at)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The data of the item with exactly `key`, if present.
    pub fn find(&self, root: TreeRoot, key: Key) -> Result<Option<(Vec<u8>, u64)>> {
        let mut found = None;
        self.walk(root, key, key, &mut |it| {
            found = Some((it.data.to_vec(), it.at));
            Ok(false)
        })?;
        Ok(found)
    }

    /// The first item with a key in `[lo, hi]`, if any.
    pub fn first_in(&self, root: TreeRoot, lo: Key, hi: Key) -> Result<Option<(Key, Vec<u8>, u64)>> {
        let mut found = None;
        self.walk(root, lo, hi, &mut |it| {
            found = Some((it.key, it.data.to_vec(), it.at));
            Ok(false)
        })?;
        Ok(found)
    }
}

#[derive(Clone, Copy)]
struct Bounds {
    /// The key the first item must have (the parent pointer's key).
    first: Option<Key>,
    /// Smallest key allowed.
    lo: Key,
    /// Keys must be below this.
    hi: Option<Key>,
}

fn check_level(node: Arc<Node>, logical: u64, level: u8) -> Result<Arc<Node>> {
    let got = node.data[0x64];
    if got != level {
        return Err(Error::corrupt(
            format!("btrfs tree block {logical:#x} has level {got}, its parent expects {level}"),
            node.phys + 0x64,
        ));
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::btrfs::fuzz::SparseDisk;

    #[test]
    fn tree_depth_is_capped() {
        let r = Reader::new(
            Arc::new(SparseDisk::from_records(&[])),
            ChunkMap::default(),
            16384,
            [0; 16],
            true,
        );
        let root = TreeRoot {
            bytenr: 0x100000,
            level: MAX_TREE_DEPTH,
        };
        let e = r
            .walk(root, Key::first(0, 0), Key::last(0, 0), &mut |_| Ok(true))
            .unwrap_err();
        assert_eq!(e.kind_name(), "corrupt", "{e}");
        assert!(e.to_string().contains("level"), "{e}");
    }

    #[test]
    fn unmapped_tree_block_is_corrupt() {
        let r = Reader::new(
            Arc::new(SparseDisk::from_records(&[])),
            ChunkMap::default(),
            16384,
            [0; 16],
            true,
        );
        let root = TreeRoot {
            bytenr: 0x100000,
            level: 0,
        };
        let e = r.find(root, Key::first(1, 1)).unwrap_err();
        assert!(e.to_string().contains("in no chunk"), "{e}");
    }
}
