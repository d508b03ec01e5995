#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minipay::harness::fuzzing::bank_requests(data));
