#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tenantgate_contract::fuzz_checks::host(data));
