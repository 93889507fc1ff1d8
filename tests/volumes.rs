//! The volume layer against real tools: partition tables made by sfdisk
//! (compared with `sfdisk --json`), LVM made by pvcreate/vgcreate/lvcreate
//! (compared with `lvs`/`pvs` reports and with the XFS images copied into
//! the LVs), swap and LUKS made by mkswap/cryptsetup (compared with
//! `blkid -p`), plus mutation tests on copies of those images.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use v2x::volume::lvm::{label, model};
use v2x::volume::{scan, Content, Volume, VolumeKind, VolumeSet};
use v2x_formats::block::BlockSource;
use v2x_formats::file::HostFile;
use v2x_formats::raw::RawImage;
use v2x_formats::Error;

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::fixtures("gen-volumes.sh"))
}

fn open(name: &str) -> Arc<dyn BlockSource> {
    Arc::new(RawImage::new(HostFile::open(&dir().join(name)).unwrap()).unwrap())
}

fn mem(name: &str, bytes: Vec<u8>) -> Arc<dyn BlockSource> {
    Arc::new(RawImage::new(HostFile::from_bytes(name, bytes)).unwrap())
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join(name)).unwrap()).unwrap()
}

fn blkid(name: &str, key: &str) -> String {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not in {name}"))
        .to_string()
}

fn get<'a>(set: &'a VolumeSet, name: &str) -> &'a Volume {
    set.volumes
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no volume {name} in {:?}", names(set)))
}

fn names(set: &VolumeSet) -> Vec<&str> {
    set.volumes.iter().map(|v| v.name.as_str()).collect()
}

/// Checks every partition of `set` against `sfdisk --json` output, skipping
/// MBR extended containers (which are not volumes).
fn assert_matches_sfdisk(set: &VolumeSet, sfdisk: &Value) {
    let t = &sfdisk["partitiontable"];
    let ss = t["sectorsize"].as_u64().unwrap_or(512);
    let gpt = t["label"] == "gpt";
    let parts: Vec<&Value> = t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| gpt || !["5", "f", "85"].contains(&p["type"].as_str().unwrap()))
        .collect();
    assert_eq!(set.volumes.len(), parts.len(), "{:?}", names(set));
    for (v, p) in set.volumes.iter().zip(parts) {
        let node = p["node"].as_str().unwrap();
        let number: u32 = node
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let VolumeKind::Partition {
            scheme,
            number: n,
            start,
            len,
            type_id,
            part_uuid,
            part_label,
            bootable,
        } = &v.kind
        else {
            panic!("{} is not a partition", v.name)
        };
        assert_eq!(*n, number, "{node}");
        assert_eq!(v.name, format!("sda{number}"));
        assert_eq!(*start, p["start"].as_u64().unwrap() * ss, "{node} start");
        assert_eq!(*len, p["size"].as_u64().unwrap() * ss, "{node} size");
        assert_eq!(v.source.size(), *len);
        if gpt {
            assert_eq!(scheme, "gpt");
            assert_eq!(*type_id, p["type"].as_str().unwrap().to_lowercase(), "{node}");
            assert_eq!(
                part_uuid.as_deref().unwrap(),
                p["uuid"].as_str().unwrap().to_lowercase()
            );
            assert_eq!(
                part_label.as_deref().unwrap_or(""),
                p["name"].as_str().unwrap_or("")
            );
            let legacy = p["attrs"].as_str().unwrap_or("").contains("LegacyBIOSBootable");
            assert_eq!(*bootable, legacy, "{node}");
        } else {
            assert_eq!(scheme, "mbr");
            assert_eq!(*type_id, format!("0x{:0>2}", p["type"].as_str().unwrap()));
            assert_eq!(*bootable, p["bootable"].as_bool().unwrap_or(false), "{node}");
        }
    }
}

