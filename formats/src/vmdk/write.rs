//! streamOptimized writer (placeholder while the reader lands).

/// Writes a streamOptimized VMDK.
#[derive(Debug)]
pub struct VmdkWriter;
