//! A small tar reader for OVAs: walks the headers and records where each
//! member's data lies, without reading any data. Understands ustar, GNU
//! (`L` long names, base-256 sizes) and pax (`x` headers: `path`, `size`).
//!
//! Member names are untrusted: an absolute name or one with a `..`
//! component is refused outright, for any member, even though nothing is
//! ever written to the host from a name.

use v2x_formats::error::check_limit;
use v2x_formats::file::HostFile;
use v2x_formats::{Error, Result};

/// Size of a tar header and of the blocks data is padded to.
pub const TAR_BLOCK: u64 = 512;
/// Most members (files, directories, links) one archive may hold.
pub const MAX_TAR_MEMBERS: usize = 10_000;
/// Longest member name accepted, bytes (GNU `L` and pax `path` included).
pub const MAX_MEMBER_NAME: usize = 4096;
/// Largest pax extended header read into memory.
pub const MAX_PAX_HEADER_BYTES: u64 = 64 << 10;
/// Most metadata headers (pax, GNU long name) before one member.
pub const MAX_META_HEADERS: usize = 16;

/// What a member is. Only regular files have data worth reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A hard or symbolic link; never followed.
    Link,
    /// A device, FIFO, GNU sparse file or unknown type; never read.
    Other,
}

/// One member of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarMember {
    /// Its name, with a leading `./` and a trailing `/` removed.
    pub name: String,
    /// Its type.
    pub kind: MemberKind,
    /// Offset of its header (the first of its metadata headers) in the archive.
    pub header_offset: u64,
    /// Offset of its data in the archive.
    pub offset: u64,
    /// Length of its data (0 for anything but a regular file).
    pub len: u64,
}

/// Overrides that pax and GNU metadata headers set for the next member.
#[derive(Default)]
struct Pending {
    name: Option<String>,
    size: Option<u64>,
    sparse: bool,
    count: usize,
    first_offset: Option<u64>,
}

/// Walks every header of the tar in `file`, checking each name, size and
/// checksum, and returns the members in archive order.
pub fn walk(file: &HostFile) -> Result<Vec<TarMember>> {
    let mut members = Vec::new();
    let mut pos = 0u64;
    let mut pending = Pending::default();
    let mut block = [0u8; TAR_BLOCK as usize];
    loop {
        if pos >= file.len() {
            // Some writers omit the zero blocks (or the last padding); a clean end is still an end.
            break;
        }
        if file.len() - pos < TAR_BLOCK {
            return Err(Error::corrupt(
                format!(
                    "{}: tar header cut short by the end of the file",
                    file.path().display()
                ),
                pos,
            ));
        }
        file.read_exact_at(pos, &mut block)?;
        if block.iter().all(|&b| b == 0) {
            // End of archive: one zero block, then another (or the end).
            let next = pos + TAR_BLOCK;
            if next + TAR_BLOCK <= file.len() {
                file.read_exact_at(next, &mut block)?;
                if !block.iter().all(|&b| b == 0) {
                    return Err(Error::corrupt("a tar header follows a single zero block", next));
                }
            }
            break;
        }
        let h = Header::parse(&block, pos)?;
        let data = pos + TAR_BLOCK;
        let size = match h.kind {
            // No data follows links, directories, devices or FIFOs.
            b'1' | b'2' | b'3' | b'4' | b'5' | b'6' => 0,
            _ => pending.size.unwrap_or(h.size),
        };
        let data_end = data
            .checked_add(size)
            .filter(|&e| e <= file.len())
            .ok_or_else(|| {
                Error::corrupt(
                    format!(
                        "{}: member of {size} bytes at {data:#x} lies past the end of the archive ({} bytes)",
                        file.path().display(),
                        file.len()
                    ),
                    pos,
                )
            })?;
        let next = data_end.div_ceil(TAR_BLOCK).saturating_mul(TAR_BLOCK);
        match h.kind {
            b'x' | b'g' | b'L' | b'K' => {
                pending.count += 1;
                check_limit(
                    "tar metadata headers before one member",
                    pending.count as u64,
                    MAX_META_HEADERS as u64,
                )?;
                pending.first_offset.get_or_insert(pos);
                match h.kind {
                    b'x' => {
                        check_limit("pax header size", size, MAX_PAX_HEADER_BYTES)?;
                        let bytes = file.read_vec(data, size as usize)?;
                        parse_pax(&bytes, data, &mut pending)?;
                    }
                    b'L' => {
                        check_limit("tar member name length", size, MAX_MEMBER_NAME as u64)?;
                        let bytes = file.read_vec(data, size as usize)?;
                        pending.name = Some(text(until_nul(&bytes), "GNU long name", data)?);
                    }
                    // Global pax headers and GNU long link names change nothing we use.
                    _ => check_limit("tar metadata header size", size, MAX_PAX_HEADER_BYTES)?,
                }
            }
            _ => {
                let raw_name = match pending.name.take() {
                    Some(n) => n,
                    None => h.name.clone(),
                };
                let name = clean_name(&raw_name, pos)?;
                let kind = match h.kind {
                    _ if pending.sparse => MemberKind::Other,
                    b'0' | b'\0' | b'7' => MemberKind::File,
                    b'5' => MemberKind::Dir,
                    b'1' | b'2' => MemberKind::Link,
                    _ => MemberKind::Other,
                };
                check_limit("tar members", members.len() as u64 + 1, MAX_TAR_MEMBERS as u64)?;
                members.push(TarMember {
                    name,
                    kind,
                    header_offset: pending.first_offset.unwrap_or(pos),
                    offset: data,
                    len: if kind == MemberKind::File { size } else { 0 },
                });
                pending = Pending::default();
            }
        }
        pos = next;
    }
    if pending.count > 0 {
        return Err(Error::corrupt("tar metadata header with no member after it", pos));
    }
    Ok(members)
}

