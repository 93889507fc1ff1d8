#![no_main]
//! VMX descriptor text only: disk paths are resolved, never opened.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    v2x::fuzzing::exercise("vmx", data);
});
