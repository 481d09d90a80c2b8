//! Data lines: parsing never panics, and an accepted line meets every rule of the format.

#![no_main]

use libfuzzer_sys::fuzz_target;
use segmart_domain::SegmentKey;
use segmart_ingest::line::is_valid_segment_key;
use segmart_ingest::{Rejection, UserId, parse_line};

fuzz_target!(|data: &[u8]| {
    match parse_line(data) {
        Ok(line) => {
            assert!(line.dmp_user().is_some() || line.dsp_user().is_some());
            assert!(line.segment_count() > 0);
            assert_eq!(line.add().iter().count(), line.add().len());
            assert_eq!(line.remove().iter().count(), line.remove().len());
            for id in line.add().iter().chain(line.remove().iter()) {
                assert!(SegmentKey::parse(id).is_ok(), "{id:?}");
            }
            for user in [line.dmp_user(), line.dsp_user()].into_iter().flatten() {
                match user {
                    UserId::Desktop(id) => assert!(!id.is_empty() && !id.contains([':', '\t'])),
                    UserId::Mobile { id, .. } => assert_eq!(id.key().as_str().len(), 38),
                }
            }
            let resolved = line.resolve_user(|key| Some(format!("matched:{key}")));
            assert!(!resolved.as_str().is_empty());
            let update = line.to_profile_update();
            assert_eq!(update.add.len() + update.remove.len(), line.segment_count());
        }
        Err(error) => {
            let rejection = Rejection::new(2, data, &error);
            assert!(!rejection.message.is_empty());
        }
    }
    // Each list field on its own agrees with the domain's rule.
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(is_valid_segment_key(text), SegmentKey::parse(text).is_ok());
    }
});
