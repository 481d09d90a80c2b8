//! File names: parsing never panics, and an accepted name re-parses from its canonical spelling
//! to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use segmart_ingest::BatchFileName;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = BatchFileName::parse(raw) {
        let canonical = name.to_string();
        let again = BatchFileName::parse(&canonical).expect("a canonical name parses");
        assert_eq!(again, name);
        assert_eq!(again.to_string(), canonical);
        assert_eq!(name.sibling(name.kind()), name);
    }
});
