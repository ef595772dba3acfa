//! The TLS 1.3 record layer a connection runs once rustls has finished the
//! handshake (feature `tls`): [`RecordLayer`].
//!
//! rustls authenticates the peer and derives the traffic keys; it then hands
//! them over (`dangerous_extract_secrets`, the path kTLS takes into the
//! kernel) and this layer seals and opens the application data with ring's
//! AEADs, as RFC 8446 §5 specifies, into buffers the connection already
//! owns. rustls's own record layer allocates a buffer for every record it
//! seals and every record it opens; this one allocates nothing per record.
//!
//! Invariants:
//! - the nonce of every record is the direction's IV XOR its 64-bit sequence
//!   number, which counts every record of that direction from the first
//!   (rustls hands over where it stopped) and is never reused: a direction
//!   past its cipher suite's confidentiality limit seals nothing more
//!   ([`RecordError::Exhausted`]); the connection is retired well before
//!   that ([`RecordLayer::should_rotate`], half the limit);
//! - only whole records are opened: a record received in part stays in the
//!   caller's buffer until its last byte arrives;
//! - anything but application data, a close_notify alert or a session ticket
//!   (which the client does not use) is an error that ends this connection:
//!   a key update cannot be followed (rustls keeps the secrets it would need),
//!   and a ringrpc peer never sends one.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

use crate::runtime::buf::RecvBuf;

/// Most plaintext bytes in one record (RFC 8446 §5.1).
pub(crate) const MAX_PLAINTEXT: usize = 1 << 14;
/// Most body bytes of a protected record (RFC 8446 §5.2).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
const HEADER_LEN: usize = 5;
const TAG_LEN: usize = 16;
const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const NEW_SESSION_TICKET: u8 = 4;
const CLOSE_NOTIFY: u8 = 0;

/// Why a record could not be sealed or opened (each ends the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// The direction reached its cipher suite's confidentiality limit.
    Exhausted,
    /// A record failed authentication (tampered, or not ours).
    Decrypt,
    /// A record header or inner content that TLS 1.3 does not allow here.
    Malformed,
    /// The peer sent a key update, an alert other than close_notify, or a
    /// post-handshake message other than a session ticket.
    Unsupported,
}

/// What one [`RecordLayer::open`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Opened {
    /// Bytes of whole records consumed from the input.
    pub consumed: usize,
    /// Plaintext bytes appended to the receive buffer.
    pub plaintext: usize,
    /// The peer sent its close_notify.
    pub peer_closed: bool,
}

/// One direction's key, IV and record count.
struct Direction {
    key: LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
    limit: u64,
}

