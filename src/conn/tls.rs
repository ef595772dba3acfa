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
#[cfg(all(test, feature = "tls"))]
pub(crate) use enabled::RECORD_LIMIT;

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
    pub fn should_rotate(&self) -> bool {
        match *self {}
    }
    pub fn is_lost(&self) -> bool {
        match *self {}
    }
}

/// The length of the whole TLS records (a 5-byte header whose last two
/// bytes are the body's length) at the front of `bytes`. A header no TLS
/// record has (content type, version, length) counts as whole with
/// everything after it: it is handed on, to be refused, not waited for.
#[cfg(feature = "tls")]
pub(crate) fn complete_records(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(&[kind, major, ..]) = bytes.get(at..at + 2) {
        if !(20..=23).contains(&kind) || major != 3 {
            return bytes.len();
        }
        let Some(header) = bytes[at..].first_chunk::<5>() else {
            break;
        };
        let body = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if body > MAX_RECORD_BODY {
            return bytes.len();
        }
        if bytes.len() - at < 5 + body {
            break;
        }
        at += 5 + body;
    }
    at
}

/// A core's TLS session, if it has one. Boxed: a session (rustls's
/// connection during the handshake, the record layer's keys after it) is
/// over a KiB, which a plaintext connection must not carry (the scale test
/// holds an idle connection under 4 KiB of heap).
pub(crate) type TlsSlot = Option<Box<TlsSession>>;

/// The largest record body any TLS version allows (RFC 5246 §6.2.3).
#[cfg(feature = "tls")]
const MAX_RECORD_BODY: usize = (1 << 14) + 2048;

