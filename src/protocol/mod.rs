//! The protocol core: frame header, codec, method ids and the call table.
//!
//! Nothing in this module does I/O; it is pure data transformation and is
//! unit-tested without sockets. The runtime feeds it bytes and sends what it
//! encodes. See `docs/wire-format.md` for the byte layout.

pub mod call_table;
pub mod codec;
pub mod header;
pub mod metadata;
pub mod method;
pub(crate) mod segment;

pub use call_table::CallTable;
pub use codec::{
    begin_frame, decode_frame, encode_frame, finish_frame, DecodeOptions, Decoded,
    DEFAULT_MAX_FRAME,
};
pub use header::{
    check_prefix, CallId, FrameHeader, FrameKind, FRAME_ALIGN, HANDLER_TIME_UNKNOWN, HEADER_LEN,
};
pub use method::method_id;

/// A violation of the wire protocol by the peer (or by an oversize local message).
///
/// Any of these received from a peer closes that one connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame did not start with the ringrpc magic: the first byte that
    /// differs from it. Checked byte by byte as bytes arrive, so a foreign
    /// protocol (an HTTP request line, a TLS hello) is refused at its first byte.
    #[error("bad frame magic byte {0:#04x}")]
    BadMagic(u8),
    /// The peer speaks a protocol version this build does not.
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    /// A request's metadata block is malformed or over its limits.
    #[error("malformed call metadata")]
    BadMetadata,
    /// Unknown frame kind byte.
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    /// The frame is larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Size of the offending frame.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The header digest (CRC32 of header bytes 0..28) did not match: the header
    /// was corrupted. Detected as soon as the 32 header bytes are in.
    #[error("frame header digest mismatch")]
    BadHeaderDigest,
    /// The data digest did not match the payload's CRC32 (the payload was
    /// corrupted), or a frame without the data digest flag had a nonzero
    /// digest field.
    #[error("frame data digest mismatch")]
    BadDataDigest,
    /// The frame has no data digest but the receiver requires one.
    #[error("frame without the required data digest")]
    MissingDataDigest,
    /// A frame arrived that makes no sense in this direction or state.
    #[error("unexpected {0:?} frame")]
    Unexpected(FrameKind),
    /// The payload failed rkyv validation.
    #[error("invalid message payload: {0}")]
    InvalidPayload(String),
}

/// Why a server refused or failed a call; carried in the `method` field of an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The handler returned an error.
    Application,
    /// No handler is registered under the method id.
    UnknownMethod,
    /// The handler panicked.
    Panicked,
    /// The request's deadline budget ran out before the handler started.
    DeadlineExceeded,
    /// The request payload failed validation.
    InvalidRequest,
    /// The server is shutting down.
    Unavailable,
    /// The connection has too many calls running on the server.
    Overloaded,
    /// The server's authorization hook refused the call (it did not run).
    PermissionDenied,
}

impl ErrorCode {
    /// The wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            Self::Application => 1,
            Self::UnknownMethod => 2,
            Self::Panicked => 3,
            Self::DeadlineExceeded => 4,
            Self::InvalidRequest => 5,
            Self::Unavailable => 6,
            Self::Overloaded => 7,
            Self::PermissionDenied => 8,
        }
    }

    /// Parses a wire value; unknown codes map to [`ErrorCode::Application`].
    pub fn from_u32(raw: u32) -> Self {
        match raw {
            2 => Self::UnknownMethod,
            3 => Self::Panicked,
            4 => Self::DeadlineExceeded,
            5 => Self::InvalidRequest,
            6 => Self::Unavailable,
            7 => Self::Overloaded,
            8 => Self::PermissionDenied,
            _ => Self::Application,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn error_codes_round_trip() {
        for code in [
            ErrorCode::Application,
            ErrorCode::UnknownMethod,
            ErrorCode::Panicked,
            ErrorCode::DeadlineExceeded,
            ErrorCode::InvalidRequest,
            ErrorCode::Unavailable,
            ErrorCode::Overloaded,
            ErrorCode::PermissionDenied,
        ] {
            assert_eq!(ErrorCode::from_u32(code.to_u32()), code);
        }
    }
}
