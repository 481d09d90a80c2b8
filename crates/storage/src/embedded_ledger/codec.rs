//! Binary encoding of ledger records.
//!
//! A frame is `[len u32][crc32 u32][payload]`, little endian, the CRC over the payload (the
//! framing of the profile store's WAL). The payload is a fixed 16-byte header, then the body:
//!
//! ```text
//! seq             u64  the record's sequence number: 1, 2, 3, … without gaps
//! group index     u32  its position in its group commit
//! group count     u32  records in that group commit (complete once its last record is read)
//! impression id   u8 length (1–128), bytes
//! at              zigzag varint, milliseconds since the epoch
//! received_at     zigzag varint, milliseconds after `at`
//! buyer, campaign zigzag varints
//! region          varint length, bytes
//! media cost      zigzag varint micros; media currency, settlement currency: 3 bytes each
//! charges         varint count, then per charge:
//!   flags         u8: status code (bits 0–1), has category (2), has price (3),
//!                 price is FIX (4), has share CPM (5)
//!   segment       varint; member zigzag varint; [category zigzag varint]
//!   [price value f64, price currency 3 bytes]  [share CPM f64, share currency 3 bytes]
//!   revshare      f64
//!   data cost, payout, platform fee: zigzag varints (micros)
//! ```
//!
//! Floats are stored bit for bit, so a record reads back exactly as it was appended. A typical
//! record (UUID impression id, 2–3 charges) takes 150–200 bytes framed.

use segmart_domain::billing::{Charge, ChargeStatus, CurrencyCode, Price, ShareCpm};
use segmart_domain::pricing::CostType;
use segmart_domain::{SegmentNum, Timestamp};

use crate::ledger::LedgerRecord;

/// Bytes of a frame before the payload.
pub(crate) const FRAME_HEADER: usize = 8;
/// Bytes of the payload header (seq, group index, group count).
pub(crate) const PAYLOAD_HEADER: usize = 16;
/// The smallest payload a valid record has; shorter frames (such as the all-zero frame of a
/// zero-filled tail) are torn.
pub(crate) const MIN_PAYLOAD: usize = PAYLOAD_HEADER + 15;
/// The largest payload a reader accepts (and a writer produces).
pub(crate) const MAX_PAYLOAD: usize = 1 << 24;
/// Longest impression id, in bytes.
pub(crate) const MAX_IMPRESSION_ID: usize = 128;

const FLAG_CATEGORY: u8 = 1 << 2;
const FLAG_PRICE: u8 = 1 << 3;
const FLAG_FIX: u8 = 1 << 4;
const FLAG_SHARE: u8 = 1 << 5;

/// A payload that passed its CRC but does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The header of a record payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PayloadHeader {
    pub(crate) seq: u64,
    pub(crate) group_index: u32,
    pub(crate) group_count: u32,
}

impl PayloadHeader {
    pub(crate) fn encode(&self) -> [u8; PAYLOAD_HEADER] {
        let mut out = [0u8; PAYLOAD_HEADER];
        out[..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..12].copy_from_slice(&self.group_index.to_le_bytes());
        out[12..].copy_from_slice(&self.group_count.to_le_bytes());
        out
    }

    /// Reads and sanity-checks the header at the start of a payload.
    pub(crate) fn decode(payload: &[u8]) -> Result<PayloadHeader, Malformed> {
        if payload.len() < PAYLOAD_HEADER {
            return Err(Malformed);
        }
        let header = PayloadHeader {
            seq: u64::from_le_bytes(payload[..8].try_into().expect("8 bytes")),
            group_index: u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes")),
            group_count: u32::from_le_bytes(payload[12..16].try_into().expect("4 bytes")),
        };
        if header.group_count == 0
            || header.group_index >= header.group_count
            || header.seq <= u64::from(header.group_index)
        {
            return Err(Malformed);
        }
        Ok(header)
    }

    /// Sequence number of the first record of this record's group.
    pub(crate) fn group_first(&self) -> u64 {
        self.seq - u64::from(self.group_index)
    }

    pub(crate) fn is_group_end(&self) -> bool {
        self.group_index + 1 == self.group_count
    }
}

/// Reads a frame header: payload length and CRC.
pub(crate) fn frame_header(bytes: &[u8]) -> (usize, u32) {
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    (len, crc)
}

