//! Differencing VHDX: qemu-img cannot create one, so the test turns a
//! qemu-made dynamic VHDX into a child of another qemu-made VHDX by editing
//! its metadata (HasParent, a parent locator) and BAT (partially present
//! block with a sector bitmap, blocks falling through to the parent).

mod vhd_support;

use std::path::Path;
use v2x_formats::error::Error;
use v2x_formats::{open_image, ExtentKind, OpenOptions};
use vhd_support::{assert_same_as_raw, generate, open, run_tool};

const MIB: usize = 1 << 20;
const BLOCK: usize = 8 * MIB;

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&d1.to_le_bytes());
    g[4..6].copy_from_slice(&d2.to_le_bytes());
    g[6..8].copy_from_slice(&d3.to_le_bytes());
    g[8..].copy_from_slice(&d4);
    g
}

fn guid_text(g: &[u8]) -> String {
    format!(
        "{{{:08x}-{:04x}-{:04x}-{}-{}}}",
        le32(g, 0),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8..10].iter().map(|b| format!("{b:02x}")).collect::<String>(),
        g[10..16].iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// DataWriteGuid of the current (highest sequence) header.
fn data_write_guid(img: &[u8]) -> [u8; 16] {
    let h = [0x10000, 0x20000]
        .into_iter()
        .filter(|h| &img[*h..*h + 4] == b"head")
        .max_by_key(|h| le64(img, h + 8))
        .unwrap();
    img[h + 32..h + 48].try_into().unwrap()
}

/// (BAT offset, metadata offset) from region table 1.
fn regions(img: &[u8]) -> (usize, usize) {
    let r = 0x30000;
    let (mut bat, mut meta) = (0, 0);
    for i in 0..le32(img, r + 8) as usize {
        let e = r + 16 + 32 * i;
        let at = le64(img, e + 16) as usize;
        if img[e..e + 4] == [0x66, 0x77, 0xc2, 0x2d] {
            bat = at;
        } else {
            meta = at;
        }
    }
    (bat, meta)
}

fn locator(linkage: &str, path: &str) -> Vec<u8> {
    let utf16 = |s: &str| {
        s.encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let pairs = [("parent_linkage", linkage), ("relative_path", path)];
    let mut out = guid(
        0xb04a_efb7,
        0xd19e,
        0x4a81,
        [0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13],
    )
    .to_vec();
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(pairs.len() as u16).to_le_bytes());
    let mut strings = Vec::new();
    let base = 20 + 12 * pairs.len();
    let mut entries = Vec::new();
    for (k, v) in pairs {
        let (k, v) = (utf16(k), utf16(v));
        entries.extend_from_slice(&((base + strings.len()) as u32).to_le_bytes());
        let vo = base + strings.len() + k.len();
        entries.extend_from_slice(&(vo as u32).to_le_bytes());
        entries.extend_from_slice(&(k.len() as u16).to_le_bytes());
        entries.extend_from_slice(&(v.len() as u16).to_le_bytes());
        strings.extend_from_slice(&k);
        strings.extend_from_slice(&v);
    }
    out.extend_from_slice(&entries);
    out.extend_from_slice(&strings);
    out
}

/// Turns `img` into a child of a parent with DataWriteGuid `linkage`.
/// Returns the edited image and, per payload block, its BAT state.
fn make_child(mut img: Vec<u8>, linkage: &str) -> (Vec<u8>, Vec<u64>) {
    let (bat, meta) = regions(&img);
    let params = guid(
        0xcaa1_6737,
        0xfa36,
        0x4d43,
        [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
    );
    let count = u16::from_le_bytes([img[meta + 10], img[meta + 11]]) as usize;
    for i in 0..count {
        let e = meta + 32 + 32 * i;
        if img[e..e + 16] == params {
            let item = meta + le32(&img, e + 16) as usize;
            let flags = le32(&img, item + 4) | 2;
            put32(&mut img, item + 4, flags);
        }
    }
    let loc = locator(linkage, "parent.vhdx");
    let item_off = 0x80000;
    img[meta + item_off..meta + item_off + loc.len()].copy_from_slice(&loc);
    let e = meta + 32 + 32 * count;
    img[e..e + 16].copy_from_slice(&guid(
        0xa8d3_5f2d,
        0xb30b,
        0x454d,
        [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
    ));
    put32(&mut img, e + 16, item_off as u32);
    put32(&mut img, e + 20, loc.len() as u32);
    put32(&mut img, e + 24, 4 | 2);
    img[meta + 10..meta + 12].copy_from_slice(&((count + 1) as u16).to_le_bytes());
    // Block 0: partially present; 1: not present (parent); 2: zero.
    let e0 = le64(&img, bat);
    assert_eq!(e0 & 7, 6, "qemu should have allocated block 0");
    put64(&mut img, bat, (e0 & !7) | 7);
    put64(&mut img, bat + 8, 0);
    put64(&mut img, bat + 16, 2);
    // Sector bitmap block for chunk 0 (chunk ratio 512 at 8 MiB blocks).
    let bm_at = img.len().next_multiple_of(MIB);
    img.resize(bm_at + MIB, 0);
    img[bm_at..bm_at + 8].fill(0xff); // sectors 0..64
    img[bm_at + 125] = 0x01; // sector 1000
    put64(&mut img, bat + 512 * 8, (bm_at as u64) | 6);
    let states = (0..5).map(|i| le64(&img, bat + 8 * i) & 7).collect();
    (img, states)
}

fn expected(child: &[u8], parent: &[u8], states: &[u64]) -> Vec<u8> {
    let mut want = vec![0u8; child.len()];
    for (i, s) in states.iter().enumerate() {
        let r = i * BLOCK..((i + 1) * BLOCK).min(child.len());
        match s {
            6 => want[r.clone()].copy_from_slice(&child[r]),
            2 => {}
            7 => {
                want[r.clone()].copy_from_slice(&parent[r.clone()]);
                for s in (0..64).chain([1000]) {
                    let o = r.start + s * 512;
                    want[o..o + 512].copy_from_slice(&child[o..o + 512]);
                }
            }
            _ => want[r.clone()].copy_from_slice(&parent[r]),
        }
    }
    want
}

fn setup(dir: &Path, linkage: Option<&str>) -> (std::path::PathBuf, Vec<u8>) {
    // The parent holds different bytes (0x33) everywhere.
    let praw = dir.join("parent.raw");
    std::fs::write(&praw, vec![0x33u8; 40 * MIB]).unwrap();
    let parent = dir.join("parent.vhdx");
    let (p, pv) = (praw.to_str().unwrap(), parent.to_str().unwrap());
    run_tool(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "vhdx", "-o", "block_size=8M", p, pv],
    );
    let pguid = guid_text(&data_write_guid(&std::fs::read(&parent).unwrap()));
    let img = std::fs::read(dir.join("vhdx-dynamic-8M.vhdx")).unwrap();
    let (child, states) = make_child(img, linkage.unwrap_or(&pguid));
    let path = dir.join("child.avhdx");
    std::fs::write(&path, child).unwrap();
    let craw = std::fs::read(dir.join("pattern.raw")).unwrap();
    (path, expected(&craw, &std::fs::read(&praw).unwrap(), &states))
}

#[test]
fn differencing_vhdx_reads_through_to_its_parent() {
    let dir = generate();
    let (child, want) = setup(dir.path(), None);
    let src = open(&child);
    assert_eq!(src.info().subformat.as_deref(), Some("differencing"));
    assert!(src.info().backing.is_some());
    let raw = dir.path().join("want.raw");
    std::fs::write(&raw, &want).unwrap();
    assert_same_as_raw(src.as_ref(), &raw);
    let map = src.map(0, 2 * BLOCK as u64).unwrap();
    assert_eq!(
        (map[0].kind, map[0].len, map[0].layer),
        (ExtentKind::Data, 64 * 512, 0)
    );
    assert_eq!((map[1].kind, map[1].layer), (ExtentKind::Data, 1));
}

#[test]
fn wrong_parent_linkage_is_corrupt() {
    let dir = generate();
    let (child, _) = setup(dir.path(), Some("{01234567-89ab-cdef-0123-456789abcdef}"));
    let e = open_image(&child, &OpenOptions::default())
        .err()
        .expect("must fail");
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("DataWriteGuid"), "{e}");
}

#[test]
fn missing_parent_is_refused_naming_the_path() {
    let dir = generate();
    let (child, _) = setup(dir.path(), None);
    std::fs::remove_file(dir.path().join("parent.vhdx")).unwrap();
    let e = open_image(&child, &OpenOptions::default())
        .err()
        .expect("must fail");
    assert!(matches!(e, Error::Io { .. }), "{e}");
    let looked = dir.path().join("parent.vhdx").display().to_string();
    assert!(e.to_string().contains(&looked), "{e}");
}
