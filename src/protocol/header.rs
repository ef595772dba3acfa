//! The fixed 32-byte frame header and its CRC.
//!
//! Every frame is `header (32 B) | payload (len B) | zero padding to 16 B`.
//! All integers are little-endian. The CRC32 (crc32fast, IEEE) covers header
//! bytes `0..28` and the unpadded payload, so a flipped bit anywhere in the
//! frame is detected. Invariant: [`FrameHeader::encode`] followed by
//! [`FrameHeader::decode`] returns the same header, and a decoded header has
//! passed magic, version and kind checks (the CRC is checked by the codec once
//! the payload is present).

use super::ProtocolError;

/// Size in bytes of every frame header; a multiple of 16.
pub const HEADER_LEN: usize = 32;
/// Payloads are padded to a multiple of this, and receive buffers are aligned to it.
pub const FRAME_ALIGN: usize = 16;
/// First two bytes of every frame: `b"RR"`.
pub const MAGIC: u16 = u16::from_le_bytes(*b"RR");
/// Wire protocol version spoken by this build.
pub const VERSION: u8 = 1;
/// `budget_us` of a response whose handler the server did not time (it times a
/// sample of its calls, see `metrics::PHASE_SAMPLING`).
pub const HANDLER_TIME_UNKNOWN: u32 = u32::MAX;
/// Byte offset of the CRC field inside the header.
const CRC_OFFSET: usize = 28;

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
    /// Reserved flag bits; senders write 0, receivers ignore unknown bits.
    pub flags: u16,
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
    /// A header of `kind` with every other field zero.
    pub fn new(kind: FrameKind) -> Self {
        Self {
            kind,
            flags: 0,
            call_id: 0,
            method: 0,
            budget_us: 0,
            len: 0,
        }
    }

    /// Writes the header into `out` with the CRC field zeroed.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        out[2] = VERSION;
        out[3] = self.kind as u8;
        out[4..6].copy_from_slice(&self.flags.to_le_bytes());
        out[6..8].copy_from_slice(&[0, 0]);
        out[8..16].copy_from_slice(&self.call_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.method.to_le_bytes());
        out[20..24].copy_from_slice(&self.budget_us.to_le_bytes());
        out[24..28].copy_from_slice(&self.len.to_le_bytes());
        out[28..32].copy_from_slice(&[0; 4]);
    }

    /// Parses a header, checking magic, version and kind (not the CRC).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, ProtocolError> {
        let magic = u16::from_le_bytes([bytes[0], bytes[1]]);
        if magic != MAGIC {
            return Err(ProtocolError::BadMagic(magic));
        }
        if bytes[2] != VERSION {
            return Err(ProtocolError::BadVersion(bytes[2]));
        }
        Ok(Self {
            kind: FrameKind::from_u8(bytes[3])?,
            flags: u16::from_le_bytes([bytes[4], bytes[5]]),
            call_id: u64::from_le_bytes(le_array(&bytes[8..16])),
            method: u32::from_le_bytes(le_array(&bytes[16..20])),
            budget_us: u32::from_le_bytes(le_array(&bytes[20..24])),
            len: u32::from_le_bytes(le_array(&bytes[24..28])),
        })
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

/// Computes the frame CRC over header bytes `0..28` and the unpadded payload.
pub fn frame_crc(header: &[u8; HEADER_LEN], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..CRC_OFFSET]);
    hasher.update(payload);
    hasher.finalize()
}

/// Stores `crc` into an encoded header.
pub fn store_crc(header: &mut [u8], crc: u32) {
    header[CRC_OFFSET..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Reads the CRC stored in an encoded header.
pub fn stored_crc(header: &[u8; HEADER_LEN]) -> u32 {
    u32::from_le_bytes(le_array(&header[CRC_OFFSET..HEADER_LEN]))
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
            flags: 3,
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

    #[test]
    fn header_round_trips() {
        let mut buf = [0u8; HEADER_LEN];
        sample().encode(&mut buf);
        assert_eq!(FrameHeader::decode(&buf).unwrap(), sample());
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
    fn bad_magic_version_and_kind_are_rejected() {
        let mut buf = [0u8; HEADER_LEN];
        sample().encode(&mut buf);
        let mut bad = buf;
        bad[0] = b'X';
        assert!(matches!(
            FrameHeader::decode(&bad),
            Err(ProtocolError::BadMagic(_))
        ));
        let mut bad = buf;
        bad[2] = 99;
        assert_eq!(
            FrameHeader::decode(&bad),
            Err(ProtocolError::BadVersion(99))
        );
        let mut bad = buf;
        bad[3] = 0;
        assert_eq!(FrameHeader::decode(&bad), Err(ProtocolError::BadKind(0)));
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
    fn crc_covers_header_and_payload() {
        let mut buf = [0u8; HEADER_LEN];
        sample().encode(&mut buf);
        let crc = frame_crc(&buf, b"hello");
        assert_ne!(crc, frame_crc(&buf, b"hellp"));
        buf[17] ^= 1;
        assert_ne!(crc, frame_crc(&buf, b"hello"));
    }
}
