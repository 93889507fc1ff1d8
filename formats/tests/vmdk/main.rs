//! VMDK reader and writer against qemu-img as the oracle.
//!
//! Images come from `testdata/gen-vmdk.sh` (run once per test process);
//! qemu-img and qemu-io must be installed: a missing tool fails the test.
//! `util` holds the oracle helpers; the other modules group the tests by
//! what they cover.

mod esxi;
mod hosted;
mod stream;
mod util;
