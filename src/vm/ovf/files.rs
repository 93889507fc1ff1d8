//! Which files a VM description may name: paths confined to its directory,
//! and the size cap on reading the description itself.

use super::super::MAX_DESCRIPTOR_BYTES;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Reads a VM description file of at most [`MAX_DESCRIPTOR_BYTES`].
pub fn read_descriptor(path: &Path) -> Result<Vec<u8>> {
    read_capped(path, "VM description bytes", MAX_DESCRIPTOR_BYTES)
}

/// Reads a whole small file, refusing one longer than `max` bytes (`what`
/// names the cap) without reading more than `max + 1` bytes of it.
pub fn read_capped(path: &Path, what: &'static str, max: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    check_limit(what, bytes.len() as u64, max)?;
    Ok(bytes)
}

/// Turns a file name from a description (OVF href, VMX fileName) into a
/// relative path that stays inside the description's directory. Absolute
/// paths, `..` components and URLs are refused with [`Error::Denied`].
pub fn contained_path(name: &str) -> Result<PathBuf> {
    let denied = |why: &str| {
        Err(Error::Denied(format!(
            "file name '{name}' {why}; only files beside the description are read"
        )))
    };
    if name.contains("://") || has_scheme(name) {
        return denied("is a URL or drive path");
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return denied("is absolute");
    }
    if name.contains('\0') {
        return denied("holds a NUL byte");
    }
    let mut out = PathBuf::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return denied("climbs out with '..'"),
            p => out.push(p),
        }
    }
    // Belt and braces: what was pushed must be plain names.
    if out.as_os_str().is_empty() || !out.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::corrupt(format!("file name '{name}' names no file"), 0));
    }
    Ok(out)
}

/// True for `http:`, `file:`, `C:` and other `scheme:` prefixes.
pub fn has_scheme(s: &str) -> bool {
    match s.split_once(':') {
        Some((scheme, _)) => {
            let mut chars = scheme.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// Decodes `%XX` escapes of a URI reference (an OVF href).
pub(super) fn percent_decode(s: &str) -> Result<String> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(v) = v else {
                return Err(Error::corrupt(format!("href '{s}' has a bad %-escape"), 0));
            };
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::corrupt(format!("href '{s}' decodes to non-UTF-8"), 0))
}
