//! OVA archives: a tar read in place. (Being written: see the OVA helper's branch.)

use super::VmSpec;
use std::path::Path;
use v2x_formats::{Error, Result};

/// Reads the OVA at `path`: its OVF, with disks located as tar members.
/// With `verify_manifest`, the `.mf` digests are checked first.
pub fn load(_path: &Path, _verify_manifest: bool) -> Result<VmSpec> {
    Err(Error::unsupported("OVA reading is not written yet"))
}

/// Opens the disk at `loc` read-only: a host file, or an OVA member in place
/// (a gzip member is unpacked into a temporary file in `unpack` first).
pub fn open_location(
    _loc: &super::DiskLocation,
    _opts: &v2x_formats::OpenOptions,
    _unpack: &Path,
) -> Result<Box<dyn v2x_formats::block::BlockSource>> {
    Err(Error::unsupported("OVA reading is not written yet"))
}