#[test]
fn mbr_with_logical_partitions_matches_sfdisk_and_blkid() {
    let set = scan(&[open("mbr.img")]).unwrap();
    assert_eq!(set.tables, ["mbr"]);
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    assert_matches_sfdisk(&set, &json("mbr.json"));
    assert_eq!(names(&set), ["sda1", "sda2", "sda5", "sda6"]);
    assert_eq!(
        get(&set, "sda1").content,
        Content::Luks {
            version: 2,
            uuid: blkid("mbr-p1.blkid", "UUID")
        }
    );
    assert_eq!(
        get(&set, "sda2").content,
        Content::Swap {
            uuid: Some(blkid("mbr-p2.blkid", "UUID")),
            label: Some(blkid("mbr-p2.blkid", "LABEL"))
        }
    );
    assert_eq!(
        get(&set, "sda5").content,
        Content::Luks {
            version: 1,
            uuid: blkid("mbr-p5.blkid", "UUID")
        }
    );
    assert_eq!(get(&set, "sda6").content, Content::Unknown);
    assert_eq!(get(&set, "sda5").linux_paths(), ["/dev/sda5"]);
}

#[test]
fn gpt_matches_sfdisk() {
    let set = scan(&[open("gpt.img")]).unwrap();
    assert_eq!(set.tables, ["gpt"]);
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    assert_matches_sfdisk(&set, &json("gpt.json"));
    assert!(matches!(get(&set, "sda3").content, Content::Swap { .. }));
}

#[test]
fn gpt_with_4096_byte_sectors_matches_sfdisk() {
    let sfdisk = json("gpt-4k.json");
    assert_eq!(sfdisk["partitiontable"]["sectorsize"], 4096);
    let set = scan(&[open("gpt-4k.img")]).unwrap();
    assert_matches_sfdisk(&set, &sfdisk);
}

#[test]
fn mbr_with_4096_byte_sectors_matches_sfdisk() {
    let sfdisk = json("mbr-4k.json");
    assert_eq!(sfdisk["partitiontable"]["sectorsize"], 4096);
    let set = scan(&[open("mbr-4k.img")]).unwrap();
    assert_matches_sfdisk(&set, &sfdisk);
    assert!(matches!(get(&set, "sda1").content, Content::Swap { .. }));
}

fn lvm_set() -> VolumeSet {
    scan(&[open("lvm-disk1.img"), open("lvm-disk2.img")]).unwrap()
}

#[test]
fn lvm_pvs_and_lvs_match_lvm_reports() {
    let set = lvm_set();
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    assert_eq!(
        names(&set),
        ["sda1", "sda2", "sdb", "v2x-vg/lin", "v2x-vg/str-ipe"]
    );
    let pvs = json("lvm-pvs.json");
    let pvs = pvs["report"][0]["pv"].as_array().unwrap();
    let uuid = |i: usize| pvs[i]["pv_uuid"].as_str().unwrap().to_string();
    assert_eq!(get(&set, "sda2").content, Content::LvmPv { uuid: uuid(0) });
    assert_eq!(get(&set, "sdb").content, Content::LvmPv { uuid: uuid(1) });
    let segs = json("lvm-segs.json");
    let segs = segs["report"][0]["seg"].as_array().unwrap();
    for (name, file) in [("lin", "xfs-lin.bin"), ("str-ipe", "xfs-str.bin")] {
        let v = get(&set, &format!("v2x-vg/{name}"));
        let lv_uuid = segs.iter().find(|s| s["lv_name"] == name).unwrap()["lv_uuid"]
            .as_str()
            .unwrap();
        assert_eq!(
            v.kind,
            VolumeKind::LogicalVolume {
                vg: "v2x-vg".into(),
                lv: name.into(),
                uuid: lv_uuid.into()
            }
        );
        // The bytes read through the LV are the XFS image copied into its extents.
        let want = std::fs::read(dir().join(file)).unwrap();
        assert_eq!(v.source.size(), want.len() as u64, "{name}");
        let mut got = vec![0u8; want.len()];
        v.source.read_at(0, &mut got).unwrap();
        assert!(got == want, "{name}: bytes differ from {file}");
        // Unaligned reads crossing stripe chunks and segment ends.
        let mut piece = vec![0u8; 200_000];
        let at = 16 * 1024 * 1024 - 70_000;
        v.source.read_at(at, &mut piece).unwrap();
        assert!(piece[..] == want[at as usize..at as usize + piece.len()]);
        let map = v.source.map(0, v.source.size()).unwrap();
        assert_eq!(map.iter().map(|e| e.len).sum::<u64>(), v.source.size());
        assert_eq!(map.first().unwrap().start, 0);
    }
    assert_eq!(
        get(&set, "v2x-vg/str-ipe").linux_paths(),
        ["/dev/v2x-vg/str-ipe", "/dev/mapper/v2x--vg-str--ipe"]
    );
    assert_eq!(get(&set, "v2x-vg/lin").disk, 0);
}

