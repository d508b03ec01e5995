#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minipay::fuzzing::wal_recovery(data));
