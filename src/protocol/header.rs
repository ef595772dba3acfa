//! The fixed 32-byte frame header and its two digests.
//!
//! Every frame is `header (32 B) | payload (len B) | zero padding to 16 B`.
//! All integers are little-endian. Two CRC32s (crc32fast, IEEE), as in NVMe/TCP:
//!
//! - the **header digest** (bytes `28..32`) covers header bytes `0..28`, so
//!   every header field, the data digest field included. It is always present
//!   and checked by [`FrameHeader::decode`], i.e. as soon as the 32 header
//!   bytes are in: a corrupted length is caught before waiting for a payload
//!   that will never come;
//! - the **data digest** (bytes `4..8`) is the CRC32 of the unpadded payload,
//!   present only when the header has the [`FrameHeader::DATA_DIGEST`] flag
//!   (the field is then zero otherwise) and checked by the codec once the
//!   payload is in.
//!
//! Invariant: [`FrameHeader::encode`] followed by [`FrameHeader::decode`]
//! returns the same header, and a decoded header has passed the magic, version,
//! header digest and kind checks (the data digest is checked by the codec once
//! the payload is present).

use std::sync::OnceLock;

use super::ProtocolError;

/// Size in bytes of every frame header; a multiple of 16.
pub const HEADER_LEN: usize = 32;
/// Payloads are padded to a multiple of this, and receive buffers are aligned to it.
pub const FRAME_ALIGN: usize = 16;
/// First two bytes of every frame: `b"RR"`.
pub const MAGIC: u16 = u16::from_le_bytes(*b"RR");
/// Wire protocol version spoken by this build.
pub const VERSION: u8 = 2;
/// `budget_us` of a response whose handler the server did not time (it times a
/// sample of its calls, see `metrics::PHASE_SAMPLING`).
pub const HANDLER_TIME_UNKNOWN: u32 = u32::MAX;
/// Byte offset of the data digest field inside the header.
const DATA_DIGEST_OFFSET: usize = 4;
/// Byte offset of the header digest field; the digest covers every byte before it.
const HEADER_DIGEST_OFFSET: usize = 28;
/// Byte 3 holds the kind in its low four bits and the flags in its high four.
const KIND_MASK: u8 = 0x0f;
/// Flag bits that fit on the wire (the high nibble of byte 3).
const FLAG_MASK: u8 = 0x0f;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A call: `method` names the handler, `budget_us` is the caller's remaining deadline.
    Request = 1,
    /// A successful reply to the call `call_id`; `budget_us` carries the server's
    /// handler time in µs, or [`HANDLER_TIME_UNKNOWN`] if it was not timed.
    Response = 2,
    /// A failed reply to `call_id`; `method` carries an [`ErrorCode`](super::ErrorCode),
    /// the payload a UTF-8 message.
    Error = 3,
    /// Liveness probe; the peer answers with a [`FrameKind::Pong`] echoing `call_id`.
    Ping = 4,
    /// Answer to a ping.
    Pong = 5,
    /// The sender is shutting down: send no new requests on this connection.
    GoAway = 6,
    /// Client to server: the caller of `call_id` gave up (its future was
    /// dropped); a handler still running for it is stopped, its answer never sent.
    Cancel = 7,
}

impl FrameKind {
    /// Parses a kind byte; unknown kinds are a protocol error.
    pub fn from_u8(byte: u8) -> Result<Self, ProtocolError> {
        Ok(match byte {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::Error,
            4 => Self::Ping,
            5 => Self::Pong,
            6 => Self::GoAway,
            7 => Self::Cancel,
            other => return Err(ProtocolError::BadKind(other)),
        })
    }
}

/// The wire identity of one in-flight call: a slab slot plus that slot's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallId {
    /// Slot in the caller's call table.
    pub index: u32,
    /// Generation of that slot when the call was made; a reused slot has a new one.
    pub generation: u32,
}