/// Appends the frame of one record: `header` then the already encoded `body`.
pub(crate) fn push_frame(out: &mut Vec<u8>, header: PayloadHeader, body: &[u8]) {
    let header = header.encode();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(body);
    out.extend_from_slice(&((PAYLOAD_HEADER + body.len()) as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_signed(out: &mut Vec<u8>, value: i64) {
    put_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_f64(out: &mut Vec<u8>, value: f64) {
    out.extend_from_slice(&value.to_bits().to_le_bytes());
}

/// Why a record cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unencodable {
    ImpressionId,
    TooLarge,
}

/// Appends the body of `record` to `out`.
pub(crate) fn encode_body(record: &LedgerRecord, out: &mut Vec<u8>) -> Result<(), Unencodable> {
    let start = out.len();
    let id = record.impression_id.as_bytes();
    if id.is_empty() || id.len() > MAX_IMPRESSION_ID {
        return Err(Unencodable::ImpressionId);
    }
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    put_signed(out, record.at.millis());
    put_signed(
        out,
        record.received_at.millis().wrapping_sub(record.at.millis()),
    );
    put_signed(out, record.buyer_id);
    put_signed(out, record.campaign_id);
    put_varint(out, record.region.len() as u64);
    out.extend_from_slice(record.region.as_bytes());
    put_signed(out, record.media_cost_micros);
    out.extend_from_slice(&record.media_currency.bytes());
    out.extend_from_slice(&record.settlement_currency.bytes());
    put_varint(out, record.charges.len() as u64);
    for charge in &record.charges {
        let mut flags = charge.status.code();
        if charge.data_category_id.is_some() {
            flags |= FLAG_CATEGORY;
        }
        if let Some(price) = &charge.price {
            flags |= FLAG_PRICE;
            if price.cost_type == CostType::Fix {
                flags |= FLAG_FIX;
            }
        }
        if charge.share_cpm.is_some() {
            flags |= FLAG_SHARE;
        }
        out.push(flags);
        put_varint(out, u64::from(charge.segment.0));
        put_signed(out, charge.member_id);
        if let Some(category) = charge.data_category_id {
            put_signed(out, category);
        }
        if let Some(price) = &charge.price {
            put_f64(out, price.value);
            out.extend_from_slice(&price.currency.bytes());
        }
        if let Some(share) = &charge.share_cpm {
            put_f64(out, share.cpm);
            out.extend_from_slice(&share.currency.bytes());
        }
        put_f64(out, charge.revshare_pct);
        put_signed(out, charge.data_cost_micros);
        put_signed(out, charge.payout_micros);
        put_signed(out, charge.platform_fee_micros);
    }
    if out.len() - start + PAYLOAD_HEADER > MAX_PAYLOAD {
        out.truncate(start);
        return Err(Unencodable::TooLarge);
    }
    Ok(())
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.rest.len() < n {
            return Err(Malformed);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(Malformed)
    }

    fn signed(&mut self) -> Result<i64, Malformed> {
        let raw = self.varint()?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    fn f64(&mut self) -> Result<f64, Malformed> {
        Ok(f64::from_bits(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        )))
    }

    fn currency(&mut self) -> Result<CurrencyCode, Malformed> {
        let bytes: [u8; 3] = self.take(3)?.try_into().expect("3 bytes");
        CurrencyCode::from_bytes(bytes).map_err(|_| Malformed)
    }

    fn string(&mut self, len: usize) -> Result<String, Malformed> {
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| Malformed)
    }
}

/// Decodes a whole payload (header and body).
pub(crate) fn decode_payload(payload: &[u8]) -> Result<(PayloadHeader, LedgerRecord), Malformed> {
    let header = PayloadHeader::decode(payload)?;
    let record = decode_body(&payload[PAYLOAD_HEADER..])?;
    Ok((header, record))
}

/// Only the impression id of a payload (no allocation).
pub(crate) fn impression_id(payload: &[u8]) -> Result<&[u8], Malformed> {
    let mut reader = Reader {
        rest: payload.get(PAYLOAD_HEADER..).ok_or(Malformed)?,
    };
    let len = reader.u8()? as usize;
    reader.take(len)
}

fn decode_body(body: &[u8]) -> Result<LedgerRecord, Malformed> {
    let mut r = Reader { rest: body };
    let id_len = r.u8()? as usize;
    if id_len == 0 || id_len > MAX_IMPRESSION_ID {
        return Err(Malformed);
    }
    let impression_id = r.string(id_len)?;
    let at = r.signed()?;
    let received_at = at.wrapping_add(r.signed()?);
    let buyer_id = r.signed()?;
    let campaign_id = r.signed()?;
    let region_len = usize::try_from(r.varint()?).map_err(|_| Malformed)?;
    let region = r.string(region_len)?;
    let media_cost_micros = r.signed()?;
    let media_currency = r.currency()?;
    let settlement_currency = r.currency()?;
    let count = usize::try_from(r.varint()?).map_err(|_| Malformed)?;
    if count > r.rest.len() {
        return Err(Malformed);
    }
    let mut charges = Vec::with_capacity(count);
    for _ in 0..count {
        let flags = r.u8()?;
        if flags >> 6 != 0 {
            return Err(Malformed);
        }
        let status = ChargeStatus::from_code(flags & 0b11).ok_or(Malformed)?;
        let segment = SegmentNum(u32::try_from(r.varint()?).map_err(|_| Malformed)?);
        let member_id = r.signed()?;
        let data_category_id = if flags & FLAG_CATEGORY != 0 {
            Some(r.signed()?)
        } else {
            None
        };
        let price = if flags & FLAG_PRICE != 0 {
            Some(Price {
                cost_type: if flags & FLAG_FIX != 0 {
                    CostType::Fix
                } else {
                    CostType::Rate
                },
                value: r.f64()?,
                currency: r.currency()?,
            })
        } else {
            None
        };
        let share_cpm = if flags & FLAG_SHARE != 0 {
            Some(ShareCpm {
                cpm: r.f64()?,
                currency: r.currency()?,
            })
        } else {
            None
        };
        charges.push(Charge {
            segment,
            member_id,
            data_category_id,
            status,
            price,
            share_cpm,
            revshare_pct: r.f64()?,
            data_cost_micros: r.signed()?,
            payout_micros: r.signed()?,
            platform_fee_micros: r.signed()?,
        });
    }
    if !r.rest.is_empty() {
        return Err(Malformed);
    }
    Ok(LedgerRecord {
        impression_id,
        at: Timestamp(at),
        received_at: Timestamp(received_at),
        buyer_id,
        campaign_id,
        region,
        media_cost_micros,
        media_currency,
        settlement_currency,
        charges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LedgerRecord {
        LedgerRecord {
            impression_id: "0b8e5c3e-6f0a-4d7e-9a55-1f2c3d4e5f60".into(),
            at: Timestamp(1_700_000_000_123),
            received_at: Timestamp(1_700_000_000_100),
            buyer_id: 4242,
            campaign_id: -7,
            region: "eu-west".into(),
            media_cost_micros: 1_250,
            media_currency: CurrencyCode::RUB,
            settlement_currency: CurrencyCode::USD,
            charges: vec![
                Charge {
                    segment: SegmentNum(u32::MAX),
                    member_id: i64::MIN,
                    data_category_id: Some(i64::MAX),
                    status: ChargeStatus::Charged,
                    price: Some(Price {
                        cost_type: CostType::Fix,
                        value: 2.5,
                        currency: CurrencyCode::RUB,
                    }),
                    share_cpm: Some(ShareCpm {
                        cpm: 0.1,
                        currency: CurrencyCode::USD,
                    }),
                    revshare_pct: 20.0,
                    data_cost_micros: 2_600,
                    payout_micros: 2_080,
                    platform_fee_micros: 520,
                },
                Charge {
                    segment: SegmentNum(0),
                    member_id: 9,
                    data_category_id: None,
                    status: ChargeStatus::Excluded,
                    price: Some(Price {
                        cost_type: CostType::Rate,
                        value: 12.5,
                        currency: CurrencyCode::USD,
                    }),
                    share_cpm: None,
                    revshare_pct: f64::MIN_POSITIVE,
                    data_cost_micros: 0,
                    payout_micros: 0,
                    platform_fee_micros: 0,
                },
            ],
        }
    }

    #[test]
    fn round_trips_a_record_through_a_frame() {
        let record = record();
        let mut body = Vec::new();
        encode_body(&record, &mut body).unwrap();
        let header = PayloadHeader {
            seq: 12,
            group_index: 1,
            group_count: 3,
        };
        let mut frame = Vec::new();
        push_frame(&mut frame, header, &body);
        let (len, crc) = frame_header(&frame);
        let payload = &frame[FRAME_HEADER..];
        assert_eq!(len, payload.len());
        assert_eq!(crc, crc32fast::hash(payload));
        assert!(len >= MIN_PAYLOAD);
        let (decoded_header, decoded) = decode_payload(payload).unwrap();
        assert_eq!(decoded_header, header);
        assert_eq!(decoded_header.group_first(), 11);
        assert_eq!(decoded, record);
        assert_eq!(
            impression_id(payload).unwrap(),
            record.impression_id.as_bytes()
        );
    }

    #[test]
    fn refuses_bad_ids_and_truncated_bodies() {
        let mut bad = record();
        bad.impression_id = String::new();
        assert_eq!(
            encode_body(&bad, &mut Vec::new()),
            Err(Unencodable::ImpressionId)
        );
        bad.impression_id = "x".repeat(129);
        assert_eq!(
            encode_body(&bad, &mut Vec::new()),
            Err(Unencodable::ImpressionId)
        );
        let mut body = Vec::new();
        encode_body(&record(), &mut body).unwrap();
        for cut in 0..body.len() {
            assert_eq!(decode_body(&body[..cut]), Err(Malformed), "cut at {cut}");
        }
    }
}
