//! Caps that real images cannot reach, on synthetic structures.

use super::bmap::{self, MAX_BTREE_BLOCKS};
use super::dir::{self, MAX_DIR_BLOCKS};
use super::fuzz::ZeroExtended;
use super::inode::{ForkFormat, Inode};
use super::sb::Superblock;
use v2x_formats::Error;

/// A v4 superblock: 4 KiB blocks, one AG of 2^22 blocks, 256-byte inodes.
fn superblock() -> Superblock {
    let mut b = vec![0u8; Superblock::SIZE];
    b[0..4].copy_from_slice(b"XFSB");
    b[4..8].copy_from_slice(&4096u32.to_be_bytes());
    b[8..16].copy_from_slice(&(1u64 << 22).to_be_bytes());
    b[56..64].copy_from_slice(&128u64.to_be_bytes());
    b[84..88].copy_from_slice(&(1u32 << 22).to_be_bytes());
    b[88..92].copy_from_slice(&1u32.to_be_bytes());
    b[100..102].copy_from_slice(&0x2004u16.to_be_bytes());
    b[104..106].copy_from_slice(&256u16.to_be_bytes());
    b[120] = 12;
    b[122] = 8;
    b[123] = 4;
    b[124] = 22;
    Superblock::parse(&b).unwrap()
}

fn inode(format: ForkFormat, fork: Vec<u8>, nextents: u64) -> Inode {
    Inode {
        ino: 131,
        offset: 0,
        mode: 0o040755,
        uid: 0,
        gid: 0,
        size: 1 << 40,
        nextents,
        format,
        realtime: false,
        fork,
        fork_offset: 100,
    }
}

/// Extent record: file block, fs block, count.
fn rec(file_block: u64, fs_block: u64, count: u64) -> [u8; 16] {
    let x = (u128::from(file_block) << 73) | (u128::from(fs_block) << 21) | u128::from(count);
    x.to_be_bytes()
}

#[test]
fn directory_block_count_is_capped() {
    let sb = superblock();
    let mut fork = vec![0u8; 156];
    fork[..16].copy_from_slice(&rec(0, 1, (1 << 21) - 1));
    let dir = inode(ForkFormat::Extents, fork, 1);
    let err = dir::read_dir(&ZeroExtended(Vec::new()), &sb, &dir).unwrap_err();
    assert!(
        matches!(err, Error::LimitExceeded { what: "XFS directory data blocks", max, .. } if max == MAX_DIR_BLOCKS),
        "{err}"
    );
}

#[test]
fn bmap_btree_block_count_is_capped() {
    let sb = superblock();
    // Block 10: level 2, 254 pointers to block 11; block 11: level 1, 254
    // pointers to block 12; block 12: a leaf with one extent. The root
    // points at block 10 twice: far more than MAX_BTREE_BLOCKS visits.
    let mut disk = vec![0u8; 13 * 4096];
    let maxrecs = (4096 - 24) / 16;
    for (blk, level, child) in [(10usize, 2u16, 11u64), (11, 1, 12)] {
        let b = &mut disk[blk * 4096..(blk + 1) * 4096];
        b[0..4].copy_from_slice(b"BMAP");
        b[4..6].copy_from_slice(&level.to_be_bytes());
        b[6..8].copy_from_slice(&(maxrecs as u16).to_be_bytes());
        for i in 0..maxrecs {
            let at = 24 + maxrecs * 8 + i * 8;
            b[at..at + 8].copy_from_slice(&child.to_be_bytes());
        }
    }
    let leaf = &mut disk[12 * 4096..13 * 4096];
    leaf[0..4].copy_from_slice(b"BMAP");
    leaf[6..8].copy_from_slice(&1u16.to_be_bytes());
    leaf[24..40].copy_from_slice(&rec(0, 1, 1));
    let mut fork = vec![0u8; 156];
    let root_max = (156 - 4) / 16;
    fork[0..2].copy_from_slice(&3u16.to_be_bytes());
    fork[2..4].copy_from_slice(&2u16.to_be_bytes());
    for i in 0..2 {
        let at = 4 + root_max * 8 + i * 8;
        fork[at..at + 8].copy_from_slice(&10u64.to_be_bytes());
    }
    let file = inode(ForkFormat::Btree, fork, 1);
    let err = bmap::extents(&ZeroExtended(disk), &sb, &file).unwrap_err();
    assert!(
        matches!(err, Error::LimitExceeded { what: "XFS bmap btree blocks in one fork", max, .. } if max == MAX_BTREE_BLOCKS),
        "{err}"
    );
}
