//! The packed encoding of profile mutations, shared by [`WriteBatch`](crate::profile::WriteBatch)
//! and the embedded store's write-ahead log (whose records frame a batch's packed bytes as they
//! are).
//!
//! Per mutation, little endian:
//!
//! ```text
//! tag           u8   0 = update, 1 = update that clears first, 2 = delete
//! key           u128 the ProfileKey
//! (updates only)
//! removes       u32, adds u32
//! segment u32 * removes
//! (segment u32, expiry u32 Unix seconds) * adds
//! ```
//!
//! Expiries are kept as the store keeps them: whole seconds, rounded down, clamped to `u32`.
//! [`put_update`] writes the adds sorted by segment (stably: repeats keep their order), so the
//! log's single applier merges them into a profile's sorted links without sorting them
//! itself; the sort runs on the request threads, in parallel. Decoding does not rely on it
//! (older logs, other writers): the applier sorts adds that are not in order.
//! A batch of 7 000 updates with 6.5 adds each is one 540 kB buffer instead of 14 000 small
//! vectors: nothing is allocated per profile, and the log writer copies it as it is.

use segmart_domain::profile::ResolvedUpdate;
use segmart_domain::{SegmentNum, Timestamp};

use crate::profile::ProfileKey;

const TAG_UPDATE: u8 = 0;
const TAG_UPDATE_CLEAR: u8 = 1;
const TAG_DELETE: u8 = 2;

/// Adds of one update that [`put_update`] sorts without allocating.
const SORT_ON_STACK: usize = 16;

/// Bytes of an update's tag, key and list lengths.
const UPDATE_HEADER: usize = 1 + 16 + 8;

/// Clamps Unix seconds into the `u32` range expiries are kept in.
#[inline]
pub(crate) fn clamp_secs(secs: i64) -> u32 {
    secs.clamp(0, u32::MAX as i64) as u32
}

/// Bytes the packed update takes.
#[inline]
fn update_len(removes: usize, adds: usize) -> usize {
    UPDATE_HEADER + 4 * removes + 8 * adds
}

/// Appends a packed update.
#[inline]
pub(crate) fn put_update(out: &mut Vec<u8>, key: ProfileKey, update: &ResolvedUpdate) {
    let ResolvedUpdate { clear, remove, add } = update;
    let start = out.len();
    // Sized once, then filled through a cursor: no capacity check per field.
    out.resize(start + update_len(remove.len(), add.len()), 0);
    let mut cursor = Cursor(&mut out[start..]);
    cursor.put(&[if *clear { TAG_UPDATE_CLEAR } else { TAG_UPDATE }]);
    cursor.put(&key.0.to_le_bytes());
    cursor.put(&(remove.len() as u32).to_le_bytes());
    cursor.put(&(add.len() as u32).to_le_bytes());
    for segment in remove {
        cursor.put(&segment.0.to_le_bytes());
    }
    let pair = |(segment, expiry): &(SegmentNum, Timestamp)| {
        (segment.0 as u64) | (clamp_secs(expiry.secs()) as u64) << 32
    };
    // Sorted stably by segment (the low half of each pair). Providers list segments in any
    // order, so an insertion sort mispredicts about once per add; the usual handful is placed
    // by rank instead, without branches.
    let mut unsorted = [0u64; SORT_ON_STACK];
    let mut on_stack = [0u64; SORT_ON_STACK];
    let mut on_heap = Vec::new();
    let pairs = if add.len() <= SORT_ON_STACK {
        for (slot, link) in unsorted.iter_mut().zip(add) {
            *slot = pair(link);
        }
        let sorted = &mut on_stack[..add.len()];
        place_by_rank(&unsorted[..add.len()], |pair| *pair as u32, sorted);
        sorted
    } else {
        on_heap.extend(add.iter().map(pair));
        on_heap.sort_by_key(|pair| *pair as u32);
        &mut on_heap[..]
    };
    for pair in pairs.iter() {
        cursor.put(&pair.to_le_bytes());
    }
    debug_assert!(cursor.0.is_empty(), "update_len matches the encoding");
}

/// Writes `items` into `out` (of the same length) sorted by `key`, stably: each item goes to
/// its rank, the number of items that sort before it (smaller keys, and equal keys earlier in
/// `items`). Quadratic but branch-free, which beats a sort's mispredictions on the few items an
/// update carries; callers hand longer lists to the library's sort.
#[inline]
pub(crate) fn place_by_rank<T: Copy>(items: &[T], key: impl Fn(&T) -> u32, out: &mut [T]) {
    debug_assert_eq!(items.len(), out.len());
    for (index, item) in items.iter().enumerate() {
        let own = key(item);
        let before: usize = items[..index]
            .iter()
            .map(|other| (key(other) <= own) as usize)
            .sum();
        let after: usize = items[index + 1..]
            .iter()
            .map(|other| (key(other) < own) as usize)
            .sum();
        out[before + after] = *item;
    }
}

/// Appends a packed delete.
#[inline]
pub(crate) fn put_delete(out: &mut Vec<u8>, key: ProfileKey) {
    out.push(TAG_DELETE);
    out.extend_from_slice(&key.0.to_le_bytes());
}

/// The unwritten rest of a buffer being filled.
struct Cursor<'a>(&'a mut [u8]);

impl Cursor<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let (head, rest) = std::mem::take(&mut self.0).split_at_mut(bytes.len());
        head.copy_from_slice(bytes);
        self.0 = rest;
    }
}

/// Bytes that do not parse as packed mutations: a bug or a format mismatch, never a torn
/// write (log frames are checked by their CRC first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed;

/// One decoded mutation, borrowing its lists from the packed bytes.
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

pub(crate) fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], Malformed> {
    if bytes.len() < n {
        return Err(Malformed);
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

pub(crate) fn take_u32(bytes: &mut &[u8]) -> Result<u32, Malformed> {
    Ok(u32::from_le_bytes(
        take(bytes, 4)?.try_into().expect("4 bytes"),
    ))
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

/// The `(segment, expiry)` pairs of an update's packed adds.
#[inline]
pub(crate) fn pairs(bytes: &[u8]) -> impl Iterator<Item = (u32, u32)> + '_ {
    bytes.chunks_exact(8).map(|pair| {
        let (segment, expiry) = pair.split_at(4);
        (
            u32::from_le_bytes(segment.try_into().expect("4 bytes")),
            u32::from_le_bytes(expiry.try_into().expect("4 bytes")),
        )
    })
}
