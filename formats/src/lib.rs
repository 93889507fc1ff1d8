//! Disk-image formats for v2x: detection, readers with allocation maps, and
//! writers fed by the parallel copier.
//!
//! Every reader implements [`block::BlockSource`]; every writer implements
//! [`sink::ImageWriter`]. Images are untrusted input: sizes read from disk are
//! capped by `MAX_*` constants, arithmetic on offsets is checked, and no code
//! here is `unsafe`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod block;
pub mod detect;
pub mod error;
pub mod file;
pub mod fuzzing;
pub mod open;
pub mod output;
pub mod qcow2;
pub mod raw;
pub mod sink;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

pub use block::{BlockSource, Extent, ExtentKind, ImageInfo};
pub use detect::{detect, Format};
pub use error::{Error, Result};
pub use open::{open_image, BackingPolicy, OpenOptions};
pub use output::{create_writer, OutputFormat};
pub use sink::{Compression, ImageWriter, Preallocation, WriteOptions};
