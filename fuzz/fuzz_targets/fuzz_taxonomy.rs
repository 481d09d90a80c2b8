//! Taxonomy files: parsing never panics; a refused taxonomy always says why.

#![no_main]

use libfuzzer_sys::fuzz_target;
use segmart_ingest::parse_taxonomy;

fuzz_target!(|data: &[u8]| {
    match parse_taxonomy(data) {
        Ok(entries) => {
            for entry in entries {
                assert!(!entry.name.trim().is_empty());
            }
        }
        Err(error) => assert!(!error.issues.is_empty()),
    }
});
