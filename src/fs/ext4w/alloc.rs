//! Block and inode allocation through the per-group bitmaps, honouring the
//! lazy-init flags (BLOCK_UNINIT, INODE_UNINIT) and keeping the group and
//! superblock free counts and bitmap checksums in step.

use super::csum::crc32c_raw;
use super::layout::{BG_BLOCK_UNINIT, BG_INODE_UNINIT};
use super::Ext4Writer;
use v2x_formats::{Error, Result};

fn bit(map: &[u8], i: u64) -> bool {
    map[(i / 8) as usize] & (1 << (i % 8)) != 0
}

fn set_bit(map: &mut [u8], i: u64, on: bool) {
    let m = 1u8 << (i % 8);
    if on {
        map[(i / 8) as usize] |= m;
    } else {
        map[(i / 8) as usize] &= !m;
    }
}

impl Ext4Writer {
    /// Group holding block `blk`, and the block's index inside it.
    fn block_group(&self, blk: u64) -> Result<(u32, u64)> {
        let first = u64::from(self.sb.first_data_block);
        if blk < first || blk >= self.sb.blocks_count {
            return Err(Error::corrupt(format!("block {blk} outside the filesystem"), 0));
        }
        let rel = blk - first;
        let bpg = u64::from(self.sb.blocks_per_group);
        Ok(((rel / bpg) as u32, rel % bpg))
    }

    /// The block bitmap of group `g`, built from the group layout when the
    /// group is still BLOCK_UNINIT.
    fn block_bitmap(&mut self, g: u32) -> Result<&mut Vec<u8>> {
        if !self.block_bitmaps.contains_key(&g) {
            let gd = &self.groups[g as usize];
            let map = if gd.flags() & BG_BLOCK_UNINIT != 0 {
                self.synthesize_block_bitmap(g)
            } else {
                let blk = gd.block_bitmap();
                let map = self.read_block(blk)?;
                if self.sb.metadata_csum {
                    let c = crc32c_raw(self.sb.csum_seed, &map[..(self.sb.blocks_per_group / 8) as usize]);
                    if !gd.block_bitmap_csum_matches(c) {
                        return Err(Error::corrupt(
                            format!("group {g} block bitmap checksum"),
                            blk * self.bs(),
                        ));
                    }
                }
                map
            };
            self.block_bitmaps.insert(g, map);
        }
        Ok(self.block_bitmaps.get_mut(&g).expect("just inserted"))
    }

    /// What an uninitialised group's bitmap means: its superblock backup,
    /// descriptor copies and any group's bitmaps or inode table inside it
    /// are in use; bits past the group's end are padding (set).
    fn synthesize_block_bitmap(&self, g: u32) -> Vec<u8> {
        let sb = &self.sb;
        let mut map = vec![0u8; sb.block_size as usize];
        let start = sb.group_first_block(g);
        let n = sb.group_blocks(g);
        let mut mark = |b: u64, count: u64| {
            // Only the part of [b, b + count) inside this group.
            let lo = b.max(start);
            let hi = b.saturating_add(count).min(start + n);
            for blk in lo..hi {
                set_bit(&mut map, blk - start, true);
            }
        };
        if sb.has_super(g) {
            mark(start, 1 + sb.gdt_blocks() + u64::from(sb.reserved_gdt_blocks));
        }
        for gd in &self.groups {
            mark(gd.block_bitmap(), 1);
            mark(gd.inode_bitmap(), 1);
            mark(gd.inode_table(), sb.itable_blocks());
        }
        for i in n..sb.block_size * 8 {
            set_bit(&mut map, i, true);
        }
        map
    }

