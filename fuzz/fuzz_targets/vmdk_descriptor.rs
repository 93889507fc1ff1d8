#![no_main]
//! Descriptor text only: opening a descriptor would open the extent files it
//! names, which a fuzzer should not do.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = v2x_formats::vmdk::Descriptor::parse(data);
});
