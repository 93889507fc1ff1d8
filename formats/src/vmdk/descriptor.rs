//! The VMDK text descriptor: disk-wide settings, the extent list and the
//! disk database (`ddb.*`). Found embedded in a sparse extent or as a
//! separate small text file.

use crate::error::{check_limit, Error, Result};

/// Most extent lines in one descriptor (a 64 TiB twoGbMaxExtent disk needs ~32K).
pub const MAX_EXTENTS: u64 = 1 << 16;

/// `CID`/`parentCID` value meaning "no parent".
pub const CID_NONE: u32 = 0xffff_ffff;

/// How an extent may be accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read-write.
    Rw,
    /// Read-only.
    RdOnly,
    /// Not accessible: reads as zeros here (v2x notes it).
    NoAccess,
}

/// How an extent stores its sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentType {
    /// A plain file or a byte range of one (hosted).
    Flat,
    /// A hosted sparse extent ("KDMV").
    Sparse,
    /// A flat extent on VMFS.
    Vmfs,
    /// An ESXi vmfsSparse delta ("COWD").
    VmfsSparse,
    /// An ESXi seSparse delta.
    SeSparse,
    /// An ESXi raw device mapping (refused).
    VmfsRdm,
    /// No file: reads as zeros.
    Zero,
}

/// One line of the extent description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// Access mode.
    pub access: Access,
    /// Guest sectors this extent covers.
    pub sectors: u64,
    /// Storage type.
    pub kind: ExtentType,
    /// File name, relative to the descriptor (None for ZERO).
    pub file: Option<String>,
    /// Sector offset inside the file (FLAT/VMFS).
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `createType`, e.g. "monolithicSparse".
    pub create_type: String,
    /// Content ID of this disk.
    pub cid: Option<u32>,
    /// Content ID the parent had when this delta was made ([`CID_NONE`]: no parent).
    pub parent_cid: Option<u32>,
    /// Parent file named by `parentFileNameHint`.
    pub parent_hint: Option<String>,
    /// The extents, in guest order.
    pub extents: Vec<ExtentLine>,
    /// `ddb.*` keys in file order, values unquoted.
    pub ddb: Vec<(String, String)>,
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(s)
}

fn parse_cid(v: &str, line: u64) -> Result<u32> {
    u32::from_str_radix(unquote(v), 16)
        .map_err(|_| Error::corrupt(format!("descriptor line {line}: bad CID '{v}'"), 0))
}

impl Descriptor {
    /// Parses descriptor text. Text after the first NUL is padding and ignored.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        check_limit(
            "VMDK descriptor size",
            bytes.len() as u64,
            crate::vmdk::header::MAX_DESCRIPTOR_SIZE,
        )?;
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        let text = String::from_utf8_lossy(&bytes[..end]);
        let mut d = Descriptor::default();
        let mut saw_version = false;
        for (i, raw) in text.lines().enumerate() {
            let lineno = i as u64 + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(ext) = parse_extent_line(line, lineno)? {
                check_limit("VMDK descriptor extents", d.extents.len() as u64 + 1, MAX_EXTENTS)?;
                d.extents.push(ext);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(Error::corrupt(
                    format!("descriptor line {lineno} is neither a setting nor an extent: '{line}'"),
                    0,
                ));
            };
            let key = key.trim();
            match key {
                "version" => saw_version = true,
                "CID" => d.cid = Some(parse_cid(value, lineno)?),
                "parentCID" => d.parent_cid = Some(parse_cid(value, lineno)?),
                "createType" => d.create_type = unquote(value).to_string(),
                "parentFileNameHint" => {
                    let v = unquote(value);
                    if !v.is_empty() {
                        d.parent_hint = Some(v.to_string());
                    }
                }
                k if k.starts_with("ddb.") => d.ddb.push((k.to_string(), unquote(value).to_string())),
                // encoding, isNativeSnapshot, changeTrackPath, ...: informational.
                _ => {}
            }
        }
        if !saw_version && d.create_type.is_empty() {
            return Err(Error::corrupt("descriptor has neither version nor createType", 0));
        }
        Ok(d)
    }

    /// True when the descriptor says this disk is a delta of a parent.
    pub fn has_parent(&self) -> bool {
        self.parent_hint.is_some() && self.parent_cid.is_some_and(|c| c != CID_NONE)
    }
}

