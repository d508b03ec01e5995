#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minipay::fuzzing::gateway_requests(data));
