//! Call metadata: a few small key/value pairs a request may carry ahead of
//! its message (the frame's [`METADATA`](super::FrameHeader::METADATA) flag).
//!
//! Layout at the start of the payload (all little endian):
//! `u32 block_len`, then `block_len` bytes of entries, each
//! `u8 key_len, key, u16 value_len, value`, then zero padding so the message
//! starts at a multiple of 16 bytes from the payload's start (it stays
//! aligned for in-place access). Keys are 1 to [`MAX_KEY`] bytes of
//! lowercase ASCII letters, digits, `-`, `_` and `.`; values up to
//! [`MAX_VALUE`] bytes; at most [`MAX_ENTRIES`] entries. A block that breaks
//! any of these rules is a protocol error.

use super::{ProtocolError, FRAME_ALIGN};

/// Most entries in one block.
pub const MAX_ENTRIES: usize = 16;
/// Longest key, in bytes.
pub const MAX_KEY: usize = 64;
/// Longest value, in bytes.
pub const MAX_VALUE: usize = 1024;

/// Metadata to send with a call: the encoded block, built once and copied
/// into each request frame that carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The entries, encoded (without the length prefix and padding).
    block: Vec<u8>,
    entries: usize,
}

impl Metadata {
    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; fails on a key or value outside the limits, or past
    /// [`MAX_ENTRIES`].
    pub fn insert(&mut self, key: &str, value: &[u8]) -> Result<(), ProtocolError> {
        if !valid_key(key.as_bytes()) || value.len() > MAX_VALUE || self.entries >= MAX_ENTRIES {
            return Err(ProtocolError::BadMetadata);
        }
        self.block.push(key.len() as u8);
        self.block.extend_from_slice(key.as_bytes());
        self.block
            .extend_from_slice(&(value.len() as u16).to_le_bytes());
        self.block.extend_from_slice(value);
        self.entries += 1;
        Ok(())
    }

    /// True without entries (nothing is sent).
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The entries, as a receiver sees them.
    pub fn view(&self) -> MetadataView<'_> {
        MetadataView { block: &self.block }
    }

    /// Appends the block (length prefix, entries, padding) to `out`, whose
    /// length relative to `payload_start` is a multiple of 16.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.block.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.block);
        let padded = (4 + self.block.len()).next_multiple_of(FRAME_ALIGN);
        out.resize(out.len() + padded - 4 - self.block.len(), 0);
    }
}

fn valid_key(key: &[u8]) -> bool {
    (1..=MAX_KEY).contains(&key.len())
        && key
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// Splits a payload that starts with a metadata block into the validated
/// entries and the offset where the message starts.
pub fn split(payload: &[u8]) -> Result<(MetadataView<'_>, usize), ProtocolError> {
    let Some(len) = payload.first_chunk::<4>() else {
        return Err(ProtocolError::BadMetadata);
    };
    let len = u32::from_le_bytes(*len) as usize;
    let block = payload.get(4..4 + len).ok_or(ProtocolError::BadMetadata)?;
    let offset = (4 + len).next_multiple_of(FRAME_ALIGN);
    if offset > payload.len() {
        return Err(ProtocolError::BadMetadata);
    }
    let view = MetadataView { block };
    let mut entries = 0;
    let mut rest = block;
    while !rest.is_empty() {
        let (key, value, next) = entry(rest).ok_or(ProtocolError::BadMetadata)?;
        if !valid_key(key) || value.len() > MAX_VALUE {
            return Err(ProtocolError::BadMetadata);
        }
        entries += 1;
        rest = next;
    }
    if entries > MAX_ENTRIES {
        return Err(ProtocolError::BadMetadata);
    }
    Ok((view, offset))
}

/// The first entry of `bytes` and what follows it.
fn entry(bytes: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (&klen, rest) = bytes.split_first()?;
    let key = rest.get(..klen as usize)?;
    let rest = &rest[klen as usize..];
    let vlen = u16::from_le_bytes(*rest.first_chunk::<2>()?) as usize;
    let value = rest.get(2..2 + vlen)?;
    Some((key, value, &rest[2 + vlen..]))
}

/// Received metadata, read in place (validated by [`split`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct MetadataView<'a> {
    block: &'a [u8],
}

impl<'a> MetadataView<'a> {
    /// A view over an already validated block.
    pub(crate) fn from_validated(block: &'a [u8]) -> Self {
        Self { block }
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&'a [u8]> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Every entry, in the order sent.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let mut rest = self.block;
        std::iter::from_fn(move || {
            let (key, value, next) = entry(rest)?;
            rest = next;
            // Keys were checked to be ASCII by `split`.
            Some((std::str::from_utf8(key).ok()?, value))
        })
    }

    /// True without entries.
    pub fn is_empty(&self) -> bool {
        self.block.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(md: &Metadata, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        md.encode_into(&mut out);
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn entries_round_trip_and_the_message_starts_aligned() {
        let mut md = Metadata::new();
        md.insert("traceparent", b"00-abc-01").unwrap();
        md.insert("tenant", b"7").unwrap();
        let payload = encoded(&md, b"MSG");
        let (view, offset) = split(&payload).unwrap();
        assert_eq!(offset % 16, 0);
        assert_eq!(&payload[offset..], b"MSG");
        assert_eq!(view.get("tenant"), Some(&b"7"[..]));
        assert_eq!(view.get("traceparent"), Some(&b"00-abc-01"[..]));
        assert_eq!(view.get("missing"), None);
        assert_eq!(view.iter().count(), 2);
    }

    #[test]
    fn bad_keys_values_and_counts_are_refused_when_built() {
        let mut md = Metadata::new();
        assert!(md.insert("", b"x").is_err());
        assert!(md.insert("Upper", b"x").is_err());
        assert!(md.insert(&"k".repeat(MAX_KEY + 1), b"x").is_err());
        assert!(md.insert("k", &vec![0; MAX_VALUE + 1]).is_err());
        for i in 0..MAX_ENTRIES {
            md.insert(&format!("k{i}"), b"v").unwrap();
        }
        assert!(md.insert("one-more", b"v").is_err());
    }

    #[test]
    fn malformed_blocks_are_protocol_errors_never_panics() {
        let mut md = Metadata::new();
        md.insert("key", b"value").unwrap();
        let good = encoded(&md, &[0; 16]);
        // Every truncation and every single-byte change either parses to
        // entries within the limits or is refused; none panics.
        for cut in 0..good.len() {
            let _ = split(&good[..cut]);
        }
        for i in 0..good.len() {
            for b in [0u8, 1, 0x41, 0xff] {
                let mut bad = good.clone();
                bad[i] = b;
                if let Ok((view, offset)) = split(&bad) {
                    assert!(offset <= bad.len());
                    for (k, v) in view.iter() {
                        assert!(valid_key(k.as_bytes()) && v.len() <= MAX_VALUE);
                    }
                }
            }
        }
        assert_eq!(split(&[]).unwrap_err(), ProtocolError::BadMetadata);
        assert_eq!(
            split(&[200, 0, 0, 0]).unwrap_err(),
            ProtocolError::BadMetadata
        );
    }
}
