#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minipay::harness::fuzzing::gateway_requests(data));
