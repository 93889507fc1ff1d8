//! v2x: the conversion pipeline, CLI definitions and copier.
#![forbid(unsafe_code)]