impl CallId {
    /// Packs the id into the 64-bit wire field (`generation << 32 | index`).
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// Unpacks a wire call id.
    pub fn from_u64(raw: u64) -> Self {
        Self {
            index: raw as u32,
            generation: (raw >> 32) as u32,
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the frame carries.
    pub kind: FrameKind,
    /// Flag bits: [`FrameHeader::DATA_DIGEST`], [`FrameHeader::METADATA`]; the other bits are reserved (sent
    /// as 0, ignored on receipt). Only the low four bits go on the wire.
    pub flags: u8,
    /// The call this frame belongs to (raw wire form, see [`CallId`]).
    pub call_id: u64,
    /// Method id for requests, error code for error frames, 0 otherwise.
    pub method: u32,
    /// Requests: caller's remaining deadline in µs (0 = none). Responses: handler time in µs.
    pub budget_us: u32,
    /// Unpadded payload length in bytes.
    pub len: u32,
}

impl FrameHeader {
    /// Flag: the header carries the CRC32 of the payload (the data digest).
    pub const DATA_DIGEST: u8 = 0x01;
    /// Flag (requests): the payload starts with a metadata block (see
    /// [`metadata`](super::metadata)), the message follows it.
    pub const METADATA: u8 = 0x02;

    /// Flag (error frames): the payload is the rkyv archive of a typed
    /// application error, not a text message.
    pub const TYPED: u8 = 0x04;

    /// Whether the payload starts with a metadata block.
    pub fn has_metadata(&self) -> bool {
        self.flags & Self::METADATA != 0
    }

    /// A header of `kind` with the [`DATA_DIGEST`](Self::DATA_DIGEST) flag set
    /// (the default of clients and servers) and every other field zero.
    pub fn new(kind: FrameKind) -> Self {
        Self {
            kind,
            flags: Self::DATA_DIGEST,
            call_id: 0,
            method: 0,
            budget_us: 0,
            len: 0,
        }
    }

    /// This header with the [`DATA_DIGEST`](Self::DATA_DIGEST) flag set (`on`) or cleared.
    #[must_use]
    pub fn with_data_digest(mut self, on: bool) -> Self {
        if on {
            self.flags |= Self::DATA_DIGEST;
        } else {
            self.flags &= !Self::DATA_DIGEST;
        }
        self
    }

    /// Whether the frame carries a data digest.
    pub fn has_data_digest(&self) -> bool {
        self.flags & Self::DATA_DIGEST != 0
    }

    /// Writes the complete header into `out`, header digest included.
    ///
    /// `data_digest` is the payload's CRC32 ([`data_digest`]); it is written only
    /// if the header has the [`DATA_DIGEST`](Self::DATA_DIGEST) flag (the field
    /// is zero otherwise), so a frame without it may pass anything.
    pub fn encode(&self, data_digest: u32, out: &mut [u8; HEADER_LEN]) {
        let data_digest = if self.has_data_digest() {
            data_digest
        } else {
            0
        };
        out[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        out[2] = VERSION;
        out[3] = self.kind as u8 | (self.flags & FLAG_MASK) << 4;
        out[4..8].copy_from_slice(&data_digest.to_le_bytes());
        out[8..16].copy_from_slice(&self.call_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.method.to_le_bytes());
        out[20..24].copy_from_slice(&self.budget_us.to_le_bytes());
        out[24..28].copy_from_slice(&self.len.to_le_bytes());
        seal_header(out);
    }

    /// Parses a header, checking magic, version, the header digest, the kind,
    /// and that a frame without the data digest flag has a zero digest field.
    ///
    /// Magic and version come first so that a foreign or old peer is reported as
    /// such; any other damaged byte is a [`ProtocolError::BadHeaderDigest`].
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, ProtocolError> {
        check_prefix(bytes)?;
        if header_digest(bytes) != stored_header_digest(bytes) {
            return Err(ProtocolError::BadHeaderDigest);
        }
        let header = Self {
            kind: FrameKind::from_u8(bytes[3] & KIND_MASK)?,
            flags: bytes[3] >> 4,
            call_id: u64::from_le_bytes(le_array(&bytes[8..16])),
            method: u32::from_le_bytes(le_array(&bytes[16..20])),
            budget_us: u32::from_le_bytes(le_array(&bytes[20..24])),
            len: u32::from_le_bytes(le_array(&bytes[24..28])),
        };
        if !header.has_data_digest() && stored_data_digest(bytes) != 0 {
            return Err(ProtocolError::BadDataDigest);
        }
        Ok(header)
    }

    /// Total bytes this frame occupies on the wire, padding included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + padded_len(self.len as usize)
    }
}

/// Rounds a payload length up to the frame alignment.
pub fn padded_len(len: usize) -> usize {
    len.div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// Checks the first bytes of a header as far as they have arrived: the two
/// magic bytes, then the version. A stream that cannot be the start of a
/// frame is refused at its first wrong byte instead of after a whole header
/// (or a read timeout). The same check, on the same bytes, runs in
/// [`FrameHeader::decode`], so the error does not depend on how the bytes
/// were split across reads.
pub fn check_prefix(bytes: &[u8]) -> Result<(), ProtocolError> {
    let magic = MAGIC.to_le_bytes();
    for (&got, &want) in bytes.iter().zip(&magic) {
        if got != want {
            return Err(ProtocolError::BadMagic(got));
        }
    }
    match bytes.get(2) {
        Some(&version) if version != VERSION => Err(ProtocolError::BadVersion(version)),
        _ => Ok(()),
    }
}

/// The header digest of an encoded header: the CRC32 of its bytes `0..28`.
pub fn header_digest(header: &[u8; HEADER_LEN]) -> u32 {
    crc32(&header[..HEADER_DIGEST_OFFSET])
}

/// The data digest of a payload: the CRC32 of its unpadded bytes.
pub fn data_digest(payload: &[u8]) -> u32 {
    crc32(payload)
}

/// `crc32fast::hash(bytes)` without its CPU feature detection: every
/// `crc32fast::Hasher::new` asks for up to six CPU features (a cached atomic
/// read and a test each, ~25 instructions per digest, four digests per call
/// on each side), so a hasher made once is cloned instead.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut hasher = crc32_hasher();
    hasher.update(bytes);
    hasher.finalize()
}

/// A fresh CRC32 hasher, without asking for the CPU's features again (see [`crc32`]).
pub(crate) fn crc32_hasher() -> crc32fast::Hasher {
    static DETECTED: OnceLock<crc32fast::Hasher> = OnceLock::new();
    DETECTED.get_or_init(crc32fast::Hasher::new).clone()
}

/// Recomputes and stores the header digest of an encoded header (for tools and
/// tests that patch header bytes; [`FrameHeader::encode`] already seals).
pub fn seal_header(header: &mut [u8; HEADER_LEN]) {
    let digest = header_digest(header);
    header[HEADER_DIGEST_OFFSET..].copy_from_slice(&digest.to_le_bytes());
}

/// The header digest stored in an encoded header.
pub fn stored_header_digest(header: &[u8; HEADER_LEN]) -> u32 {
    u32::from_le_bytes(le_array(&header[HEADER_DIGEST_OFFSET..]))
}

/// The data digest field of an encoded header (0 when the frame has none).
pub fn stored_data_digest(header: &[u8; HEADER_LEN]) -> u32 {
    u32::from_le_bytes(le_array(
        &header[DATA_DIGEST_OFFSET..DATA_DIGEST_OFFSET + 4],
    ))
}

fn le_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FrameHeader {
        FrameHeader {
            kind: FrameKind::Request,
            flags: FrameHeader::DATA_DIGEST | 0x4,
            call_id: CallId {
                index: 7,
                generation: 9,
            }
            .to_u64(),
            method: 0xdead_beef,
            budget_us: 1_500_000,
            len: 61,
        }
    }

    fn encoded(h: FrameHeader, data_digest: u32) -> [u8; HEADER_LEN] {
        let mut buf = [0u8; HEADER_LEN];
        h.encode(data_digest, &mut buf);
        buf
    }

    #[test]
    fn header_round_trips() {
        let buf = encoded(sample(), 0x1234_5678);
        assert_eq!(FrameHeader::decode(&buf).unwrap(), sample());
        assert_eq!(stored_data_digest(&buf), 0x1234_5678);
        let plain = sample().with_data_digest(false);
        let buf = encoded(plain, 0x1234_5678);
        assert_eq!(FrameHeader::decode(&buf).unwrap(), plain);
        assert_eq!(stored_data_digest(&buf), 0, "no flag, no digest");
    }

    #[test]
    fn every_field_sits_at_its_wire_offset() {
        // docs/wire-format.md: magic, version, kind | flags << 4, data
        // digest, call id, method, budget, length, header digest; all LE.
        let h = sample();
        let buf = encoded(h, 0x1234_5678);
        let mut expected = Vec::new();
        expected.extend_from_slice(b"RR");
        expected.extend_from_slice(&[VERSION, 0x51]);
        expected.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        expected.extend_from_slice(&h.call_id.to_le_bytes());
        expected.extend_from_slice(&0xdead_beefu32.to_le_bytes());
        expected.extend_from_slice(&1_500_000u32.to_le_bytes());
        expected.extend_from_slice(&61u32.to_le_bytes());
        let digest = crc32fast::hash(&expected);
        expected.extend_from_slice(&digest.to_le_bytes());
        assert_eq!(buf.as_slice(), expected.as_slice());
    }

    #[test]
    fn kind_and_flags_share_byte_three() {
        let buf = encoded(sample(), 0);
        assert_eq!(buf[2], 2, "version 2");
        assert_eq!(buf[3], 0x51, "kind 1 | flags 0x5 << 4");
        assert!(FrameHeader::new(FrameKind::Ping).has_data_digest());
        assert!(!FrameHeader::new(FrameKind::Ping)
            .with_data_digest(false)
            .has_data_digest());
    }

    #[test]
    fn call_id_packs_index_and_generation() {
        let id = CallId {
            index: u32::MAX - 1,
            generation: 42,
        };
        assert_eq!(CallId::from_u64(id.to_u64()), id);
        assert_ne!(
            id.to_u64(),
            CallId {
                index: id.index,
                generation: 43
            }
            .to_u64()
        );
    }

    #[test]
    fn a_foreign_prefix_is_refused_at_its_first_wrong_byte() {
        assert_eq!(check_prefix(b""), Ok(()));
        assert_eq!(check_prefix(b"R"), Ok(()));
        assert_eq!(check_prefix(&[b'R', b'R', VERSION]), Ok(()));
        assert_eq!(check_prefix(b"G"), Err(ProtocolError::BadMagic(b'G')));
        assert_eq!(check_prefix(b"RX"), Err(ProtocolError::BadMagic(b'X')));
        assert_eq!(check_prefix(b"RR\x01"), Err(ProtocolError::BadVersion(1)));
        // A 27-byte HTTP request line: refused at its first byte.
        assert_eq!(
            check_prefix(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Err(ProtocolError::BadMagic(b'G'))
        );
    }

    #[test]
    fn bad_magic_version_and_kind_are_rejected() {
        let buf = encoded(sample(), 0);
        let mut bad = buf;
        bad[0] = b'X';
        assert_eq!(
            FrameHeader::decode(&bad),
            Err(ProtocolError::BadMagic(b'X'))
        );
        let mut bad = buf;
        bad[2] = 1;
        assert_eq!(FrameHeader::decode(&bad), Err(ProtocolError::BadVersion(1)));
        // An unknown kind behind a valid header digest (a sender bug, not damage).
        let mut bad = buf;
        bad[3] &= 0xf0;
        seal_header(&mut bad);
        assert_eq!(FrameHeader::decode(&bad), Err(ProtocolError::BadKind(0)));
    }

    #[test]
    fn header_digest_covers_every_field() {
        let buf = encoded(sample(), 0xabcd_ef01);
        for i in 3..HEADER_LEN {
            for bit in 0..8 {
                let mut bad = buf;
                bad[i] ^= 1 << bit;
                assert_eq!(
                    FrameHeader::decode(&bad),
                    Err(ProtocolError::BadHeaderDigest),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn digest_field_without_the_flag_is_rejected() {
        let mut buf = encoded(sample().with_data_digest(false), 0);
        buf[5] = 1;
        seal_header(&mut buf);
        assert_eq!(FrameHeader::decode(&buf), Err(ProtocolError::BadDataDigest));
    }

    #[test]
    fn frame_len_pads_to_sixteen() {
        let mut h = sample();
        assert_eq!(h.frame_len(), 32 + 64);
        h.len = 0;
        assert_eq!(h.frame_len(), 32);
        h.len = 16;
        assert_eq!(h.frame_len(), 48);
        assert_eq!(HEADER_LEN % FRAME_ALIGN, 0);
    }

    #[test]
    fn data_digest_is_the_payload_crc() {
        assert_eq!(data_digest(b""), 0, "an empty payload's digest is 0");
        assert_ne!(data_digest(b"hello"), data_digest(b"hellp"));
        assert_eq!(
            data_digest(b"123456789"),
            0xcbf4_3926,
            "CRC-32/IEEE check value"
        );
    }

    #[test]
    fn digests_match_crc32fast_at_every_length_and_offset() {
        let bytes: Vec<u8> = (0..600u32).map(|i| (i * 31 + 7) as u8).collect();
        for start in 0..17 {
            for len in (0..300).chain([511, 512, 513, 583]) {
                let slice = &bytes[start..start + len];
                assert_eq!(data_digest(slice), crc32fast::hash(slice), "{start}+{len}");
            }
        }
    }
}
