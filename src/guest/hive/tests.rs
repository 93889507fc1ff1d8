//! Unit tests on hand-built hives: structures hivex does not write (li, ri,
//! big data) and one-field mutations. Real hives made by hivex are checked
//! against hivexregedit in tests/windows_inspect.rs.

use super::header::{checksum, KEY_COMP_NAME, NO_CELL, VALUE_COMP_NAME};
use super::*;

/// Builds a one-bin hive cell by cell; offsets returned are hive-bin relative.
struct Builder {
    cells: Vec<u8>,
    minor: u32,
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

impl Builder {
    fn new() -> Self {
        Self {
            cells: Vec::new(),
            minor: 5,
        }
    }

    fn cell(&mut self, body: &[u8]) -> u32 {
        let off = 32 + self.cells.len() as u32;
        let size = (body.len() + 4).div_ceil(8) * 8;
        self.cells.extend_from_slice(&(-(size as i32)).to_le_bytes());
        self.cells.extend_from_slice(body);
        self.cells.resize(self.cells.len() + size - 4 - body.len(), 0);
        off
    }

    fn nk(&mut self, name: &str, subkeys: (u32, u32), values: (u32, u32)) -> u32 {
        let ascii = name.is_ascii();
        let raw = if ascii {
            name.as_bytes().to_vec()
        } else {
            utf16(name)
        };
        let mut b = vec![0u8; 76];
        b[0..2].copy_from_slice(b"nk");
        let flags = if ascii { KEY_COMP_NAME } else { 0 };
        b[2..4].copy_from_slice(&flags.to_le_bytes());
        b[20..24].copy_from_slice(&subkeys.0.to_le_bytes());
        b[28..32].copy_from_slice(&subkeys.1.to_le_bytes());
        b[32..36].copy_from_slice(&NO_CELL.to_le_bytes());
        b[36..40].copy_from_slice(&values.0.to_le_bytes());
        b[40..44].copy_from_slice(&values.1.to_le_bytes());
        b[72..74].copy_from_slice(&(raw.len() as u16).to_le_bytes());
        b.extend_from_slice(&raw);
        self.cell(&b)
    }

    fn vk(&mut self, name: &str, ty: u32, data: &[u8]) -> u32 {
        let (size, off) = if data.len() <= 4 {
            let mut d = [0u8; 4];
            d[..data.len()].copy_from_slice(data);
            (data.len() as u32 | 0x8000_0000, u32::from_le_bytes(d))
        } else {
            (data.len() as u32, self.cell(data))
        };
        self.vk_raw(name, ty, size, off)
    }