/// Hands out what a core sends: without TLS the queued frames themselves
/// (`out` is swapped with `spare`), with TLS the records sealing them (into
/// `spare`; `out` is emptied, or kept while the handshake runs).
pub(crate) fn take_batch(tls: &mut TlsSlot, out: &mut Vec<u8>, spare: Vec<u8>) -> Vec<u8> {
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
pub(crate) fn has_output(tls: &TlsSlot, out: &[u8]) -> bool {
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
    use rustls::{ProtocolVersion, SupportedCipherSuite};

    use super::super::tls_record::RecordLayer;
    use super::{complete_records, HandshakeFailure, Opened, PeerIdentity, RecvBuf};

    /// Who protects the records: rustls through the handshake (and for good
    /// on a connection its secrets cannot leave: TLS 1.2, or a config
    /// without secret extraction), then ringrpc's record layer.
    enum Records {
        Rustls(rustls::Connection),
        Own(RecordLayer),
        /// The secrets could not be taken over: the connection is lost.
        Lost,
    }

    /// One connection's TLS state (client or server side).
    pub(crate) struct TlsSession {
        records: Records,
        /// Whether rustls may hand its secrets over after the handshake.
        extract: bool,
        handshaking: bool,
        /// A record has been received only in part.
        partial: bool,
        /// The peer's verified certificate, read when rustls hands over.
        identity: Option<PeerIdentity>,
    }

    impl std::fmt::Debug for TlsSession {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let records = match self.records {
                Records::Rustls(_) => "rustls",
                Records::Own(_) => "own",
                Records::Lost => "lost",
            };
            f.debug_struct("TlsSession")
                .field("handshaking", &self.handshaking)
                .field("records", &records)
                .finish_non_exhaustive()
        }
    }

    impl TlsSession {
        /// The server side of a new connection.
        pub fn server(cfg: Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
            let extract = cfg.enable_secret_extraction;
            let conn = rustls::ServerConnection::new(cfg)?;
            Ok(Self::from(rustls::Connection::Server(conn), extract))
        }

        /// The client side of a new connection to `name`.
        pub fn client(
            cfg: Arc<rustls::ClientConfig>,
            name: ServerName<'static>,
        ) -> Result<Self, rustls::Error> {
            let extract = cfg.enable_secret_extraction;
            let conn = rustls::ClientConnection::new(cfg, name)?;
            Ok(Self::from(rustls::Connection::Client(conn), extract))
        }

        fn from(mut conn: rustls::Connection, extract: bool) -> Self {
            // The core bounds what it queues (max_pending_out); rustls must
            // not cut a sealed batch short.
            conn.set_buffer_limit(None);
            Self {
                handshaking: conn.is_handshaking(),
                records: Records::Rustls(conn),
                extract,
                partial: false,
                identity: None,
            }
        }

        /// True until the handshake has finished.
        pub fn is_handshaking(&self) -> bool {
            self.handshaking
        }

        /// True unless a record has been received only in part.
        pub fn at_record_boundary(&self) -> bool {
            !self.partial
        }

        /// True when records (handshake, alerts, sealed data) wait to be sent.
        pub fn wants_write(&self) -> bool {
            match &self.records {
                Records::Rustls(conn) => conn.wants_write(),
                Records::Own(_) | Records::Lost => false,
            }
        }

        /// True when the connection should be replaced by a fresh one (its
        /// keys have protected half the records their cipher allows).
        pub fn should_rotate(&self) -> bool {
            match &self.records {
                Records::Own(layer) => layer.should_rotate(),
                Records::Rustls(_) => false,
                Records::Lost => true,
            }
        }

        /// True when nothing more can be sealed: the connection must close.
        pub fn is_lost(&self) -> bool {
            matches!(self.records, Records::Lost)
        }

        /// Seals `plain` (whole frames) and appends every record waiting to
        /// be sent to `out`.
        pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) {
            match &mut self.records {
                Records::Own(layer) => {
                    if layer.seal(plain, out).is_err() {
                        // Past the cipher's limit: never reuse a nonce.
                        self.records = Records::Lost;
                    }
                }
                Records::Rustls(conn) => {
                    if !plain.is_empty() {
                        // Unlimited buffer: the write takes everything.
                        let _ = std::io::Write::write_all(&mut conn.writer(), plain);
                    }
                    while conn.wants_write() {
                        match conn.write_tls(out) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                    self.take_over();
                }
                Records::Lost => {}
            }
        }

        /// Feeds the ciphertext in `cipher` to the session and appends the
        /// plaintext it yields to `plain`; a record received in part stays in
        /// `cipher`. An error ends the connection (its alert, if any, is then
        /// waiting in [`seal`](Self::seal)'s output);
        /// [`is_handshaking`](Self::is_handshaking) then says whether it
        /// failed during the handshake.
        pub fn open(
            &mut self,
            cipher: &mut RecvBuf,
            plain: &mut RecvBuf,
        ) -> Result<Opened, HandshakeFailure> {
            let opened = match &mut self.records {
                Records::Own(layer) => {
                    let got = layer
                        .open(cipher.unconsumed(), plain)
                        .map_err(|_| HandshakeFailure::Garbage)?;
                    cipher.consume(got.consumed);
                    Opened {
                        plaintext: got.plaintext,
                        handshake_done: false,
                        peer_closed: got.peer_closed,
                    }
                }
                Records::Rustls(conn) => {
                    let opened = Self::open_rustls(conn, &mut self.handshaking, cipher, plain)?;
                    self.take_over();
                    opened
                }
                Records::Lost => return Err(HandshakeFailure::Garbage),
            };
            self.partial = !cipher.unconsumed().is_empty();
            Ok(opened)
        }

        /// [`open`](Self::open) through rustls: only whole records are fed
        /// to it, so that it holds no received bytes when it hands over.
        fn open_rustls(
            conn: &mut rustls::Connection,
            handshaking: &mut bool,
            cipher: &mut RecvBuf,
            plain: &mut RecvBuf,
        ) -> Result<Opened, HandshakeFailure> {
            let mut opened = Opened::default();
            // rustls reads a few KiB at a time: the whole records are counted
            // once, from the record boundary every call starts at.
            let mut whole = complete_records(cipher.unconsumed());
            loop {
                let mut input = &cipher.unconsumed()[..whole];
                if input.is_empty() {
                    break;
                }
                let n = conn
                    .read_tls(&mut input as &mut dyn Read)
                    .map_err(|_| HandshakeFailure::Garbage)?;
                cipher.consume(n);
                whole -= n;
                let state = match conn.process_new_packets() {
                    Ok(state) => state,
                    Err(e) => {
                        // Where it failed: in the handshake, or in a record
                        // after it (the handshake may have finished in this call).
                        *handshaking = conn.is_handshaking();
                        return Err(HandshakeFailure::classify(&e));
                    }
                };
                opened.plaintext += drain(conn, plain);
                opened.peer_closed |= state.peer_has_closed();
                if n == 0 {
                    break;
                }
            }
            if *handshaking && !conn.is_handshaking() {
                *handshaking = false;
                opened.handshake_done = true;
            }
            Ok(opened)
        }

        /// Once the handshake is over and rustls has nothing left to send,
        /// takes its TLS 1.3 traffic secrets over into [`RecordLayer`].
        fn take_over(&mut self) {
            let Records::Rustls(conn) = &self.records else {
                return;
            };
            if !self.extract
                || self.handshaking
                || conn.wants_write()
                || conn.protocol_version() != Some(ProtocolVersion::TLSv1_3)
            {
                return;
            }
            let Some(SupportedCipherSuite::Tls13(suite)) = conn.negotiated_cipher_suite() else {
                return;
            };
            let limit = suite.common.confidentiality_limit;
            #[cfg(test)]
            let limit = RECORD_LIMIT.with(std::cell::Cell::get).unwrap_or(limit);
            self.identity = identity_of(conn);
            let Records::Rustls(conn) = std::mem::replace(&mut self.records, Records::Lost) else {
                return;
            };
            if let Some(layer) = conn
                .dangerous_extract_secrets()
                .ok()
                .and_then(|secrets| RecordLayer::new(secrets, limit))
            {
                self.records = Records::Own(layer);
            }
        }

        /// The verified identity of the peer's certificate, once the
        /// handshake has finished and if the peer presented one.
        pub fn peer_identity(&self) -> Option<PeerIdentity> {
            match &self.records {
                Records::Rustls(conn) => identity_of(conn),
                Records::Own(_) | Records::Lost => self.identity.clone(),
            }
        }
    }

    #[cfg(test)]
    thread_local! {
        /// A record limit for the sessions this thread hands over (tests of
        /// rotation, which would otherwise take millions of records).
        pub(crate) static RECORD_LIMIT: std::cell::Cell<Option<u64>> =
            const { std::cell::Cell::new(None) };
    }

    fn identity_of(conn: &rustls::Connection) -> Option<PeerIdentity> {
        let cert = conn.peer_certificates()?.first()?;
        Some(PeerIdentity::from_der(cert.as_ref()))
    }

    /// Moves the plaintext rustls decrypted into `plain`; returns its length.
    fn drain(conn: &mut rustls::Connection, plain: &mut RecvBuf) -> usize {
        let mut total = 0;
        let mut reader = conn.reader();
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
}

#[cfg(all(test, feature = "tls"))]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;

    /// A server and a client config for `localhost`, from certificates made now.
    pub(crate) fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let (server_cfg, ca) = server_and_ca();
        let client_cfg = crate::tls::client_config(ca.as_bytes(), None).unwrap();
        (server_cfg, client_cfg)
    }

    /// A server config for `localhost` from the helpers, and its CA's PEM,
    /// from certificates made now.
    pub(crate) fn server_and_ca() -> (Arc<rustls::ServerConfig>, String) {
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
        (server_cfg, ca.pem())
    }

    /// A server and a client session for `localhost`, from certificates made now.
    pub(crate) fn pair() -> (TlsSession, TlsSession) {
        let (server_cfg, client_cfg) = configs();
        let name = "localhost".try_into().unwrap();
        let server = TlsSession::server(server_cfg).unwrap();
        let client = TlsSession::client(client_cfg, name).unwrap();
        (server, client)
    }

    /// Moves what `from` sends (through `take_batch`, with `out` queued) into
    /// `to`'s cipher buffer and opens it into `plain`.
    fn hop(from: &mut TlsSlot, out: &mut Vec<u8>, to: &mut TlsSlot, plain: &mut RecvBuf) -> Opened {
        let sealed = take_batch(from, out, Vec::new());
        let mut cipher = RecvBuf::new(64 << 10);
        cipher.append(&sealed);
        to.as_mut().unwrap().open(&mut cipher, plain).unwrap()
    }

    #[test]
    fn frames_cross_sealed_and_land_aligned_and_nothing_leaves_before_the_handshake() {
        let (server, client) = pair();
        let (mut server, mut client) = (Some(Box::new(server)), Some(Box::new(client)));
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
    fn a_record_cut_short_at_the_hand_over_is_opened_by_the_own_layer() {
        let (server, client) = pair();
        let (mut server, mut client) = (Some(Box::new(server)), Some(Box::new(client)));
        let (mut s_plain, mut c_plain) = (RecvBuf::new(64 << 10), RecvBuf::new(64 << 10));
        // Several records of frames leave with the client's Finished.
        let big: Vec<u8> = (0..40_000u32).map(|i| (i * 3) as u8).collect();
        let (mut c_out, mut s_out) = (big.clone(), Vec::new());
        hop(&mut client, &mut c_out, &mut server, &mut s_plain);
        hop(&mut server, &mut s_out, &mut client, &mut c_plain);
        let flight = take_batch(&mut client, &mut c_out, Vec::new());
        for cut in [flight.len() - 1, flight.len() - 9_000, flight.len() / 2] {
            let (s, c) = pair();
            let (mut server, mut client) = (Some(Box::new(s)), Some(Box::new(c)));
            let mut s_plain = RecvBuf::new(64 << 10);
            let mut c_out = big.clone();
            hop(&mut client, &mut c_out, &mut server, &mut s_plain);
            hop(
                &mut server,
                &mut Vec::new(),
                &mut client,
                &mut RecvBuf::new(4096),
            );
            let flight = take_batch(&mut client, &mut c_out, Vec::new());
            let session = server.as_mut().unwrap();
            let mut cipher = RecvBuf::new(64 << 10);
            cipher.append(&flight[..cut]);
            session.open(&mut cipher, &mut s_plain).unwrap();
            assert!(!session.at_record_boundary(), "a record is cut at {cut}");
            // The server's tickets leave: rustls hands over to the own layer.
            let _ = take_batch(&mut server, &mut Vec::new(), Vec::new());
            let session = server.as_mut().unwrap();
            assert!(format!("{session:?}").contains("own"), "{session:?}");
            cipher.append(&flight[cut..]);
            session.open(&mut cipher, &mut s_plain).unwrap();
            assert!(session.at_record_boundary());
            assert_eq!(s_plain.unconsumed(), &big[..], "cut at {cut}");
        }
    }

    #[test]
    fn only_whole_records_are_counted_across_any_split() {
        let mut stream = Vec::new();
        for len in [0u16, 1, 300, 17_000] {
            stream.extend_from_slice(&[0x17, 3, 3]);
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(0xAB, usize::from(len)));
        }
        let boundaries = [0, 5, 11, 316, stream.len()];
        for end in 0..=stream.len() {
            let whole = complete_records(&stream[..end]);
            let expected = boundaries.iter().rev().find(|&&b| b <= end).unwrap();
            assert_eq!(whole, *expected, "{end}");
        }
        // Not TLS: handed on whole, to be refused.
        assert_eq!(complete_records(b"GET / HTTP/1.1"), 14);
        assert_eq!(complete_records(&[0x17, 3, 3, 0xff, 0xff, 0]), 6);
        assert_eq!(complete_records(&[0x16]), 0, "too short to tell");
    }

    #[test]
    fn garbage_fails_the_handshake_with_an_alert_to_send() {
        let (server, _) = pair();
        let mut server = Some(Box::new(server));
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
