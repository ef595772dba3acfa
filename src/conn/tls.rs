//! TLS inside the connection core (feature `tls`): [`TlsSession`].
//!
//! rustls is itself sans-I/O (bytes in, bytes out), so a session sits in the
//! core next to the frames it protects, and every driver gets it without
//! knowing about it: the driver receives ciphertext into a receive buffer of
//! its own and hands both buffers to the core (`open`), and whatever the core
//! hands out through `poll_transmit` is already sealed.
//!
//! Invariants:
//! - decrypted bytes are appended to the connection's ordinary receive buffer
//!   (`RecvBuf`), so frames still start 16-byte aligned and archived messages
//!   are read in place;
//! - a send batch is sealed as one write: the frames queued together leave in
//!   as few records as the record size allows (16 KiB of plaintext each);
//! - no plaintext leaves before the handshake has finished (frames queued
//!   meanwhile wait in the core's send buffer);
//! - every handshake or record error is fatal to this connection only; the
//!   alert rustls queued for the peer is still handed out (`take_alert`).
//!
//! Without the `tls` feature [`TlsSession`] is an empty enum: the cores keep an
//! `Option<TlsSession>` that is always `None` and the plaintext paths are the
//! only ones compiled in. kTLS would hand the session's secrets to the kernel
//! after the handshake (`dangerous_extract_secrets`) and turn `seal`/`open`
//! into pass-throughs; that is the seam it would use.

use crate::runtime::buf::RecvBuf;
use crate::tls::{HandshakeFailure, PeerIdentity};

#[cfg(feature = "tls")]
pub(crate) use enabled::TlsSession;

/// What one call to [`TlsSession::open`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Opened {
    /// Plaintext bytes appended to the receive buffer.
    pub plaintext: usize,
    /// The handshake finished during this call.
    pub handshake_done: bool,
    /// The peer sent its close_notify: no more data will come.
    pub peer_closed: bool,
}

/// Without the `tls` feature no session can exist.
#[cfg(not(feature = "tls"))]
#[derive(Debug)]
pub(crate) enum TlsSession {}

#[cfg(not(feature = "tls"))]
impl TlsSession {
    pub fn is_handshaking(&self) -> bool {
        match *self {}
    }
    pub fn wants_write(&self) -> bool {
        match *self {}
    }
    pub fn seal(&mut self, _plain: &[u8], _out: &mut Vec<u8>) {
        match *self {}
    }
    pub fn open(
        &mut self,
        _cipher: &mut RecvBuf,
        _plain: &mut RecvBuf,
    ) -> Result<Opened, HandshakeFailure> {
        match *self {}
    }
    pub fn peer_identity(&self) -> Option<PeerIdentity> {
        match *self {}
    }
    pub fn at_record_boundary(&self) -> bool {
        match *self {}
    }
}

/// Where the received ciphertext stands in TLS's record framing (a 5-byte
/// header whose last two bytes are the body's length), so that a record cut
/// short is held to the read timeout like a partial frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecordTracker {
    /// Header bytes seen of the record being received (0..5).
    header: usize,
    /// The length bytes of that header.
    len: [u8; 2],
    /// Body bytes still to come.
    body_left: usize,
}

impl RecordTracker {
    /// Accounts for `bytes`, the next ciphertext received.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            if let Some(i) = self.header.checked_sub(3).filter(|&i| i < 2) {
                self.len[i] = bytes[0];
            }
            self.header += 1;
            bytes = &bytes[1..];
            if self.header == 5 {
                self.header = 0;
                self.body_left = usize::from(u16::from_be_bytes(self.len));
            }
        }
    }

    /// True between records.
    pub fn at_boundary(&self) -> bool {
        self.header == 0 && self.body_left == 0
    }
}

/// Hands out what a core sends: without TLS the queued frames themselves
/// (`out` is swapped with `spare`), with TLS the records sealing them (into
/// `spare`; `out` is emptied, or kept while the handshake runs).
pub(crate) fn take_batch(
    tls: &mut Option<TlsSession>,
    out: &mut Vec<u8>,
    spare: Vec<u8>,
) -> Vec<u8> {
    match tls {
        None => std::mem::replace(out, spare),
        Some(tls) => {
            let mut sealed = spare;
            sealed.clear();
            if tls.is_handshaking() {
                tls.seal(&[], &mut sealed);
            } else {
                tls.seal(out, &mut sealed);
                out.clear();
            }
            sealed
        }
    }
}

