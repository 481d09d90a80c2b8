//! Binary encoding of write-ahead-log records.
//!
//! A record frames one [`WriteBatch`] as applied: `[len u32][crc32 u32][payload]`, little
//! endian, the CRC over the payload. The payload is
//!
//! ```text
//! effective time  i64  milliseconds since the epoch (see "the store's clock" in the module docs)
//! mutations       u32
//! then the batch's packed mutations (see `crate::packed`), as the batch holds them
//! ```
//!
//! Expiries are stored as the table stores them (whole seconds, rounded down, clamped to
//! `u32`), so replaying a record does exactly what applying it did.

use crate::profile::WriteBatch;

pub(crate) use crate::packed::{
    Malformed, Mutation, decode_mutation, pairs, take, take_u32, words,
};

/// Bytes of a record frame before the payload.
pub(crate) const FRAME_HEADER: usize = 8;
/// Smallest valid payload (effective time and mutation count). Shorter frames, such as the
/// all-zero frame of a zero-filled tail (whose CRC happens to match), are torn.
pub(crate) const MIN_PAYLOAD: usize = 12;
/// Largest payload a reader accepts; anything larger is treated as a torn or corrupt frame.
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;

/// Size of the framed record for `batch`.
pub(crate) fn record_len(batch: &WriteBatch) -> usize {
    FRAME_HEADER + MIN_PAYLOAD + batch.packed().len()
}

/// Appends the framed record of `batch`, stamped with `effective_ms`, to `out`.
pub(crate) fn encode_record(batch: &WriteBatch, effective_ms: i64, out: &mut Vec<u8>) {
    let frame_start = out.len();
    let payload_len = record_len(batch) - FRAME_HEADER;
    out.reserve(FRAME_HEADER + payload_len);
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.extend_from_slice(&effective_ms.to_le_bytes());
    out.extend_from_slice(&(batch.len() as u32).to_le_bytes());
    out.extend_from_slice(batch.packed());
    let crc = crc32fast::hash(&out[frame_start + FRAME_HEADER..]);
    out[frame_start..frame_start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[frame_start + 4..frame_start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads a frame header: payload length and CRC.
pub(crate) fn frame_header(bytes: [u8; FRAME_HEADER]) -> (usize, u32) {
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..].try_into().expect("4 bytes"));
    (len, crc)
}

/// Iterates a record payload: its effective time, then its mutations.
pub(crate) struct PayloadReader<'a> {
    rest: &'a [u8],
    remaining: u32,
    pub(crate) effective_ms: i64,
}

impl<'a> PayloadReader<'a> {
    pub(crate) fn new(payload: &'a [u8]) -> Result<Self, Malformed> {
        let mut rest = payload;
        let effective_ms = i64::from_le_bytes(take(&mut rest, 8)?.try_into().expect("8 bytes"));
        let remaining = take_u32(&mut rest)?;
        Ok(PayloadReader {
            rest,
            remaining,
            effective_ms,
        })
    }

    /// Offset of the next mutation within the payload.
    pub(crate) fn position(&self, payload: &[u8]) -> usize {
        payload.len() - self.rest.len()
    }

    pub(crate) fn next_mutation(&mut self) -> Result<Option<Mutation<'a>>, Malformed> {
        if self.remaining == 0 {
            return if self.rest.is_empty() {
                Ok(None)
            } else {
                Err(Malformed)
            };
        }
        self.remaining -= 1;
        decode_mutation(&mut self.rest).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ProfileKey, ProfileMutation};
    use segmart_domain::profile::ResolvedUpdate;
    use segmart_domain::{SegmentNum, Timestamp};

    #[test]
    fn round_trips_a_batch() {
        let batch = WriteBatch::of(
            Timestamp::from_millis(1_700_000_000_123),
            [
                ProfileMutation::Update {
                    key: ProfileKey(42),
                    update: ResolvedUpdate {
                        clear: true,
                        remove: vec![SegmentNum(7)],
                        add: vec![(SegmentNum(9), Timestamp::from_millis(5_999))],
                    },
                },
                ProfileMutation::Delete {
                    key: ProfileKey(u128::MAX),
                },
            ],
        );
        let mut out = Vec::new();
        encode_record(&batch, 77, &mut out);
        assert_eq!(out.len(), record_len(&batch));
        let (len, crc) = frame_header(out[..8].try_into().unwrap());
        let payload = &out[8..];
        assert_eq!(len, payload.len());
        assert_eq!(crc, crc32fast::hash(payload));
        let mut reader = PayloadReader::new(payload).unwrap();
        assert_eq!(reader.effective_ms, 77);
        match reader.next_mutation().unwrap().unwrap() {
            Mutation::Update {
                key,
                clear,
                removes,
                adds,
            } => {
                assert_eq!(key, ProfileKey(42));
                assert!(clear);
                assert_eq!(words(removes).collect::<Vec<_>>(), vec![7]);
                assert_eq!(words(adds).collect::<Vec<_>>(), vec![9, 5]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            reader.next_mutation().unwrap(),
            Some(Mutation::Delete { key }) if key == ProfileKey(u128::MAX)
        ));
        assert!(reader.next_mutation().unwrap().is_none());
    }
}
