//! The qcow2 header (versions 2 and 3) and its header extensions, parsed
//! from the first cluster and checked against our caps before anything is
//! allocated from it. All fields are big-endian.

use crate::detect::Format;
use crate::error::{check_limit, Error, Result};
use crate::file::HostFile;

/// "QFI\xfb".
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Length of a version 2 header; version 3 headers are at least [`V3_MIN_HEADER_LEN`].
pub const V2_HEADER_LEN: u32 = 72;
/// Shortest valid version 3 header (through `header_length`).
pub const V3_MIN_HEADER_LEN: u32 = 104;

/// Smallest cluster the format allows (512 bytes).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster we accept (2 MiB, QEMU's implementation limit).
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Smallest cluster allowed with extended L2 entries (16 KiB).
pub const MIN_EXTENDED_L2_CLUSTER_BITS: u32 = 14;
/// Largest guest disk we open: 64 PiB, the reach of the L1/L2 layout.
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 56;
/// Most active L1 entries we load (32 MiB of table, QEMU's limit).
pub const MAX_L1_ENTRIES: u64 = 4 << 20;
/// Longest version 3 header we accept.
pub const MAX_HEADER_LENGTH: u32 = 4096;
/// Most header extensions we walk before giving up.
pub const MAX_HEADER_EXTENSIONS: u64 = 64;
/// Longest backing file name (the spec's limit).
pub const MAX_BACKING_NAME_LEN: u64 = 1023;
/// Largest refcount_order the spec allows (64-bit refcounts).
pub const MAX_REFCOUNT_ORDER: u64 = 6;
/// Longest string extension (backing format, data file name) we accept.
pub const MAX_STRING_EXTENSION_LEN: u64 = 1023;

/// Incompatible feature bit 0: the image was not closed cleanly.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: QEMU found corruption and marked the image.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: `compression_type` (byte 104) is meaningful.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: 128-bit L2 entries with 32 subclusters.
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// Every incompatible bit this reader understands.
pub const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTENDED_L2;
/// Compatible feature bit 0: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Autoclear feature bit 0: the bitmaps extension is consistent.
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
/// Autoclear feature bit 1: the external data file is a valid raw image.
pub const AUTOCLEAR_RAW_DATA: u64 = 1 << 1;

/// Header extension: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: feature name table.
pub const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
/// Header extension: persistent bitmaps.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Header extension: full-disk encryption header pointer.
pub const EXT_CRYPTO: u32 = 0x0537_be77;
/// Header extension: external data file name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Size of one feature name table entry.
const FEATURE_NAME_ENTRY: usize = 48;

/// How compressed clusters are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// Raw deflate (RFC 1951, no zlib header); QEMU calls it "zlib".
    Deflate,
    /// A zstd frame.
    Zstd,
}

impl CompressionType {
    /// The name qemu-img uses.
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Deflate => "zlib",
            CompressionType::Zstd => "zstd",
        }
    }
}

/// One entry of the feature name table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureName {
    /// 0 incompatible, 1 compatible, 2 autoclear.
    pub kind: u8,
    /// Bit number within that bitmap.
    pub bit: u8,
    /// Human-readable name.
    pub name: String,
}

