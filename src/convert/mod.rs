//! Guest conversion: the edits that make a guest boot on KVM/virtio. Each
//! module computes edits; applying them to the overlay is a separate step so
//! `--dry-run` can print the plan.

pub mod apply;
pub mod cpio;
pub mod devnames;
pub mod firstboot;
pub mod guest;
pub mod kmod_index;
pub mod linux;
pub mod linux_services;
pub mod plan;
pub mod uefi;
pub mod virtio_initramfs;