    /// Writes group `g`'s block bitmap, its checksum and descriptor.
    fn store_block_bitmap(&mut self, g: u32) -> Result<()> {
        let map = self
            .block_bitmaps
            .get(&g)
            .expect("bitmap loaded before store")
            .clone();
        let gd = &mut self.groups[g as usize];
        gd.set_flags(gd.flags() & !BG_BLOCK_UNINIT);
        if self.sb.metadata_csum {
            gd.set_block_bitmap_csum(crc32c_raw(
                self.sb.csum_seed,
                &map[..(self.sb.blocks_per_group / 8) as usize],
            ));
        }
        let blk = gd.block_bitmap();
        self.write_block(blk, &map)?;
        self.write_group(g)
    }

    /// Allocates `count` blocks, preferring group `goal_group` and the
    /// groups after it. Returns runs `(first, len)`. All or nothing.
    pub(super) fn alloc_blocks(&mut self, goal_group: u32, count: u64) -> Result<Vec<(u64, u64)>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        if self.sb.free_blocks() < count {
            return Err(Error::invalid(format!(
                "no space: {count} blocks wanted, {} free",
                self.sb.free_blocks()
            )));
        }
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut left = count;
        let ngroups = self.sb.group_count;
        for step in 0..ngroups {
            if left == 0 {
                break;
            }
            let g = (goal_group % ngroups + step) % ngroups;
            if self.groups[g as usize].free_blocks() == 0 {
                continue;
            }
            let n = self.sb.group_blocks(g);
            let start = self.sb.group_first_block(g);
            let map = self.block_bitmap(g)?;
            let mut taken = 0u64;
            let mut i = 0;
            while i < n && left > 0 {
                if bit(map, i) {
                    i += 1;
                    continue;
                }
                let run_start = i;
                while i < n && left > 0 && !bit(map, i) {
                    set_bit(map, i, true);
                    i += 1;
                    left -= 1;
                }
                taken += i - run_start;
                match runs.last_mut() {
                    Some(last) if last.0 + last.1 == start + run_start => last.1 += i - run_start,
                    _ => runs.push((start + run_start, i - run_start)),
                }
            }
            if taken > 0 {
                let gd = &mut self.groups[g as usize];
                let free = u64::from(gd.free_blocks());
                if taken > free {
                    return Err(Error::corrupt(
                        format!("group {g} free block count below its bitmap"),
                        self.sb.desc_offset(g),
                    ));
                }
                gd.set_free_blocks((free - taken) as u32);
                self.store_block_bitmap(g)?;
            }
        }
        let got = count - left;
        self.sb.set_free_blocks(self.sb.free_blocks() - got);
        if left > 0 {
            self.free_blocks(&runs)?;
            return Err(Error::invalid(format!(
                "no space: {count} blocks wanted, found {got}"
            )));
        }
        Ok(runs)
    }

    /// Frees block runs `(first, len)`.
    pub(super) fn free_blocks(&mut self, runs: &[(u64, u64)]) -> Result<()> {
        let mut freed = 0u64;
        let mut touched = Vec::new();
        for &(first, len) in runs {
            for blk in first..first.saturating_add(len) {
                let (g, i) = self.block_group(blk)?;
                let map = self.block_bitmap(g)?;
                if !bit(map, i) {
                    return Err(Error::corrupt(
                        format!("block {blk} freed twice (not in use)"),
                        blk * self.sb.block_size,
                    ));
                }
                set_bit(map, i, false);
                let gd = &mut self.groups[g as usize];
                gd.set_free_blocks(gd.free_blocks().saturating_add(1));
                freed += 1;
                if touched.last() != Some(&g) {
                    touched.push(g);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for g in touched {
            self.store_block_bitmap(g)?;
        }
        self.sb
            .set_free_blocks(self.sb.free_blocks().saturating_add(freed));
        Ok(())
    }

    /// The inode bitmap of group `g` (zeroed with padding when INODE_UNINIT).
    fn inode_bitmap(&mut self, g: u32) -> Result<&mut Vec<u8>> {
        if !self.inode_bitmaps.contains_key(&g) {
            let gd = &self.groups[g as usize];
            let ipg = u64::from(self.sb.inodes_per_group);
            let map = if gd.flags() & BG_INODE_UNINIT != 0 {
                let mut m = vec![0u8; self.bs() as usize];
                for i in ipg..self.bs() * 8 {
                    set_bit(&mut m, i, true);
                }
                m
            } else {
                let blk = gd.inode_bitmap();
                let m = self.read_block(blk)?;
                if self.sb.metadata_csum {
                    let c = crc32c_raw(self.sb.csum_seed, &m[..(ipg / 8) as usize]);
                    if !gd.inode_bitmap_csum_matches(c) {
                        return Err(Error::corrupt(
                            format!("group {g} inode bitmap checksum"),
                            blk * self.bs(),
                        ));
                    }
                }
                m
            };
            self.inode_bitmaps.insert(g, map);
        }
        Ok(self.inode_bitmaps.get_mut(&g).expect("just inserted"))
    }

    fn store_inode_bitmap(&mut self, g: u32) -> Result<()> {
        let map = self
            .inode_bitmaps
            .get(&g)
            .expect("bitmap loaded before store")
            .clone();
        let ipg = self.sb.inodes_per_group as usize;
        let gd = &mut self.groups[g as usize];
        gd.set_flags(gd.flags() & !BG_INODE_UNINIT);
        if self.sb.metadata_csum {
            gd.set_inode_bitmap_csum(crc32c_raw(self.sb.csum_seed, &map[..ipg / 8]));
        }
        let blk = gd.inode_bitmap();
        self.write_block(blk, &map)?;
        self.write_group(g)
    }

    /// Allocates the lowest free inode, preferring group `goal_group`.
    pub(super) fn alloc_inode(&mut self, goal_group: u32, is_dir: bool) -> Result<u32> {
        let ngroups = self.sb.group_count;
        let ipg = self.sb.inodes_per_group;
        for step in 0..ngroups {
            let g = (goal_group % ngroups + step) % ngroups;
            if self.groups[g as usize].free_inodes() == 0 {
                continue;
            }
            let first_ino = self.sb.first_ino;
            let map = self.inode_bitmap(g)?;
            let found = (0..ipg).find(|&i| {
                let ino = g * ipg + i + 1;
                ino >= first_ino && !bit(map, u64::from(i))
            });
            let Some(i) = found else { continue };
            set_bit(map, u64::from(i), true);
            let gd = &mut self.groups[g as usize];
            gd.set_free_inodes(gd.free_inodes() - 1);
            if is_dir {
                gd.set_used_dirs(gd.used_dirs() + 1);
            }
            // Inodes past `ipg - itable_unused` were never used; e2fsck only
            // scans below that line, so move it past the new inode.
            if i + 1 > ipg - gd.itable_unused() {
                gd.set_itable_unused(ipg - (i + 1));
            }
            self.store_inode_bitmap(g)?;
            self.sb.set_free_inodes(self.sb.free_inodes().saturating_sub(1));
            return Ok(g * ipg + i + 1);
        }
        Err(Error::invalid("no free inodes"))
    }

    /// Releases inode `ino` in its bitmap and the free counts.
    pub(super) fn free_inode(&mut self, ino: u32, is_dir: bool) -> Result<()> {
        let ipg = self.sb.inodes_per_group;
        let g = (ino - 1) / ipg;
        let i = u64::from((ino - 1) % ipg);
        let map = self.inode_bitmap(g)?;
        if !bit(map, i) {
            return Err(Error::corrupt(format!("inode {ino} freed twice (not in use)"), 0));
        }
        set_bit(map, i, false);
        let gd = &mut self.groups[g as usize];
        gd.set_free_inodes(gd.free_inodes().saturating_add(1));
        if is_dir {
            gd.set_used_dirs(gd.used_dirs().saturating_sub(1));
        }
        self.store_inode_bitmap(g)?;
        self.sb.set_free_inodes(self.sb.free_inodes().saturating_add(1));
        Ok(())
    }
}