/// The fields of one 512-byte header that matter here.
struct Header {
    name: String,
    size: u64,
    kind: u8,
}

impl Header {
    /// Parses and checksums the header block at archive offset `at`.
    fn parse(b: &[u8; TAR_BLOCK as usize], at: u64) -> Result<Header> {
        let stored = number(&b[148..156], "header checksum", at)?;
        // The checksum counts its own field as eight spaces. Old writers
        // summed signed bytes; accept either sum.
        let unsigned: u64 = b
            .iter()
            .enumerate()
            .map(|(i, &x)| if (148..156).contains(&i) { 32 } else { u64::from(x) })
            .sum();
        let signed: i64 = b
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    i64::from(x as i8)
                }
            })
            .sum();
        if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
            return Err(Error::corrupt(
                format!("tar header checksum is {stored:o}, the header sums to {unsigned:o}"),
                at,
            ));
        }
        let size = number(&b[124..136], "member size", at)?;
        let mut name = text(until_nul(&b[0..100]), "member name", at)?;
        // POSIX ustar splits long names into prefix "/" name. GNU's magic
        // ("ustar  ") uses that area for other fields.
        if &b[257..263] == b"ustar\0" {
            let prefix = text(until_nul(&b[345..500]), "member name prefix", at)?;
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        Ok(Header {
            name,
            size,
            kind: b[156],
        })
    }
}

/// Parses a numeric header field: octal text (NUL or space terminated,
/// leading spaces allowed), or GNU base-256 when the top bit is set.
fn number(field: &[u8], what: &str, at: u64) -> Result<u64> {
    let bad = || Error::corrupt(format!("tar {what} field is not a number"), at);
    if let Some((&first, rest)) = field.split_first() {
        if first & 0x80 != 0 {
            if first == 0xff {
                return Err(Error::corrupt(format!("tar {what} is negative"), at));
            }
            let mut v = u64::from(first & 0x7f);
            for &byte in rest {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(byte)))
                    .ok_or_else(|| Error::corrupt(format!("tar {what} overflows"), at))?;
            }
            return Ok(v);
        }
    }
    let s = field.iter().position(|&c| c != b' ').unwrap_or(field.len());
    let digits = &field[s..];
    let end = digits
        .iter()
        .position(|&c| c == 0 || c == b' ')
        .unwrap_or(digits.len());
    if digits[end..].iter().any(|&c| c != 0 && c != b' ') {
        return Err(bad());
    }
    let mut v = 0u64;
    for &c in &digits[..end] {
        if !(b'0'..=b'7').contains(&c) {
            return Err(bad());
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
            .ok_or_else(|| Error::corrupt(format!("tar {what} overflows"), at))?;
    }
    Ok(v)
}