impl Direction {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets), limit: u64) -> Option<Self> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return None,
        };
        let key = LessSafeKey::new(UnboundKey::new(algorithm, key.as_ref()).ok()?);
        let iv = iv.as_ref().try_into().ok()?;
        Some(Self {
            key,
            iv,
            seq,
            limit,
        })
    }

    /// The next record's nonce (RFC 8446 §5.3), counting the record.
    fn next_nonce(&mut self) -> Result<Nonce, RecordError> {
        if self.seq >= self.limit {
            return Err(RecordError::Exhausted);
        }
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// The record layer of one established TLS 1.3 connection (see the module docs).
pub(crate) struct RecordLayer {
    tx: Direction,
    rx: Direction,
}

impl RecordLayer {
    /// The layer continuing where rustls stopped, or `None` for a cipher
    /// suite it does not know (the connection then stays with rustls).
    /// `limit`: the suite's confidentiality limit, in records.
    pub fn new(secrets: ExtractedSecrets, limit: u64) -> Option<Self> {
        Some(Self {
            tx: Direction::new(secrets.tx, limit)?,
            rx: Direction::new(secrets.rx, limit)?,
        })
    }

    /// True once half the records the cipher suite allows have been sealed
    /// (or opened): the connection should be replaced by a fresh one.
    pub fn should_rotate(&self) -> bool {
        let half = |d: &Direction| d.seq >= d.limit / 2;
        half(&self.tx) || half(&self.rx)
    }

    /// Seals `plain` as application data, in records of at most
    /// [`MAX_PLAINTEXT`] bytes, appended to `out`.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        for chunk in plain.chunks(MAX_PLAINTEXT) {
            let body = chunk.len() + 1 + TAG_LEN;
            let [hi, lo] = (body as u16).to_be_bytes();
            let header = [APPLICATION_DATA, 3, 3, hi, lo];
            let nonce = self.tx.next_nonce()?;
            let before = out.len();
            out.reserve(HEADER_LEN + body);
            out.extend_from_slice(&header);
            let start = out.len();
            out.extend_from_slice(chunk);
            out.push(APPLICATION_DATA);
            match self.tx.key.seal_in_place_separate_tag(
                nonce,
                Aad::from(header),
                &mut out[start..],
            ) {
                Ok(tag) => out.extend_from_slice(tag.as_ref()),
                Err(_) => {
                    // Never leave the plaintext in what is sent.
                    out.truncate(before);
                    return Err(RecordError::Exhausted);
                }
            }
        }
        Ok(())
    }

    /// Opens the whole records at the front of `cipher` and appends their
    /// application data to `plain`; a record received in part is left
    /// (`consumed` stops before it). Stops after a close_notify.
    pub fn open(&mut self, cipher: &[u8], plain: &mut RecvBuf) -> Result<Opened, RecordError> {
        let mut opened = Opened::default();
        while !opened.peer_closed {
            let rest = &cipher[opened.consumed..];
            let Some(header) = rest.first_chunk::<HEADER_LEN>() else {
                break;
            };
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if header[..3] != [APPLICATION_DATA, 3, 3]
                || !(TAG_LEN + 1..=MAX_CIPHERTEXT).contains(&len)
            {
                return Err(RecordError::Malformed);
            }
            let Some(body) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
                break;
            };
            let header = *header;
            let nonce = self.rx.next_nonce()?;
            let key = &self.rx.key;
            let mut kind = 0;
            // The body is copied after the plaintext received so far and
            // opened in place there; only application data is kept.
            let content = plain.append_with(len, |tail| {
                tail.copy_from_slice(body);
                let inner = key
                    .open_in_place(nonce, Aad::from(header), tail)
                    .map_err(|_| RecordError::Decrypt)?;
                let (end, content_type) = inner_content(inner)?;
                kind = content_type;
                match content_type {
                    APPLICATION_DATA => Ok(end),
                    ALERT if end == 2 && inner[1] == CLOSE_NOTIFY => Ok(0),
                    HANDSHAKE => only_session_tickets(&inner[..end]).map(|()| 0),
                    ALERT => Err(RecordError::Unsupported),
                    _ => Err(RecordError::Malformed),
                }
            })?;
            match kind {
                APPLICATION_DATA => opened.plaintext += content,
                ALERT => opened.peer_closed = true,
                _ => {}
            }
            opened.consumed += HEADER_LEN + len;
        }
        Ok(opened)
    }
}

/// The length of an opened record's content and its content type: RFC 8446
/// §5.4, the type is the last byte that is not padding, and content, type and
/// padding take at most 2^14 + 1 bytes.
fn inner_content(inner: &[u8]) -> Result<(usize, u8), RecordError> {
    if inner.len() > MAX_PLAINTEXT + 1 {
        return Err(RecordError::Malformed);
    }
    let end = inner
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(RecordError::Malformed)?;
    Ok((end, inner[end]))
}

/// Checks that post-handshake `messages` are all session tickets (which a
/// ringrpc client does not keep: it never resumes through this layer).
fn only_session_tickets(mut messages: &[u8]) -> Result<(), RecordError> {
    if messages.is_empty() {
        return Err(RecordError::Malformed);
    }
    while let Some(&[kind, a, b, c]) = messages.first_chunk::<4>() {
        let len = u32::from_be_bytes([0, a, b, c]) as usize;
        let Some(rest) = messages.get(4 + len..) else {
            return Err(RecordError::Malformed);
        };
        if kind != NEW_SESSION_TICKET {
            return Err(RecordError::Unsupported);
        }
        messages = rest;
    }
    if messages.is_empty() {
        Ok(())
    } else {
        Err(RecordError::Malformed)
    }
}

#[cfg(test)]
#[path = "tls_record_tests.rs"]
mod tests;
