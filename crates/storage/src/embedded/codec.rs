//! Binary encoding of write-ahead-log records.
//!
//! A record frames one [`WriteBatch`] as applied: `[len u32][crc32 u32][payload]`, little
//! endian, the CRC over the payload. The payload is
//!
//! ```text
//! effective time  i64  milliseconds since the epoch (see "the store's clock" in the module docs)
//! mutations       u32
//! then per mutation:
//!   tag           u8   0 = update, 1 = update that clears first, 2 = delete
//!   key           u128 the ProfileKey
//!   (updates only)
//!   removes       u32, adds u32
//!   segment u32 * removes
//!   (segment u32, expiry u32 Unix seconds) * adds
//! ```
//!
//! Expiries are stored as the table stores them (whole seconds, rounded down, clamped to
//! `u32`), so replaying a record does exactly what applying it did.

use crate::profile::{ProfileKey, ProfileMutation, WriteBatch};

use super::table::clamp_secs;

/// Bytes of a record frame before the payload.
pub(crate) const FRAME_HEADER: usize = 8;
/// Smallest valid payload (effective time and mutation count). Shorter frames, such as the
/// all-zero frame of a zero-filled tail (whose CRC happens to match), are torn.
pub(crate) const MIN_PAYLOAD: usize = 12;
/// Largest payload a reader accepts; anything larger is treated as a torn or corrupt frame.
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;

const TAG_UPDATE: u8 = 0;
const TAG_UPDATE_CLEAR: u8 = 1;
const TAG_DELETE: u8 = 2;

/// Size of the framed record for `batch`.
pub(crate) fn record_len(batch: &WriteBatch) -> usize {
    let mutations: usize = batch
        .mutations
        .iter()
        .map(|mutation| match mutation {
            ProfileMutation::Update { update, .. } => {
                1 + 16 + 8 + 4 * update.remove.len() + 8 * update.add.len()
            }
            ProfileMutation::Delete { .. } => 1 + 16,
        })
        .sum();
    FRAME_HEADER + 12 + mutations
}

/// Appends the framed record of `batch`, stamped with `effective_ms`, to `out`.
pub(crate) fn encode_record(batch: &WriteBatch, effective_ms: i64, out: &mut Vec<u8>) {
    let frame_start = out.len();
    let len = record_len(batch);
    // Sized once, then filled through a cursor: no capacity check per field.
    out.resize(frame_start + len, 0);
    let mut cursor = Cursor(&mut out[frame_start + FRAME_HEADER..]);
    cursor.put(&effective_ms.to_le_bytes());
    cursor.put(&(batch.mutations.len() as u32).to_le_bytes());
    for mutation in &batch.mutations {
        match mutation {
            ProfileMutation::Update { key, update } => {
                let tag = if update.clear {
                    TAG_UPDATE_CLEAR
                } else {
                    TAG_UPDATE
                };
                cursor.put(&[tag]);
                cursor.put(&key.0.to_le_bytes());
                cursor.put(&(update.remove.len() as u32).to_le_bytes());
                cursor.put(&(update.add.len() as u32).to_le_bytes());
                for segment in &update.remove {
                    cursor.put(&segment.0.to_le_bytes());
                }
                for (segment, expiry) in &update.add {
                    let pair = (segment.0 as u64) | (clamp_secs(expiry.secs()) as u64) << 32;
                    cursor.put(&pair.to_le_bytes());
                }
            }
            ProfileMutation::Delete { key } => {
                cursor.put(&[TAG_DELETE]);
                cursor.put(&key.0.to_le_bytes());
            }
        }
    }
    debug_assert!(cursor.0.is_empty(), "record_len matches the encoding");
    let payload_len = len - FRAME_HEADER;
    let crc = crc32fast::hash(&out[frame_start + FRAME_HEADER..]);
    out[frame_start..frame_start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[frame_start + 4..frame_start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The unwritten rest of a record being encoded.
struct Cursor<'a>(&'a mut [u8]);

impl Cursor<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let (head, rest) = std::mem::take(&mut self.0).split_at_mut(bytes.len());
        head.copy_from_slice(bytes);
        self.0 = rest;
    }
}

/// Reads a frame header: payload length and CRC.
pub(crate) fn frame_header(bytes: [u8; FRAME_HEADER]) -> (usize, u32) {
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..].try_into().expect("4 bytes"));
    (len, crc)
}

/// A payload that passed its CRC but does not parse: a bug or a format mismatch, never a torn
/// write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed;

/// One decoded mutation, borrowing its lists from the payload.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mutation<'a> {
    Update {
        key: ProfileKey,
        clear: bool,
        /// `u32` segment numbers, little endian.
        removes: &'a [u8],
        /// `(u32 segment, u32 expiry)` pairs, little endian.
        adds: &'a [u8],
    },
    Delete {
        key: ProfileKey,
    },
}

impl Mutation<'_> {
    pub(crate) fn key(&self) -> ProfileKey {
        match self {
            Mutation::Update { key, .. } | Mutation::Delete { key } => *key,
        }
    }
}

/// Iterates a record payload: its effective time, then its mutations.
pub(crate) struct PayloadReader<'a> {
    rest: &'a [u8],
    remaining: u32,
    pub(crate) effective_ms: i64,
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], Malformed> {
    if bytes.len() < n {
        return Err(Malformed);
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

fn take_u32(bytes: &mut &[u8]) -> Result<u32, Malformed> {
    Ok(u32::from_le_bytes(
        take(bytes, 4)?.try_into().expect("4 bytes"),
    ))
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

/// Decodes the mutation at the start of `bytes`, advancing it.
pub(crate) fn decode_mutation<'a>(bytes: &mut &'a [u8]) -> Result<Mutation<'a>, Malformed> {
    let tag = take(bytes, 1)?[0];
    let key = ProfileKey(u128::from_le_bytes(
        take(bytes, 16)?.try_into().expect("16 bytes"),
    ));
    match tag {
        TAG_DELETE => Ok(Mutation::Delete { key }),
        TAG_UPDATE | TAG_UPDATE_CLEAR => {
            let removes = take_u32(bytes)? as usize;
            let adds = take_u32(bytes)? as usize;
            let removes = take(bytes, removes.checked_mul(4).ok_or(Malformed)?)?;
            let adds = take(bytes, adds.checked_mul(8).ok_or(Malformed)?)?;
            Ok(Mutation::Update {
                key,
                clear: tag == TAG_UPDATE_CLEAR,
                removes,
                adds,
            })
        }
        _ => Err(Malformed),
    }
}

/// Little-endian `u32` words of a byte slice.
pub(crate) fn words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|word| u32::from_le_bytes(word.try_into().expect("4 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use segmart_domain::profile::ResolvedUpdate;
    use segmart_domain::{SegmentNum, Timestamp};

    #[test]
    fn round_trips_a_batch() {
        let batch = WriteBatch {
            at: Timestamp::from_millis(1_700_000_000_123),
            mutations: vec![
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
        };
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
