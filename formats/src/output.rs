//! Choosing a writer for an output format.

use crate::error::{Error, Result};
use crate::qcow2::Qcow2Writer;
use crate::raw::RawWriter;
use crate::sink::{ImageWriter, WriteOptions};
use crate::vhd::{VhdDynamicWriter, VhdFixedWriter};
use crate::vhdx::VhdxDynamicWriter;
use crate::vmdk::VmdkWriter;
use serde::Serialize;
use std::fs::File;
use std::str::FromStr;

/// Formats v2x can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Plain disk bytes, sparse.
    Raw,
    /// qcow2, compat 1.1.
    Qcow2,
    /// VHD (vpc), fixed (default) or dynamic (`subformat=dynamic`), size
    /// rounded up to 1 MiB as Azure requires.
    Vhd,
    /// VHDX, dynamic.
    Vhdx,
    /// VMDK, streamOptimized (what VMware imports from an OVA).
    Vmdk,
}

impl OutputFormat {
    /// The format's name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Raw => "raw",
            OutputFormat::Qcow2 => "qcow2",
            OutputFormat::Vhd => "vpc",
            OutputFormat::Vhdx => "vhdx",
            OutputFormat::Vmdk => "vmdk",
        }
    }

    /// Guesses the output format from a file name's extension.
    pub fn from_extension(path: &std::path::Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "qcow2" | "qcow" => Some(OutputFormat::Qcow2),
            "raw" | "img" | "bin" | "dd" => Some(OutputFormat::Raw),
            "vhd" | "vpc" => Some(OutputFormat::Vhd),
            "vhdx" => Some(OutputFormat::Vhdx),
            "vmdk" => Some(OutputFormat::Vmdk),
            _ => None,
        }
    }
}

impl FromStr for OutputFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "raw" => Ok(OutputFormat::Raw),
            "qcow2" => Ok(OutputFormat::Qcow2),
            "vmdk" => Ok(OutputFormat::Vmdk),
            other => Err(Error::unsupported(format!(
                "output format '{other}' (this build writes raw, qcow2 and vmdk)"
            ))),
        }
    }
}

/// Creates a writer for a `size`-byte disk in `file`, which must be empty.
pub fn create_writer(
    format: OutputFormat,
    file: File,
    size: u64,
    opts: &WriteOptions,
) -> Result<Box<dyn ImageWriter>> {
    Ok(match format {
        OutputFormat::Raw => Box::new(RawWriter::create(file, size, opts)?),
        OutputFormat::Qcow2 => Box::new(Qcow2Writer::create(file, size, opts)?),
        OutputFormat::Vhd => match opts.subformat.as_deref() {
            None | Some("fixed") => Box::new(VhdFixedWriter::create(file, size, opts)?),
            Some("dynamic") => Box::new(VhdDynamicWriter::create(file, size, opts)?),
            Some(other) => {
                return Err(Error::unsupported(format!(
                    "VHD subformat '{other}' (v2x writes fixed and dynamic VHDs)"
                )))
            }
        },
        OutputFormat::Vhdx => Box::new(VhdxDynamicWriter::create(file, size, opts)?),
        OutputFormat::Vmdk => Box::new(VmdkWriter::create(file, size, opts)?),
    })
}
