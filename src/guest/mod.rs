//! The guest: what is inside the disks (inspection) and how it is changed
//! for KVM (conversion, in `crate::convert`).

pub mod hive;
pub mod initramfs;
pub mod inspect;
pub mod linux;
pub mod windows;