#[test]
fn lvm_segments_match_lvs_segments() {
    let set = lvm_set();
    let pv = get(&set, "sdb");
    let l = label::read_label(pv.source.as_ref()).unwrap().unwrap();
    let (text, at) = label::read_metadata(pv.source.as_ref(), l.metadata_areas[0])
        .unwrap()
        .unwrap();
    let vg = model::parse_vg(&text, at).unwrap();
    // extent_size as vgcfgbackup wrote it.
    let backup = std::fs::read_to_string(dir().join("lvm-vg.txt")).unwrap();
    let extent_line = backup.lines().find(|l| l.contains("extent_size =")).unwrap();
    let extent_size: u64 = extent_line
        .split(['=', '#'])
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(vg.extent_size, extent_size);
    let pvs = json("lvm-pvs.json");
    let pvs = pvs["report"][0]["pv"].as_array().unwrap();
    for (pv, p) in vg.pvs.iter().zip(pvs) {
        assert_eq!(pv.id, p["pv_uuid"].as_str().unwrap());
        assert_eq!(format!("{}B", pv.pe_start * 512), p["pe_start"].as_str().unwrap());
    }
    let loop_of = |id: &str| {
        pvs.iter().find(|p| p["pv_uuid"] == id).unwrap()["pv_name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let segs = json("lvm-segs.json");
    let mut want: Vec<String> = segs["report"][0]["seg"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {} {} {}",
                s["lv_name"].as_str().unwrap(),
                s["seg_start_pe"].as_str().unwrap(),
                s["seg_size_pe"].as_str().unwrap(),
                s["stripes"].as_str().unwrap(),
                s["stripe_size"].as_str().unwrap(),
                s["seg_pe_ranges"].as_str().unwrap()
            )
        })
        .collect();
    let mut got = Vec::new();
    for lv in &vg.lvs {
        for s in &lv.segments {
            let per = s.extent_count / s.stripes.len() as u64;
            let ranges: Vec<String> = s
                .stripes
                .iter()
                .map(|(i, pe)| format!("{}:{}-{}", loop_of(&vg.pvs[*i].id), pe, pe + per - 1))
                .collect();
            got.push(format!(
                "{} {} {} {} {}B {}",
                lv.name,
                s.start_extent,
                s.extent_count,
                s.stripes.len(),
                s.stripe_size * 512,
                ranges.join(" ")
            ));
        }
    }
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn missing_pv_leaves_its_lvs_out_with_a_warning() {
    let set = scan(&[open("lvm-disk1.img")]).unwrap();
    assert_eq!(names(&set), ["sda1", "sda2"]);
    assert!(
        set.warnings
            .iter()
            .any(|w| w.contains("v2x-vg/lin") && w.contains("missing")),
        "{:?}",
        set.warnings
    );
    assert!(set.warnings.iter().any(|w| w.contains("v2x-vg/str-ipe")));
}

#[test]
fn lvm_metadata_wrapped_round_the_circular_buffer_is_read() {
    // The fixture is only useful if real LVM really wrapped the newest copy.
    let d = bytes("lvm-wrap.img");
    let le = |at: usize| u64::from_le_bytes(d[at..at + 8].try_into().unwrap());
    assert!(
        le(4096 + 40) + le(4096 + 48) > le(4096 + 32),
        "metadata did not wrap"
    );
    let set = scan(&[open("lvm-wrap.img")]).unwrap();
    assert_eq!(names(&set), ["sda", "wrapvg/l"]);
    let segs = json("lvm-wrap-segs.json");
    let seg = &segs["report"][0]["seg"][0];
    let v = get(&set, "wrapvg/l");
    let VolumeKind::LogicalVolume { uuid, .. } = &v.kind else {
        panic!()
    };
    assert_eq!(uuid, seg["lv_uuid"].as_str().unwrap());
    let extents: u64 = seg["seg_size_pe"].as_str().unwrap().parse().unwrap();
    assert_eq!(v.source.size(), extents << 20);
    // The newest metadata (vgs's seqno) was the one parsed.
    let pv = get(&set, "sda");
    let l = label::read_label(pv.source.as_ref()).unwrap().unwrap();
    let (text, _) = label::read_metadata(pv.source.as_ref(), l.metadata_areas[0])
        .unwrap()
        .unwrap();
    let vg = model::parse_vg(&text, 0).unwrap();
    let want = json("lvm-wrap-vg.json");
    assert_eq!(
        vg.seqno.to_string(),
        want["report"][0]["vg"][0]["vg_seqno"].as_str().unwrap()
    );
}

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap()
}