/// Applies the records of a pax extended header (`"LEN key=value\n"`...).
fn parse_pax(mut data: &[u8], at: u64, pending: &mut Pending) -> Result<()> {
    let bad = |what: &str| Error::corrupt(format!("pax header: {what}"), at);
    while !data.is_empty() {
        let sp = data
            .iter()
            .position(|&c| c == b' ')
            .ok_or_else(|| bad("record has no length"))?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("record length is not a number"))?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad("record length does not fit the header"));
        }
        let record = &data[sp + 1..len - 1];
        data = &data[len..];
        let eq = record
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(|| bad("record has no '='"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => {
                check_limit(
                    "tar member name length",
                    value.len() as u64,
                    MAX_MEMBER_NAME as u64,
                )?;
                pending.name = Some(text(value, "pax path", at)?);
            }
            b"size" => {
                let v = std::str::from_utf8(value)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("size is not a number"))?;
                pending.size = Some(v);
            }
            k if k.starts_with(b"GNU.sparse.") => pending.sparse = true,
            _ => {}
        }
    }
    Ok(())
}

/// The bytes of `b` before its first NUL.
fn until_nul(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

/// A name field as UTF-8 (OVA member names are ASCII in practice).
fn text(b: &[u8], what: &str, at: u64) -> Result<String> {
    String::from_utf8(b.to_vec())
        .map_err(|_| Error::unsupported(format!("tar {what} at {at:#x} is not UTF-8")))
}

/// Normalises a member name and refuses one that escapes the archive:
/// absolute, or with a `..` component (`\` counts as a separator too).
pub fn clean_name(raw: &str, at: u64) -> Result<String> {
    check_limit("tar member name length", raw.len() as u64, MAX_MEMBER_NAME as u64)?;
    if escapes(raw) {
        return Err(Error::Denied(format!(
            "tar member '{}' (header at {at:#x}) has a path that escapes the archive",
            raw.escape_debug()
        )));
    }
    let mut name = raw;
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    let name = name.trim_end_matches('/');
    if name.is_empty() || name == "." {
        return Ok(".".to_string());
    }
    Ok(name.to_string())
}

/// True for a path that is absolute or climbs out with `..`.
pub fn escapes(path: &str) -> bool {
    path.starts_with('/')
        || path.starts_with('\\')
        || (path.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && path.as_bytes().get(1) == Some(&b':'))
        || path.split(['/', '\\']).any(|c| c == "..")
}

#[cfg(test)]
pub(crate) mod build {
    //! Hand-built tar archives for tests and fuzz seeds.

    use super::TAR_BLOCK;

    /// One 512-byte ustar header for `name`, type `kind`, `size` bytes,
    /// with a correct checksum. `size_field` overrides the size's 12 bytes.
    pub fn header(name: &[u8], kind: u8, size: u64, size_field: Option<[u8; 12]>) -> Vec<u8> {
        let mut h = vec![0u8; TAR_BLOCK as usize];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        let size = size_field.unwrap_or_else(|| {
            let mut f = [0u8; 12];
            f[..11].copy_from_slice(format!("{size:011o}").as_bytes());
            f
        });
        h[124..136].copy_from_slice(&size);
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        seal(&mut h);
        h
    }

    /// Recomputes the checksum of header `h`.
    pub fn seal(h: &mut [u8]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    /// Appends a member (header, data, padding) to `tar`.
    pub fn member(tar: &mut Vec<u8>, name: &str, data: &[u8]) {
        tar.extend(header(name.as_bytes(), b'0', data.len() as u64, None));
        tar.extend_from_slice(data);
        pad(tar);
    }

    /// Pads `tar` to a block boundary.
    pub fn pad(tar: &mut Vec<u8>) {
        let rem = tar.len() % TAR_BLOCK as usize;
        if rem != 0 {
            tar.resize(tar.len() + TAR_BLOCK as usize - rem, 0);
        }
    }

    /// Appends the two zero blocks that end an archive.
    pub fn finish(tar: &mut Vec<u8>) {
        tar.resize(tar.len() + 2 * TAR_BLOCK as usize, 0);
    }

    /// A pax `x` record "LEN key=value\n".
    pub fn pax_record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}")
    }
}

#[cfg(test)]
#[path = "tar_tests.rs"]
mod tests;