/// The parsed and validated header of one qcow2 file.
#[derive(Debug, Clone)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Guest-visible size in bytes.
    pub size: u64,
    /// Active L1 table entries, as stored.
    pub l1_size: u32,
    /// File offset of the active L1 table.
    pub l1_table_offset: u64,
    /// Number of internal snapshots (ignored; the active layer is read).
    pub nb_snapshots: u32,
    /// Incompatible feature bits (0 for version 2).
    pub incompatible: u64,
    /// Compatible feature bits (0 for version 2).
    pub compatible: u64,
    /// Autoclear feature bits (0 for version 2).
    pub autoclear: u64,
    /// log2 of the refcount width in bits.
    pub refcount_order: u32,
    /// Header length in bytes (72 for version 2).
    pub header_length: u32,
    /// How compressed clusters are encoded.
    pub compression: CompressionType,
    /// Backing file name, as stored.
    pub backing_file: Option<String>,
    /// Backing format named by the header extension, as stored.
    pub backing_format: Option<String>,
    /// External data file name, from its header extension.
    pub data_file: Option<String>,
    /// The feature name table, if present.
    pub feature_names: Vec<FeatureName>,
    /// True when a bitmaps extension is present.
    pub has_bitmaps: bool,
    /// True when a full-disk encryption extension is present.
    pub has_crypto_ext: bool,
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// True when L2 entries are 128 bits with subcluster bitmaps.
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTENDED_L2 != 0
    }

    /// True when guest data lives in an external data file.
    pub fn has_data_file(&self) -> bool {
        self.incompatible & INCOMPAT_DATA_FILE != 0
    }

    /// Names the bits of `mask` of the given feature `kind`, using the
    /// image's feature name table where it has an entry.
    pub fn feature_list(&self, kind: u8, mask: u64) -> String {
        (0..64u8)
            .filter(|b| mask & (1u64 << b) != 0)
            .map(
                |b| match self.feature_names.iter().find(|f| f.kind == kind && f.bit == b) {
                    Some(f) => format!("bit {b} ({})", f.name),
                    None => format!("bit {b} (unnamed)"),
                },
            )
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The declared backing format as a [`Format`] to open with, or None to probe.
    pub fn backing_format_hint(&self) -> Option<Format> {
        match self.backing_format.as_deref()? {
            "raw" => Some(Format::Raw),
            "qcow2" => Some(Format::Qcow2),
            "vpc" => Some(Format::Vhd),
            "vhdx" => Some(Format::Vhdx),
            "vdi" => Some(Format::Vdi),
            _ => None,
        }
    }
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn be64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

/// Reads and validates the header of `file`. Features we cannot read
/// (encryption, dirty or corrupt images, unknown incompatible bits, external
/// data files) are left for the caller to refuse, except those that make the
/// rest of the header meaningless.
pub fn parse(file: &HostFile) -> Result<Header> {
    if file.len() < u64::from(V2_HEADER_LEN) {
        return Err(Error::corrupt(
            format!("file is {} bytes, too short for a qcow2 header", file.len()),
            0,
        ));
    }
    let fixed = file.read_vec(0, V2_HEADER_LEN as usize)?;
    if fixed[0..4] != MAGIC {
        return Err(Error::corrupt("bad qcow2 magic", 0));
    }
    let version = be32(&fixed, 4);
    if version != 2 && version != 3 {
        return Err(Error::unsupported(format!(
            "qcow2 version {version} (only versions 2 and 3 exist)"
        )));
    }
    let cluster_bits = be32(&fixed, 20);
    if cluster_bits < MIN_CLUSTER_BITS {
        return Err(Error::corrupt(
            format!("cluster_bits {cluster_bits} is below the minimum of {MIN_CLUSTER_BITS}"),
            20,
        ));
    }
    check_limit(
        "qcow2 cluster_bits",
        u64::from(cluster_bits),
        u64::from(MAX_CLUSTER_BITS),
    )?;
    let cluster_size = 1u64 << cluster_bits;
    let size = be64(&fixed, 24);
    check_limit("qcow2 virtual size", size, MAX_VIRTUAL_SIZE)?;

    let mut h = Header {
        version,
        cluster_bits,
        size,
        l1_size: be32(&fixed, 36),
        l1_table_offset: be64(&fixed, 40),
        nb_snapshots: be32(&fixed, 60),
        incompatible: 0,
        compatible: 0,
        autoclear: 0,
        refcount_order: 4,
        header_length: V2_HEADER_LEN,
        compression: CompressionType::Deflate,
        backing_file: None,
        backing_format: None,
        data_file: None,
        feature_names: Vec::new(),
        has_bitmaps: false,
        has_crypto_ext: false,
    };

    let crypt_method = be32(&fixed, 32);
    if crypt_method != 0 {
        let name = match crypt_method {
            1 => "AES",
            2 => "LUKS",
            _ => "unknown",
        };
        return Err(Error::unsupported(format!(
            "qcow2 encryption ({name}, crypt_method {crypt_method}); decrypt it with qemu-img first"
        )));
    }

    // The first cluster holds the header, its extensions and the backing name.
    let first_len = cluster_size.min(file.len()) as usize;
    let first = file.read_vec(0, first_len)?;

    if version == 3 {
        if first.len() < V3_MIN_HEADER_LEN as usize {
            return Err(Error::corrupt("file too short for a version 3 header", 0));
        }
        h.incompatible = be64(&first, 72);
        h.compatible = be64(&first, 80);
        h.autoclear = be64(&first, 88);
        let order = be32(&first, 96);
        check_limit("qcow2 refcount_order", u64::from(order), MAX_REFCOUNT_ORDER)?;
        h.refcount_order = order;
        let hl = be32(&first, 100);
        check_limit("qcow2 header_length", u64::from(hl), u64::from(MAX_HEADER_LENGTH))?;
        if hl < V3_MIN_HEADER_LEN || hl % 8 != 0 || u64::from(hl) > first.len() as u64 {
            return Err(Error::corrupt(format!("invalid header_length {hl}"), 100));
        }
        h.header_length = hl;
        let ctype = if hl > 104 { first[104] } else { 0 };
        let wants_type = h.incompatible & INCOMPAT_COMPRESSION != 0;
        h.compression = match (wants_type, ctype) {
            (false, 0) => CompressionType::Deflate,
            (true, 1) => CompressionType::Zstd,
            (false, t) => {
                return Err(Error::corrupt(
                    format!("compression_type {t} set without the compression type feature bit"),
                    104,
                ))
            }
            (true, 0) => {
                return Err(Error::corrupt(
                    "compression type feature bit set but compression_type is deflate",
                    104,
                ))
            }
            (true, t) => return Err(Error::unsupported(format!("qcow2 compression type {t}"))),
        };
    }

    let backing_offset = be64(&fixed, 8);
    let backing_len = u64::from(be32(&fixed, 16));
    let ext_end = if backing_offset != 0 && backing_offset < first.len() as u64 {
        backing_offset as usize
    } else {
        first.len()
    };
    parse_extensions(&mut h, &first, ext_end)?;

    if backing_offset != 0 {
        check_limit(
            "qcow2 backing file name length",
            backing_len,
            MAX_BACKING_NAME_LEN,
        )?;
        match backing_offset.checked_add(backing_len) {
            Some(end) if end <= cluster_size => {}
            _ => {
                return Err(Error::corrupt(
                    "backing file name lies outside the first cluster",
                    8,
                ))
            }
        }
        let name = file.read_vec(backing_offset, backing_len as usize)?;
        h.backing_file = Some(
            String::from_utf8(name)
                .map_err(|_| Error::corrupt("backing file name is not UTF-8", backing_offset))?,
        );
    }
    Ok(h)
}

/// Walks the header extensions in `first[start..end]`.
fn parse_extensions(h: &mut Header, first: &[u8], end: usize) -> Result<()> {
    let mut off = h.header_length as usize;
    let mut count = 0u64;
    while off + 8 <= end {
        let kind = be32(first, off);
        if kind == 0 {
            break;
        }
        count += 1;
        check_limit("qcow2 header extension count", count, MAX_HEADER_EXTENSIONS)?;
        let len = be32(first, off + 4) as usize;
        let data_start = off + 8;
        if len > end - data_start {
            return Err(Error::corrupt(
                format!("header extension {kind:#x} of {len} bytes overruns the header area"),
                off as u64,
            ));
        }
        let data = &first[data_start..data_start + len];
        let at = off as u64;
        match kind {
            EXT_BACKING_FORMAT => h.backing_format = Some(string_ext(data, "backing format", at)?),
            EXT_DATA_FILE => h.data_file = Some(string_ext(data, "external data file name", at)?),
            EXT_FEATURE_NAMES => {
                h.feature_names = data
                    .chunks_exact(FEATURE_NAME_ENTRY)
                    .map(|e| {
                        let name = &e[2..];
                        let n = name.iter().position(|b| *b == 0).unwrap_or(name.len());
                        FeatureName {
                            kind: e[0],
                            bit: e[1],
                            name: String::from_utf8_lossy(&name[..n]).into_owned(),
                        }
                    })
                    .collect()
            }
            EXT_BITMAPS => h.has_bitmaps = true,
            EXT_CRYPTO => h.has_crypto_ext = true,
            _ => {} // Unknown extensions may be skipped.
        }
        // Data is padded to a multiple of 8.
        off = data_start + len.div_ceil(8) * 8;
    }
    Ok(())
}

fn string_ext(data: &[u8], what: &'static str, at: u64) -> Result<String> {
    check_limit(what, data.len() as u64, MAX_STRING_EXTENSION_LEN)?;
    let n = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    String::from_utf8(data[..n].to_vec()).map_err(|_| Error::corrupt(format!("{what} is not UTF-8"), at))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid version 3 header in a 64 KiB first cluster.
    pub(crate) fn v3_header() -> Vec<u8> {
        let mut b = vec![0u8; 65536];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&16u32.to_be_bytes());
        b[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        b[36..40].copy_from_slice(&2u32.to_be_bytes());
        b[40..48].copy_from_slice(&65536u64.to_be_bytes());
        b[96..100].copy_from_slice(&4u32.to_be_bytes());
        b[100..104].copy_from_slice(&112u32.to_be_bytes());
        b
    }

    fn parse_bytes(b: Vec<u8>) -> Result<Header> {
        parse(&HostFile::from_bytes("t.qcow2", b))
    }

    fn put_ext(b: &mut [u8], off: usize, kind: u32, data: &[u8]) -> usize {
        b[off..off + 4].copy_from_slice(&kind.to_be_bytes());
        b[off + 4..off + 8].copy_from_slice(&(data.len() as u32).to_be_bytes());
        b[off + 8..off + 8 + data.len()].copy_from_slice(data);
        off + 8 + data.len().div_ceil(8) * 8
    }

    fn limit(r: Result<Header>) -> &'static str {
        match r {
            Err(Error::LimitExceeded { what, .. }) => what,
            other => panic!("expected LimitExceeded, got {other:?}"),
        }
    }

    #[test]
    fn parses_minimal_v3() {
        let h = parse_bytes(v3_header()).unwrap();
        assert_eq!((h.version, h.cluster_size(), h.size), (3, 65536, 1 << 30));
        assert_eq!(h.compression, CompressionType::Deflate);
    }

    #[test]
    fn parses_extensions_and_backing() {
        let mut b = v3_header();
        let mut off = put_ext(&mut b, 112, EXT_BACKING_FORMAT, b"raw");
        let mut table = vec![0u8; 48];
        table[1] = 7;
        table[2..9].copy_from_slice(b"shiny 7");
        off = put_ext(&mut b, off, 0x1234_5678, &[1, 2, 3]);
        put_ext(&mut b, off, EXT_FEATURE_NAMES, &table);
        b[8..16].copy_from_slice(&1000u64.to_be_bytes());
        b[16..20].copy_from_slice(&8u32.to_be_bytes());
        b[1000..1008].copy_from_slice(b"base.img");
        let h = parse_bytes(b).unwrap();
        assert_eq!(h.backing_file.as_deref(), Some("base.img"));
        assert_eq!(h.backing_format_hint(), Some(Format::Raw));
        assert_eq!(h.feature_list(0, 1 << 7), "bit 7 (shiny 7)");
        assert_eq!(h.feature_list(0, 1 << 9), "bit 9 (unnamed)");
    }

    #[test]
    fn cap_cluster_bits() {
        let mut b = v3_header();
        b[20..24].copy_from_slice(&22u32.to_be_bytes());
        assert_eq!(limit(parse_bytes(b)), "qcow2 cluster_bits");
        let mut b = v3_header();
        b[20..24].copy_from_slice(&8u32.to_be_bytes());
        assert!(matches!(parse_bytes(b), Err(Error::Corrupt { offset: 20, .. })));
    }

    #[test]
    fn cap_virtual_size() {
        let mut b = v3_header();
        b[24..32].copy_from_slice(&(MAX_VIRTUAL_SIZE + 1).to_be_bytes());
        assert_eq!(limit(parse_bytes(b)), "qcow2 virtual size");
    }

    #[test]
    fn cap_refcount_order() {
        let mut b = v3_header();
        b[96..100].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(limit(parse_bytes(b)), "qcow2 refcount_order");
    }

    #[test]
    fn cap_header_length() {
        let mut b = v3_header();
        b[100..104].copy_from_slice(&(MAX_HEADER_LENGTH + 8).to_be_bytes());
        assert_eq!(limit(parse_bytes(b)), "qcow2 header_length");
        let mut b = v3_header();
        b[100..104].copy_from_slice(&100u32.to_be_bytes());
        assert!(matches!(parse_bytes(b), Err(Error::Corrupt { offset: 100, .. })));
    }

    #[test]
    fn cap_extension_count() {
        let mut b = v3_header();
        let mut off = 112;
        for _ in 0..=MAX_HEADER_EXTENSIONS {
            off = put_ext(&mut b, off, 0x7777_0000, &[]);
        }
        assert_eq!(limit(parse_bytes(b)), "qcow2 header extension count");
    }

    #[test]
    fn extension_overrunning_cluster_is_corrupt() {
        let mut b = v3_header();
        b[112..116].copy_from_slice(&EXT_FEATURE_NAMES.to_be_bytes());
        b[116..120].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(parse_bytes(b), Err(Error::Corrupt { offset: 112, .. })));
    }

    #[test]
    fn cap_string_extension() {
        let mut b = v3_header();
        put_ext(&mut b, 112, EXT_BACKING_FORMAT, &[b'a'; 1024]);
        assert_eq!(limit(parse_bytes(b)), "backing format");
    }

    #[test]
    fn cap_backing_name_length() {
        let mut b = v3_header();
        b[8..16].copy_from_slice(&1000u64.to_be_bytes());
        b[16..20].copy_from_slice(&5000u32.to_be_bytes());
        assert_eq!(limit(parse_bytes(b)), "qcow2 backing file name length");
    }

    #[test]
    fn zstd_needs_feature_bit() {
        let mut b = v3_header();
        b[104] = 1;
        assert!(matches!(
            parse_bytes(b.clone()),
            Err(Error::Corrupt { offset: 104, .. })
        ));
        b[72..80].copy_from_slice(&INCOMPAT_COMPRESSION.to_be_bytes());
        assert_eq!(parse_bytes(b).unwrap().compression, CompressionType::Zstd);
    }

    #[test]
    fn encryption_and_versions_are_unsupported() {
        let mut b = v3_header();
        b[32..36].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(parse_bytes(b), Err(Error::Unsupported(m)) if m.contains("LUKS")));
        let mut b = v3_header();
        b[4..8].copy_from_slice(&4u32.to_be_bytes());
        assert!(matches!(parse_bytes(b), Err(Error::Unsupported(_))));
        let mut b = v3_header();
        b[0] = b'X';
        assert!(matches!(parse_bytes(b), Err(Error::Corrupt { offset: 0, .. })));
    }

    #[test]
    fn truncated_files_are_corrupt_not_panics() {
        let b = v3_header();
        for n in [0, 4, 71, 72, 100, 103, 104, 111] {
            assert!(parse_bytes(b[..n].to_vec()).is_err(), "length {n}");
        }
    }
}