fn corrupt(r: v2x_formats::Result<VolumeSet>) -> (String, u64) {
    match r {
        Err(Error::Corrupt { what, offset }) => (what, offset),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(s) => panic!("expected Corrupt, got volumes {:?}", names(&s)),
    }
}

/// Rewrites the CRC32 of the GPT header at `at` after a field was changed.
fn fix_header_crc(d: &mut [u8], at: usize) {
    d[at + 16..at + 20].fill(0);
    let crc = crc32fast::hash(&d[at..at + 92]);
    d[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn damaged_primary_gpt_header_falls_back_to_backup() {
    let good = scan(&[open("gpt.img")]).unwrap();
    for at in [512 + 16, 1024 + 5] {
        // The header CRC field, then a byte of the partition array.
        let mut d = bytes("gpt.img");
        d[at] ^= 0xff;
        let set = scan(&[mem("gpt.img", d)]).unwrap();
        assert_eq!(set.volumes.len(), good.volumes.len());
        for (a, b) in set.volumes.iter().zip(&good.volumes) {
            assert_eq!(a.kind, b.kind);
        }
        assert!(
            set.warnings.iter().any(|w| w.contains("backup GPT was used")),
            "{:?}",
            set.warnings
        );
    }
}

#[test]
fn hybrid_mbr_is_noted_and_the_gpt_wins() {
    let good = scan(&[open("gpt.img")]).unwrap();
    let mut d = bytes("gpt.img");
    // A second MBR entry mirroring GPT partition 2, as hybrid-MBR tools write.
    let VolumeKind::Partition { start, len, .. } = good.volumes[1].kind else {
        panic!()
    };
    let e = 446 + 16;
    d[e] = 0x80;
    d[e + 4] = 0x83;
    d[e + 8..e + 12].copy_from_slice(&((start / 512) as u32).to_le_bytes());
    d[e + 12..e + 16].copy_from_slice(&((len / 512) as u32).to_le_bytes());
    let set = scan(&[mem("gpt.img", d)]).unwrap();
    assert_eq!(set.tables, ["gpt"]);
    assert_eq!(names(&set), names(&good));
    assert!(
        set.warnings.iter().any(|w| w.contains("hybrid MBR")),
        "{:?}",
        set.warnings
    );
}

#[test]
fn both_gpt_headers_damaged_is_corrupt_naming_the_field() {
    let mut d = bytes("gpt.img");
    let last = d.len() - 512;
    d[512 + 16] ^= 0xff;
    d[last + 16] ^= 0xff;
    let (what, offset) = corrupt(scan(&[mem("gpt.img", d)]));
    assert_eq!(offset, 512 + 16);
    assert!(what.starts_with("sda: both GPT copies are damaged"), "{what}");
    assert!(what.contains("primary header CRC32 mismatch"), "{what}");
    assert!(what.contains("backup header CRC32 mismatch"), "{what}");
}

#[test]
fn huge_gpt_entry_count_is_limit_exceeded() {
    let mut d = bytes("gpt.img");
    d[512 + 80..512 + 84].copy_from_slice(&1_000_000u32.to_le_bytes());
    fix_header_crc(&mut d, 512);
    assert!(matches!(
        scan(&[mem("gpt.img", d)]),
        Err(Error::LimitExceeded {
            what: "GPT partition entries",
            ..
        })
    ));
}

#[test]
fn huge_gpt_entry_size_and_array_are_limit_exceeded() {
    for (count, size, what) in [
        (128u32, 8192u32, "GPT partition entry size"),
        (2048, 4096, "GPT partition array bytes"),
    ] {
        let mut d = bytes("gpt.img");
        d[512 + 80..512 + 84].copy_from_slice(&count.to_le_bytes());
        d[512 + 84..512 + 88].copy_from_slice(&size.to_le_bytes());
        fix_header_crc(&mut d, 512);
        match scan(&[mem("gpt.img", d)]) {
            Err(Error::LimitExceeded { what: w, .. }) => assert_eq!(w, what),
            Err(e) => panic!("{what}: {e}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
}

#[test]
fn ebr_chain_loop_is_an_error_not_a_hang() {
    let mut d = bytes("mbr.img");
    // The second EBR (of sda6) points back to the first one (offset 0 from
    // the start of the extended partition, sector 34816).
    let json = json("mbr.json");
    let p6 = json["partitiontable"]["partitions"][4]["start"].as_u64().unwrap();
    let ebr2 = ((p6 - 2048) * 512) as usize; // sfdisk leaves 1 MiB before each logical
    assert_eq!(d[ebr2 + 510..ebr2 + 512], [0x55, 0xaa]);
    let next = ebr2 + 446 + 16;
    d[next + 4] = 0x05;
    d[next + 8..next + 12].copy_from_slice(&0u32.to_le_bytes());
    d[next + 12..next + 16].copy_from_slice(&1u32.to_le_bytes());
    let (what, offset) = corrupt(scan(&[mem("mbr.img", d)]));
    assert!(what.contains("EBR chain loops back to sector 34816"), "{what}");
    assert_eq!(offset, 34816 * 512);
}

/// The whole-disk PV's first metadata area and its header, parsed back.
fn mda(d: &[u8]) -> (usize, usize, usize) {
    let src = mem("pv", d.to_vec());
    let l = label::read_label(src.as_ref()).unwrap().unwrap();
    let start = l.metadata_areas[0].0 as usize;
    let off = u64::from_le_bytes(d[start + 40..start + 48].try_into().unwrap()) as usize;
    let len = u64::from_le_bytes(d[start + 48..start + 56].try_into().unwrap()) as usize;
    (start, off, len)
}

fn fix_mda_crcs(d: &mut [u8], start: usize, text: std::ops::Range<usize>) {
    let crc = label::lvm_crc(&d[text]);
    d[start + 56..start + 60].copy_from_slice(&crc.to_le_bytes());
    let crc = label::lvm_crc(&d[start + 4..start + 512]);
    d[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn damaged_lvm_metadata_is_a_clear_error() {
    let good = bytes("lvm-disk2.img");
    let (start, off, len) = mda(&good);
    let text_at = start + off;
    // Flipped text byte: the checksum catches it.
    let mut d = good.clone();
    d[text_at + 10] ^= 0x20;
    let (what, offset) = corrupt(scan(&[open("lvm-disk1.img"), mem("d2", d)]));
    assert!(
        what.starts_with("sdb: LVM metadata text checksum mismatch"),
        "{what}"
    );
    assert_eq!(offset, text_at as u64);
    // Truncated to half, checksums made consistent: the parser reports it.
    let mut d = good.clone();
    let half = len / 2;
    d[start + 48..start + 56].copy_from_slice(&(half as u64).to_le_bytes());
    fix_mda_crcs(&mut d, start, text_at..text_at + half);
    let (what, _) = corrupt(scan(&[open("lvm-disk1.img"), mem("d2", d)]));
    assert!(what.starts_with("sdb: LVM metadata text:"), "{what}");
    // Garbage with valid checksums.
    let mut d = good.clone();
    d[text_at..text_at + len].fill(b'{');
    fix_mda_crcs(&mut d, start, text_at..text_at + len);
    let (what, _) = corrupt(scan(&[open("lvm-disk1.img"), mem("d2", d)]));
    assert!(what.contains("LVM metadata"), "{what}");
    // A huge metadata size is refused before anything is allocated.
    let mut d = good;
    d[start + 48..start + 56].copy_from_slice(&(1u64 << 40).to_le_bytes());
    fix_mda_crcs(&mut d, start, 0..0);
    assert!(matches!(
        scan(&[open("lvm-disk1.img"), mem("d2", d)]),
        Err(Error::LimitExceeded { .. })
    ));
}
