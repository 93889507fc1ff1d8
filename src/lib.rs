//! v2x: the conversion pipeline, CLI definitions and copier. The binary in
//! `main.rs` is a thin shell over [`pipeline`].
#![forbid(unsafe_code)]

pub mod batch;
pub mod cli;
pub mod compare;
pub mod convert;
pub mod copy;
pub mod exit;
pub mod fs;
pub mod fuzzing;
pub mod guest;
pub mod machine;
pub mod manpages;
pub mod options;
pub mod overlay;
pub mod pipeline;
pub mod report;
pub mod target;
pub mod vm;
pub mod volume;
