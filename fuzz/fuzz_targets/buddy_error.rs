#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cigate_server::fuzzing::buddy_error(data));
