//! OVF attribute values: numbers, allocation units, format URLs, resource
//! references and error positions.

use std::collections::HashMap;
use v2x_formats::{Error, Result};

/// Byte offset of 1-based (row, column) in `text`, clamped to its length.
pub(super) fn byte_offset(text: &str, row: u32, col: u32) -> u64 {
    let line_start: usize = text
        .split_inclusive('\n')
        .take((row as usize).saturating_sub(1))
        .map(str::len)
        .sum();
    let in_line = text[line_start..]
        .char_indices()
        .nth((col as usize).saturating_sub(1))
        .map_or(0, |(i, _)| i);
    (line_start + in_line) as u64
}

/// `ovf:/disk/ID`, `/disk/ID` (0.9, VirtualBox) or `ovf:/file/ID` -> ("disk"|"file", ID).
pub(super) fn host_resource(s: &str) -> Option<(&'static str, &str)> {
    let s = s.trim();
    let s = s.strip_prefix("ovf:").unwrap_or(s).trim_start_matches('/');
    if let Some(id) = s.strip_prefix("disk/") {
        Some(("disk", id))
    } else {
        s.strip_prefix("file/").map(|id| ("file", id))
    }
}

/// Resolves a `${key}` reference to a Property's value; plain values pass.
pub(super) fn property_ref<'a>(raw: &'a str, props: &HashMap<&str, &'a str>) -> Option<&'a str> {
    match raw.trim().strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(key) => props.get(key).copied(),
        None => Some(raw),
    }
}

/// Parses a plain decimal number: digits only, no sign, no spaces inside.
pub(super) fn parse_u64(s: &str) -> std::result::Result<u64, ()> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    s.parse().map_err(|_| ())
}

/// Bytes per unit of a DMTF programmatic unit ("byte * 2^30", "byte*10^9",
/// "byte") or the older names ("MegaBytes", binary as VMware and VirtualBox mean them).
pub(super) fn unit_bytes(units: &str) -> Result<u64> {
    let u: String = units
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let named = match u.as_str() {
        "" | "byte" | "bytes" => Some(1),
        "kilobyte" | "kilobytes" | "kb" | "kib" => Some(1 << 10),
        "megabyte" | "megabytes" | "mb" | "mib" => Some(1 << 20),
        "gigabyte" | "gigabytes" | "gb" | "gib" => Some(1 << 30),
        "terabyte" | "terabytes" | "tb" | "tib" => Some(1 << 40),
        _ => None,
    };
    if let Some(n) = named {
        return Ok(n);
    }
    let bad = || Error::corrupt(format!("allocation unit '{units}' is malformed or too large"), 0);
    let Some(factors) = u.strip_prefix("byte*") else {
        return Err(Error::unsupported(format!("allocation unit '{units}'")));
    };
    let mut total: u64 = 1;
    for f in factors.split('*') {
        let v = match f.split_once('^') {
            Some((base, exp)) => {
                let base = parse_u64(base).map_err(|_| bad())?;
                let exp = parse_u64(exp)
                    .ok()
                    .and_then(|e| u32::try_from(e).ok())
                    .ok_or_else(bad)?;
                base.checked_pow(exp).ok_or_else(bad)?
            }
            None => parse_u64(f).map_err(|_| bad())?,
        };
        total = total.checked_mul(v).ok_or_else(bad)?;
    }
    if total == 0 {
        return Err(bad());
    }
    Ok(total)
}

/// A short image-format hint from an `ovf:format` URL: `vmdk-streamOptimized`,
/// `vmdk`, `qcow2`, `vhd`, `raw`; other strings are kept as written.
pub(super) fn format_hint(url: &str) -> String {
    let url = url.trim();
    let lower = url.to_ascii_lowercase();
    if lower.contains("vmdk") {
        return match url.rsplit_once('#') {
            Some((_, frag)) if !frag.is_empty() => format!("vmdk-{frag}"),
            _ => "vmdk".into(),
        };
    }
    for (needle, hint) in [
        ("qcow", "qcow2"),
        ("vhdx", "vhdx"),
        ("vhd", "vhd"),
        ("raw", "raw"),
    ] {
        if lower.contains(needle) {
            return hint.into();
        }
    }
    url.chars().take(200).collect()
}