/// True when a core has something to hand out: queued frames it may send
/// (after the handshake, under TLS) or handshake records.
pub(crate) fn has_output(tls: &Option<TlsSession>, out: &[u8]) -> bool {
    match tls {
        None => !out.is_empty(),
        Some(tls) => tls.wants_write() || (!out.is_empty() && !tls.is_handshaking()),
    }
}

#[cfg(feature = "tls")]
mod enabled {
    use std::io::{BufRead, Read};
    use std::sync::Arc;

    use rustls::pki_types::ServerName;

    use super::{HandshakeFailure, Opened, PeerIdentity, RecvBuf};

    /// One connection's TLS state (client or server side).
    pub(crate) struct TlsSession {
        conn: rustls::Connection,
        handshaking: bool,
        records: super::RecordTracker,
    }

    impl std::fmt::Debug for TlsSession {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TlsSession")
                .field("handshaking", &self.handshaking)
                .finish_non_exhaustive()
        }
    }

    impl TlsSession {
        /// The server side of a new connection.
        pub fn server(cfg: Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
            let conn = rustls::ServerConnection::new(cfg)?;
            Ok(Self::from(rustls::Connection::Server(conn)))
        }

        /// The client side of a new connection to `name`.
        pub fn client(
            cfg: Arc<rustls::ClientConfig>,
            name: ServerName<'static>,
        ) -> Result<Self, rustls::Error> {
            let conn = rustls::ClientConnection::new(cfg, name)?;
            Ok(Self::from(rustls::Connection::Client(conn)))
        }

        fn from(mut conn: rustls::Connection) -> Self {
            // The core bounds what it queues (max_pending_out); rustls must
            // not cut a sealed batch short.
            conn.set_buffer_limit(None);
            Self {
                handshaking: conn.is_handshaking(),
                conn,
                records: super::RecordTracker::default(),
            }
        }

        /// True until the handshake has finished.
        pub fn is_handshaking(&self) -> bool {
            self.handshaking
        }

        /// True unless a record has been received only in part.
        pub fn at_record_boundary(&self) -> bool {
            self.records.at_boundary()
        }

        /// True when records (handshake, alerts, sealed data) wait to be sent.
        pub fn wants_write(&self) -> bool {
            self.conn.wants_write()
        }

        /// Seals `plain` (whole frames) and appends every record waiting to
        /// be sent to `out`.
        pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) {
            if !plain.is_empty() {
                // Unlimited buffer: the write takes everything.
                let _ = std::io::Write::write_all(&mut self.conn.writer(), plain);
            }
            while self.conn.wants_write() {
                match self.conn.write_tls(out) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }

        /// Feeds the ciphertext in `cipher` to the session and appends the
        /// plaintext it yields to `plain`. An error ends the connection (its
        /// alert, if any, is then waiting in [`seal`](Self::seal)'s output);
        /// [`is_handshaking`](Self::is_handshaking) then says whether it
        /// failed during the handshake.
        pub fn open(
            &mut self,
            cipher: &mut RecvBuf,
            plain: &mut RecvBuf,
        ) -> Result<Opened, HandshakeFailure> {
            let mut opened = Opened::default();
            self.records.feed(cipher.unconsumed());
            loop {
                let mut input = cipher.unconsumed();
                if input.is_empty() {
                    break;
                }
                let n = self
                    .conn
                    .read_tls(&mut input as &mut dyn Read)
                    .map_err(|_| HandshakeFailure::Garbage)?;
                cipher.consume(n);
                let state = match self.conn.process_new_packets() {
                    Ok(state) => state,
                    Err(e) => {
                        // Where it failed: in the handshake, or in a record
                        // after it (the handshake may have finished in this call).
                        self.handshaking = self.conn.is_handshaking();
                        return Err(HandshakeFailure::classify(&e));
                    }
                };
                opened.plaintext += self.drain(plain);
                opened.peer_closed |= state.peer_has_closed();
                if n == 0 {
                    break;
                }
            }
            if self.handshaking && !self.conn.is_handshaking() {
                self.handshaking = false;
                opened.handshake_done = true;
            }
            Ok(opened)
        }

        /// Moves the decrypted plaintext into `plain`; returns its length.
        fn drain(&mut self, plain: &mut RecvBuf) -> usize {
            let mut total = 0;
            let mut reader = self.conn.reader();
            loop {
                let n = match reader.fill_buf() {
                    Ok(chunk) if !chunk.is_empty() => {
                        plain.append(chunk);
                        chunk.len()
                    }
                    _ => break,
                };
                reader.consume(n);
                total += n;
            }
            total
        }

        /// The verified identity of the peer's certificate, once the
        /// handshake has finished and if the peer presented one.
        pub fn peer_identity(&self) -> Option<PeerIdentity> {
            let cert = self.conn.peer_certificates()?.first()?;
            Some(PeerIdentity::from_der(cert.as_ref()))
        }
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A server and a client session for `localhost`, from certificates made now.
    fn pair() -> (TlsSession, TlsSession) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
        let server_cfg =
            crate::tls::server_config(cert.pem().as_bytes(), key.serialize_pem().as_bytes(), None)
                .unwrap();
        let client_cfg = crate::tls::client_config(ca.pem().as_bytes(), None).unwrap();
        let name = "localhost".try_into().unwrap();
        let server = TlsSession::server(server_cfg).unwrap();
        let client = TlsSession::client(Arc::clone(&client_cfg), name).unwrap();
        (server, client)
    }

    /// Moves what `from` sends (through `take_batch`, with `out` queued) into
    /// `to`'s cipher buffer and opens it into `plain`.
    fn hop(
        from: &mut Option<TlsSession>,
        out: &mut Vec<u8>,
        to: &mut Option<TlsSession>,
        plain: &mut RecvBuf,
    ) -> Opened {
        let sealed = take_batch(from, out, Vec::new());
        let mut cipher = RecvBuf::new(64 << 10);
        cipher.append(&sealed);
        to.as_mut().unwrap().open(&mut cipher, plain).unwrap()
    }

    #[test]
    fn frames_cross_sealed_and_land_aligned_and_nothing_leaves_before_the_handshake() {
        let (server, client) = pair();
        let (mut server, mut client) = (Some(server), Some(client));
        let (mut s_plain, mut c_plain) = (RecvBuf::new(64 << 10), RecvBuf::new(64 << 10));
        // A frame queued before the handshake waits in the client's buffer.
        let frame: Vec<u8> = (0..48u8).collect();
        let mut c_out = frame.clone();
        let mut s_out = Vec::new();
        assert!(has_output(&client, &c_out), "the ClientHello is ready");
        let hello = hop(&mut client, &mut c_out, &mut server, &mut s_plain);
        assert_eq!((hello.plaintext, hello.handshake_done), (0, false));
        assert_eq!(c_out, frame, "no plaintext before the handshake");
        // Server flight, then the client finishes and sends the frame.
        let done = hop(&mut server, &mut s_out, &mut client, &mut c_plain);
        assert!(done.handshake_done);
        assert!(!client.as_ref().unwrap().is_handshaking());
        let got = hop(&mut client, &mut c_out, &mut server, &mut s_plain);
        assert!(got.handshake_done && c_out.is_empty());
        assert_eq!(s_plain.unconsumed(), &frame[..]);
        assert_eq!(s_plain.unconsumed().as_ptr() as usize % 16, 0, "aligned");
        // A batch larger than one record comes back whole.
        let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        s_out.extend_from_slice(&big);
        let back = hop(&mut server, &mut s_out, &mut client, &mut c_plain);
        assert_eq!(back.plaintext, big.len());
        assert_eq!(c_plain.unconsumed(), &big[..]);
        assert_eq!(c_plain.unconsumed().as_ptr() as usize % 16, 0, "aligned");
    }

    #[test]
    fn the_record_tracker_follows_record_boundaries_across_any_split() {
        let mut stream = Vec::new();
        for len in [0u16, 1, 300, 17_000] {
            stream.extend_from_slice(&[0x17, 3, 3]);
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(0xAB, usize::from(len)));
        }
        for chunk in [1, 2, 5, 7, 4096] {
            let mut t = RecordTracker::default();
            let mut fed = 0;
            for piece in stream.chunks(chunk) {
                t.feed(piece);
                fed += piece.len();
                let boundaries = [0, 5, 11, 316, stream.len()];
                assert_eq!(t.at_boundary(), boundaries.contains(&fed), "{chunk} {fed}");
            }
        }
    }

    #[test]
    fn garbage_fails_the_handshake_with_an_alert_to_send() {
        let (server, _) = pair();
        let mut server = Some(server);
        let mut cipher = RecvBuf::new(4096);
        cipher.append(b"GET / HTTP/1.1\r\n\r\n");
        let mut plain = RecvBuf::new(4096);
        let failed = server.as_mut().unwrap().open(&mut cipher, &mut plain);
        assert_eq!(failed, Err(HandshakeFailure::Garbage));
        assert!(has_output(&server, &[]), "the alert waits to be sent");
        let alert = take_batch(&mut server, &mut Vec::new(), Vec::new());
        assert_eq!(alert.first(), Some(&0x15));
    }
}
