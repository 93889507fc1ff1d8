#![no_main]
use libfuzzer_sys::fuzz_target;
use v2x_formats::detect::Format;

fuzz_target!(|data: &[u8]| {
    v2x_formats::fuzzing::exercise_bytes(Format::VmdkSparse, data);
});