/// Parses `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`; None when the line is not an extent.
fn parse_extent_line(line: &str, lineno: u64) -> Result<Option<ExtentLine>> {
    let mut words = line.splitn(3, char::is_whitespace);
    let access = match words.next() {
        Some("RW") => Access::Rw,
        Some("RDONLY") => Access::RdOnly,
        Some("NOACCESS") => Access::NoAccess,
        _ => return Ok(None),
    };
    let bad = |what: &str| Error::corrupt(format!("descriptor line {lineno}: {what}: '{line}'"), 0);
    let rest = words.next().map(str::trim).unwrap_or("");
    let sectors: u64 = rest.parse().map_err(|_| bad("bad extent size"))?;
    let rest = words.next().unwrap_or("").trim_start();
    let (kind_word, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let kind = match kind_word {
        "FLAT" => ExtentType::Flat,
        "SPARSE" => ExtentType::Sparse,
        "VMFS" => ExtentType::Vmfs,
        "VMFSSPARSE" => ExtentType::VmfsSparse,
        "SESPARSE" => ExtentType::SeSparse,
        "VMFSRDM" | "VMFSRAW" => ExtentType::VmfsRdm,
        "ZERO" => ExtentType::Zero,
        _ => return Err(bad("unknown extent type")),
    };
    let rest = rest.trim();
    let (file, offset) = if kind == ExtentType::Zero {
        (None, 0)
    } else {
        let r = rest
            .strip_prefix('"')
            .ok_or_else(|| bad("extent file name must be quoted"))?;
        let close = r.find('"').ok_or_else(|| bad("unterminated file name"))?;
        let name = &r[..close];
        if name.is_empty() {
            return Err(bad("empty extent file name"));
        }
        let tail = r[close + 1..].trim();
        let offset = if tail.is_empty() {
            0
        } else {
            // Some writers append more words (partition UUIDs); the first is the offset.
            let w = tail.split_whitespace().next().unwrap_or("0");
            w.parse().map_err(|_| bad("bad extent offset"))?
        };
        (Some(name.to_string()), offset)
    };
    Ok(Some(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# Disk DescriptorFile\nversion=1\nCID=7dd5359b\nparentCID=ffffffff\n\
createType=\"twoGbMaxExtentSparse\"\nparentFileNameHint=\"base.vmdk\"\n\n# Extent description\n\
RW 4192256 SPARSE \"a-s001.vmdk\"\nRDONLY 100 FLAT \"b flat.vmdk\" 7\nNOACCESS 5 ZERO\n\n\
#DDB\nddb.adapterType = \"lsilogic\"\nddb.geometry.heads = \"255\"\n\0\0\0junk";

    #[test]
    fn parses_every_part() {
        let d = Descriptor::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(d.create_type, "twoGbMaxExtentSparse");
        assert_eq!(d.cid, Some(0x7dd5359b));
        assert_eq!(d.parent_cid, Some(CID_NONE));
        assert!(!d.has_parent());
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[1].file.as_deref(), Some("b flat.vmdk"));
        assert_eq!(d.extents[1].offset, 7);
        assert_eq!(d.extents[1].access, Access::RdOnly);
        assert_eq!(d.extents[2].kind, ExtentType::Zero);
        assert_eq!(d.ddb[0], ("ddb.adapterType".into(), "lsilogic".into()));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            Descriptor::parse(b"version=1\nRW x SPARSE \"a\"\n"),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            Descriptor::parse(b"hello\n"),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            Descriptor::parse(b"version=1\nRW 5 BOGUS \"a\"\n"),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn extent_count_is_capped() {
        let mut s = String::from("version=1\n");
        for _ in 0..=MAX_EXTENTS {
            s.push_str("RW 1 ZERO\n");
        }
        let e = Descriptor::parse(s.as_bytes()).unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
    }

    #[test]
    fn descriptor_size_is_capped() {
        let big = vec![b'#'; (crate::vmdk::header::MAX_DESCRIPTOR_SIZE + 1) as usize];
        let e = Descriptor::parse(&big).unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
    }
}