    fn vk_raw(&mut self, name: &str, ty: u32, size: u32, off: u32) -> u32 {
        let mut b = vec![0u8; 20];
        b[0..2].copy_from_slice(b"vk");
        b[2..4].copy_from_slice(&(name.len() as u16).to_le_bytes());
        b[4..8].copy_from_slice(&size.to_le_bytes());
        b[8..12].copy_from_slice(&off.to_le_bytes());
        b[12..16].copy_from_slice(&ty.to_le_bytes());
        b[16..18].copy_from_slice(&VALUE_COMP_NAME.to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        self.cell(&b)
    }

    fn offsets(&mut self, offs: &[u32]) -> u32 {
        let b: Vec<u8> = offs.iter().flat_map(|o| o.to_le_bytes()).collect();
        self.cell(&b)
    }

    fn list(&mut self, sig: &[u8; 2], offs: &[u32]) -> u32 {
        let mut b = sig.to_vec();
        b.extend_from_slice(&(offs.len() as u16).to_le_bytes());
        for o in offs {
            b.extend_from_slice(&o.to_le_bytes());
            if sig == b"lf" || sig == b"lh" {
                b.extend_from_slice(&[0; 4]);
            }
        }
        self.cell(&b)
    }

    fn finish(&self, root: u32) -> Vec<u8> {
        let bin_size = (32 + self.cells.len() + 8).div_ceil(4096) * 4096;
        let mut out = vec![0u8; 4096 + bin_size];
        out[0..4].copy_from_slice(b"regf");
        out[4..8].copy_from_slice(&1u32.to_le_bytes());
        out[8..12].copy_from_slice(&1u32.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..28].copy_from_slice(&self.minor.to_le_bytes());
        out[32..36].copy_from_slice(&1u32.to_le_bytes());
        out[36..40].copy_from_slice(&root.to_le_bytes());
        out[40..44].copy_from_slice(&(bin_size as u32).to_le_bytes());
        let sum = checksum(&out);
        out[508..512].copy_from_slice(&sum.to_le_bytes());
        let bin = &mut out[4096..];
        bin[0..4].copy_from_slice(b"hbin");
        bin[8..12].copy_from_slice(&(bin_size as u32).to_le_bytes());
        bin[32..32 + self.cells.len()].copy_from_slice(&self.cells);
        let free = (bin_size - 32 - self.cells.len()) as i32;
        bin[32 + self.cells.len()..][..4].copy_from_slice(&free.to_le_bytes());
        out
    }
}

/// Root with subkeys "Alpha" (li list of one) and "Bêta" (UTF-16 name), values of each type.
fn sample() -> (Vec<u8>, u32) {
    let mut b = Builder::new();
    let sz = b.vk("Name", 1, &utf16("hello\0"));
    let ex = b.vk("Path", 2, &utf16("%SystemRoot%\\x\0junk"));
    let ms = b.vk("Multi", 7, &utf16("a\0bc\0\0"));
    let dw = b.vk("Start", 4, &3u32.to_le_bytes());
    let be = b.vk("Be", 5, &7u32.to_be_bytes());
    let qw = b.vk("Q", 11, &(1u64 << 40).to_le_bytes());
    let bin = b.vk("Bin", 3, &[1, 2, 3, 4, 5, 6]);
    let def = b.vk("", 1, &utf16("default\0"));
    let none = b.vk("Nothing", 0, &[]);
    let vl = b.offsets(&[sz, ex, ms, dw, be, qw, bin, def, none]);
    let leaf = b.nk("Leaf", (0, NO_CELL), (0, NO_CELL));
    let leaf_list = b.list(b"li", &[leaf]);
    let alpha = b.nk("Alpha", (1, leaf_list), (9, vl));
    let beta = b.nk("Bêta", (0, NO_CELL), (0, NO_CELL));
    let list = b.list(b"lh", &[alpha, beta]);
    let root = b.nk("ROOT", (2, list), (0, NO_CELL));
    (b.finish(root), list)
}

#[test]
fn reads_keys_and_typed_values() {
    let hive = Hive::parse(sample().0).unwrap();
    assert!(hive.notes().is_empty(), "{:?}", hive.notes());
    let root = hive.root().unwrap();
    let names: Vec<String> = root
        .subkeys()
        .unwrap()
        .iter()
        .map(|k| k.name().to_string())
        .collect();
    assert_eq!(names, ["Alpha", "Bêta"]);
    assert!(root.subkey("BÊTA").unwrap().is_some());
    let a = hive.open("ALPHA").unwrap().unwrap();
    assert_eq!(hive.open("\\alpha\\leaf\\").unwrap().unwrap().name(), "Leaf");
    assert!(hive.open("Alpha\\Nope").unwrap().is_none());
    let v = |n: &str| a.value(n).unwrap().unwrap();
    assert_eq!(v("name").as_string().as_deref(), Some("hello"));
    assert_eq!(v("Path").as_string().as_deref(), Some("%SystemRoot%\\x"));
    assert_eq!(v("Multi").as_multi_string().unwrap(), ["a", "bc"]);
    assert_eq!(v("Start").as_u32(), Some(3));
    assert_eq!(v("Start").as_u64(), Some(3));
    assert_eq!(v("Be").as_u32(), Some(7));
    assert_eq!(v("Q").as_u64(), Some(1 << 40));
    assert_eq!(v("Q").as_u32(), None);
    assert_eq!(v("Bin").data(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(v("Bin").value_type(), ValueType::Binary);
    assert_eq!(v("").as_string().as_deref(), Some("default"));
    assert_eq!(v("Nothing").data(), b"");
    assert_eq!(a.values().unwrap().len(), 9);
    let mut paths = Vec::new();
    hive.walk(|p, _| {
        paths.push(p.to_string());
        Ok(())
    })
    .unwrap();
    assert_eq!(paths, ["", "Alpha", "Alpha\\Leaf", "Bêta"]);
}

#[test]
fn index_root_lists_and_big_data() {
    let mut b = Builder::new();
    let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let segs: Vec<u32> = big.chunks(16344).map(|c| b.cell(c)).collect();
    let seg_list = b.offsets(&segs);
    let mut db = b"db".to_vec();
    db.extend_from_slice(&(segs.len() as u16).to_le_bytes());
    db.extend_from_slice(&seg_list.to_le_bytes());
    let db = b.cell(&db);
    let val = b.vk_raw("Big", 3, big.len() as u32, db);
    let vl = b.offsets(&[val]);
    let k1 = b.nk("One", (0, NO_CELL), (1, vl));
    let k2 = b.nk("Two", (0, NO_CELL), (0, NO_CELL));
    let k3 = b.nk("Three", (0, NO_CELL), (0, NO_CELL));
    let l1 = b.list(b"lf", &[k1, k2]);
    let l2 = b.list(b"li", &[k3]);
    let ri = b.list(b"ri", &[l1, l2]);
    let root = b.nk("R", (3, ri), (0, NO_CELL));
    let hive = Hive::parse(b.finish(root)).unwrap();
    let names: Vec<String> = hive
        .root()
        .unwrap()
        .subkeys()
        .unwrap()
        .iter()
        .map(|k| k.name().to_string())
        .collect();
    assert_eq!(names, ["One", "Two", "Three"]);
    let v = hive.open("one").unwrap().unwrap().value("big").unwrap().unwrap();
    assert_eq!(v.data(), big.as_slice());
}

fn expect_corrupt<T>(r: Result<T>, needle: &str) {
    match r {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains(needle), "{what}"),
        Err(e) => panic!("expected corrupt ({needle}), got {e}"),
        Ok(_) => panic!("expected corrupt ({needle}), got Ok"),
    }
}

fn expect_limit<T>(r: Result<T>, name: &str) {
    match r {
        Err(Error::LimitExceeded { what, .. }) => assert_eq!(what, name),
        Err(e) => panic!("expected limit {name}, got {e}"),
        Ok(_) => panic!("expected limit {name}, got Ok"),
    }
}

#[test]
fn bad_signatures_are_corrupt() {
    let (mut h, _) = sample();
    h[0] = b'x';
    match Hive::parse(h) {
        Err(Error::Corrupt { offset: 0, what }) => assert!(what.contains("regf")),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted"),
    }
    let (mut h, _) = sample();
    h[4096] = b'x';
    expect_corrupt(Hive::parse(h), "hbin");
    expect_corrupt(Hive::parse(vec![0; 100]), "shorter than its base block");
}

#[test]
fn checksum_and_sequence_mismatch_are_noted_not_fatal() {
    let (mut h, _) = sample();
    h[4] = 9; // primary sequence number
    let hive = Hive::parse(h).unwrap();
    assert!(hive.base_block().is_dirty());
    assert_eq!(hive.notes().len(), 2, "{:?}", hive.notes());
    assert!(hive.open("Alpha").unwrap().is_some());
}

#[test]
fn cell_running_past_its_bin_is_corrupt() {
    let (mut h, list) = sample();
    // The root's subkey list cell claims 64 KiB.
    let at = 4096 + list as usize;
    h[at..at + 4].copy_from_slice(&(-0x10000i32).to_le_bytes());
    let hive = Hive::parse(h).unwrap();
    expect_corrupt(hive.root().unwrap().subkeys(), "runs past its hive bin");
}

#[test]
fn free_or_outside_cells_are_corrupt() {
    let (mut h, list) = sample();
    let at = 4096 + list as usize;
    h[at..at + 4].copy_from_slice(&16i32.to_le_bytes());
    let hive = Hive::parse(h).unwrap();
    expect_corrupt(hive.root().unwrap().subkeys(), "is free");
    let mut b = Builder::new();
    let root = b.nk("R", (1, 0x7FFF_0000), (0, NO_CELL));
    let hive = Hive::parse(b.finish(root)).unwrap();
    expect_corrupt(hive.root().unwrap().subkeys(), "not inside a hive bin");
}

#[test]
fn subkey_cycle_ends_the_walk() {
    let mut b = Builder::new();
    // Child's list will point back at the root: the root is cell 32 + size of
    // the child and its list, so build the child first pointing at a list we
    // patch once the root exists.
    let child_list = b.list(b"lf", &[0]);
    let child = b.nk("Child", (1, child_list), (0, NO_CELL));
    let root_list = b.list(b"lf", &[child]);
    let root = b.nk("Root", (1, root_list), (0, NO_CELL));
    let mut h = b.finish(root);
    let at = 4096 + child_list as usize + 8;
    h[at..at + 4].copy_from_slice(&root.to_le_bytes());
    let hive = Hive::parse(h).unwrap();
    // Lookups are bounded by the path; a full walk reports the cycle.
    assert!(hive.open("child\\child\\child").unwrap().is_none());
    assert_eq!(hive.open("child\\root\\child").unwrap().unwrap().name(), "Child");
    expect_corrupt(hive.walk(|_, _| Ok(())), "reachable twice");
}

#[test]
fn self_nested_index_root_hits_the_depth_cap() {
    let mut b = Builder::new();
    let ri = b.list(b"ri", &[0]);
    let root = b.nk("R", (1, ri), (0, NO_CELL));
    let mut h = b.finish(root);
    let at = 4096 + ri as usize + 8;
    h[at..at + 4].copy_from_slice(&ri.to_le_bytes());
    let hive = Hive::parse(h).unwrap();
    expect_limit(hive.root().unwrap().subkeys(), "subkey index-root nesting");
}

#[test]
fn list_cell_budget_is_enforced() {
    // An ri of 4000 entries, each an ri of the same 4000 entries, each an empty li.
    let mut b = Builder::new();
    let li = b.list(b"li", &[]);
    let inner = b.list(b"ri", &[li; 4000]);
    let outer = b.list(b"ri", &[inner; 4000]);
    let root = b.nk("R", (1, outer), (0, NO_CELL));
    let hive = Hive::parse(b.finish(root)).unwrap();
    expect_limit(hive.root().unwrap().subkeys(), "subkey list cells of one key");
}

#[test]
fn huge_counts_hit_their_caps() {
    let mut b = Builder::new();
    let li = b.list(b"li", &[]);
    let big_val = b.vk_raw("V", 3, (MAX_VALUE_SIZE + 1) as u32, NO_CELL);
    let vl = b.offsets(&[big_val]);
    let k1 = b.nk("ManySubkeys", ((MAX_SUBKEYS + 1) as u32, li), (0, NO_CELL));
    let k2 = b.nk("ManyValues", (0, NO_CELL), ((MAX_VALUES + 1) as u32, vl));
    let k3 = b.nk("BigValue", (0, NO_CELL), (1, vl));
    let k4 = b.nk("ShortList", (0, NO_CELL), (2, vl));
    let list = b.list(b"lh", &[k1, k2, k3, k4]);
    let root = b.nk("R", (4, list), (0, NO_CELL));
    let hive = Hive::parse(b.finish(root)).unwrap();
    let k = |n: &str| hive.open(n).unwrap().unwrap();
    expect_limit(k("ManySubkeys").subkeys(), "subkeys of one key");
    expect_limit(k("ManyValues").values(), "values of one key");
    expect_limit(k("BigValue").value("v"), "registry value size");
    expect_corrupt(k("ShortList").values(), "value list of 2 entries");
    expect_limit(Hive::parse(vec![0; MAX_HIVE_SIZE as usize + 1]), "hive file size");
}

#[test]
fn subkey_count_cap_applies_to_list_entries() {
    // A key whose declared count is small but whose lists add up past the cap.
    let mut b = Builder::new();
    let leaf = b.nk("L", (0, NO_CELL), (0, NO_CELL));
    let li = b.list(b"li", &[leaf; 60_000]);
    let ri = b.list(b"ri", &[li; 20]);
    let root = b.nk("R", (1, ri), (0, NO_CELL));
    let hive = Hive::parse(b.finish(root)).unwrap();
    expect_limit(hive.root().unwrap().subkeys(), "subkeys of one key");
}
