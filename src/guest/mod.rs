//! The guest: what is inside the disks (inspection) and, later, how it is
//! changed for KVM (conversion).

pub mod hive;
pub mod windows;
