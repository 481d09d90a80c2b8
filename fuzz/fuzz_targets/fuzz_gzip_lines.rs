//! The gzip line reader and the whole batch pipeline: never panic on arbitrary input, and count
//! every line exactly once.

#![no_main]

use libfuzzer_sys::fuzz_target;
use segmart_ingest::BatchReader;

fuzz_target!(|data: &[u8]| {
    let mut reader = BatchReader::new(data);
    while let Ok(Some(_)) = reader.next_item() {}
    let counts = reader.counts();
    assert_eq!(
        counts.lines_read,
        counts.header_lines + counts.blank_lines + counts.parsed_lines + counts.rejected_lines
    );
});
