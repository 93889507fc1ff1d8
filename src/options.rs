//! Turning command-line arguments into library options.

use crate::cli::{CompressArg, InputFormat, SourceArgs};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use v2x_formats::detect::Format;
use v2x_formats::sink::{Compression, Preallocation, WriteOptions};
use v2x_formats::{BackingPolicy, OpenOptions};

/// Library open options from the shared source flags.
pub fn open_options(src: &SourceArgs, format: Option<InputFormat>) -> OpenOptions {
    let forced = format.and_then(|f| match f {
        InputFormat::Raw => Some(Format::Raw),
        InputFormat::Qcow2 => Some(Format::Qcow2),
        InputFormat::Vpc => Some(Format::Vhd),
        InputFormat::Vhdx => Some(Format::Vhdx),
        InputFormat::Vdi => Some(Format::Vdi),
        // VMDK has several on-disk kinds; detection picks one and `open_source` checks it.
        InputFormat::Vmdk => None,
    });
    let backing = if src.no_backing {
        BackingPolicy::Refuse
    } else if src.allow_backing.iter().any(|d| d == "any") {
        BackingPolicy::Any
    } else {
        BackingPolicy::Within(src.allow_backing.iter().map(PathBuf::from).collect())
    };
    OpenOptions {
        format: forced,
        backing,
        max_chain_depth: src.max_chain_depth,
        allow_external_data: src.allow_external_data,
    }
}

/// Parses "64K", "2M", "1G", "512" (binary units) into bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("unknown size suffix in '{s}' (use K, M, G or T)"),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().with_context(|| format!("'{s}' is not a size"))?;
    n.checked_mul(mult)
        .with_context(|| format!("size '{s}' is too large"))
}

/// Builds writer options from `-o key=value` lists and `--compress`.
pub fn write_options(opts: &[String], compress: Option<Option<CompressArg>>) -> Result<WriteOptions> {
    let mut w = WriteOptions::default();
    let mut algorithm = None;
    for kv in opts.iter().flat_map(|o| o.split(',')).filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("option '{kv}' is not key=value"))?;
        match k {
            "cluster_size" => w.cluster_size = Some(parse_size(v)?),
            "compression_type" => algorithm = Some(v.parse::<Compression>()?),
            "compression_level" => {
                w.compression_level = Some(
                    v.parse()
                        .with_context(|| format!("bad compression_level '{v}'"))?,
                )
            }
            "preallocation" => {
                w.preallocation = match v {
                    "off" => Preallocation::Off,
                    "full" | "falloc" => Preallocation::Full,
                    other => bail!("preallocation '{other}' is not off or full"),
                }
            }
            "subformat" => w.subformat = Some(v.to_string()),
            other => bail!("unknown output option '{other}'"),
        }
    }
    // As in qemu-img, -o compression_type only names the algorithm; --compress turns it on.
    let named = compress.flatten().map(|c| match c {
        CompressArg::Zlib => Compression::Zlib,
        CompressArg::Zstd => Compression::Zstd,
    });
    if let (Some(a), Some(b)) = (named, algorithm) {
        if a != b {
            bail!("--compress {a:?} contradicts -o compression_type={b:?}");
        }
    }
    match compress {
        Some(_) => w.compression = Some(named.or(algorithm).unwrap_or(Compression::Zlib)),
        None if w.compression_level.is_some() => bail!("compression_level needs --compress"),
        None => {}
    }
    Ok(w)
}

/// Opens a source image as the user asked: detected, or forced with `-f`.
pub fn open_source(
    path: &std::path::Path,
    src: &SourceArgs,
    format: Option<InputFormat>,
) -> Result<Box<dyn v2x_formats::BlockSource>> {
    let img = v2x_formats::open_image(path, &open_options(src, format))
        .with_context(|| format!("opening {}", path.display()))?;
    if format == Some(InputFormat::Vmdk) {
        let found = img.info().format;
        if found != "vmdk" {
            return Err(v2x_formats::Error::invalid(format!(
                "{} is not a VMDK (it looks like {found})",
                path.display()
            ))
            .into());
        }
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("2M").unwrap(), 2 << 20);
        assert!(parse_size("1X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn options() {
        let w = write_options(&["cluster_size=2M,compression_type=zstd".into()], Some(None)).unwrap();
        assert_eq!(w.cluster_size, Some(2 << 20));
        assert_eq!(w.compression, Some(Compression::Zstd));
        let w = write_options(&["compression_type=zstd".into()], None).unwrap();
        assert_eq!(w.compression, None);
        let w = write_options(&[], Some(None)).unwrap();
        assert_eq!(w.compression, Some(Compression::Zlib));
        assert!(write_options(&["compression_type=zstd".into()], Some(Some(CompressArg::Zlib))).is_err());
        assert!(write_options(&["bogus=1".into()], None).is_err());
    }
}
