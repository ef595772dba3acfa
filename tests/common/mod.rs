//! Shared helpers for the loopback integration tests.
//!
//! - message types ([`Msg`], [`Record`]) and the echo methods every server registers;
//! - [`TestServer`]: a server on its own 1-core, unpinned runtime, bound to 127.0.0.1:0;
//! - [`TestClient`]: a 1-core, unpinned client runtime whose core keeps one
//!   [`Client`] (clients are `!Send`, so it lives in a core-thread local and test
//!   closures borrow a clone of it on the core);
//! - bounded polling helpers ([`wait_until`], [`TestServer::wait_no_connections`]).
//!
//! Every test binary uses only part of this module.
#![allow(dead_code)]

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringrpc::runtime::CoreTask;
use ringrpc::{
    Client, ClientBuilder, ClientStats, Error, Method, Runtime, Server, ServerBuilder,
    ServerHandle, ServerStats,
};

/// A small message: an id and a text payload.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub id: u64,
    pub text: String,
}

/// A nested part of [`Record`].
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Inner {
    pub names: Vec<String>,
    pub flag: bool,
}

/// A message exercising many archived shapes.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub name: String,
    pub note: String,
    pub numbers: Vec<u64>,
    pub groups: Vec<Vec<String>>,
    pub inner: Inner,
    pub small: u8,
    pub signed: i32,
    pub big: i64,
    pub maybe: Option<String>,
}

/// Sync echo of a [`Msg`]; registered on every test server.
pub const ECHO: Method<Msg, Msg> = Method::new("Test.echo");
/// Sync echo of a [`Record`] (deserialise + reserialise on the server).
pub const ECHO_RECORD: Method<Record, Record> = Method::new("Test.echo_record");

/// The payload text the tests attach to request `id` (distinct per id).
pub fn text_for(id: u64) -> String {
    format!("payload-{id}-{:x}", mix(id))
}

/// A cheap deterministic 64-bit mixer (splitmix64 finaliser).
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn echo_msg(req: &ArchivedMsg) -> Result<Msg, String> {
    Ok(Msg {
        id: req.id.to_native(),
        text: req.text.as_str().to_owned(),
    })
}

fn echo_record(req: &ArchivedRecord) -> Result<Record, String> {
    rkyv::deserialize::<Record, rkyv::rancor::Error>(req).map_err(|e| e.to_string())
}

/// A builder with the two echo methods registered.
pub fn base_server() -> ServerBuilder {
    Server::builder()
        .insecure_plaintext()
        .register(ECHO, echo_msg)
        .expect("register echo")
        .register(ECHO_RECORD, echo_record)
        .expect("register echo_record")
}

/// Polls `cond` every millisecond until it holds; panics after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A server on its own single-core runtime.
pub struct TestServer {
    // Declared before `rt`: the handle is dropped (server aborted) while its core still runs.
    handle: Option<ServerHandle>,
    addr: SocketAddr,
    pub rt: Runtime,
}

impl TestServer {
    /// Serves `builder` on 127.0.0.1 with an OS-chosen port.
    pub fn start(builder: ServerBuilder) -> Self {
        let rt = Runtime::builder()
            .cores(1)
            .pin(false)
            .name("test-server")
            .build()
            .expect("server runtime");
        let handle = builder
            .serve(&rt, "127.0.0.1:0".parse().unwrap())
            .expect("serve");
        let addr = handle.local_addr();
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        assert_ne!(addr.port(), 0);
        Self {
            handle: Some(handle),
            addr,
            rt,
        }
    }

    /// A server with only the echo methods.
    pub fn echo() -> Self {
        Self::start(base_server())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("server is running")
    }

    pub fn stats(&self) -> ServerStats {
        self.handle().stats()
    }

    /// Aborts the server (blocking until every listener and connection is closed).
    pub fn abort(&mut self) {
        self.handle.take().expect("server is running").abort();
    }

    /// Serves `builder` again on the same runtime and the same address.
    pub fn serve_again(&mut self, builder: ServerBuilder) {
        assert!(self.handle.is_none(), "stop the old server first");
        let handle = builder.serve(&self.rt, self.addr).expect("serve again");
        assert_eq!(handle.local_addr(), self.addr);
        self.handle = Some(handle);
    }

    /// Waits (bounded) until the server has no open connection.
    pub fn wait_no_connections(&self, timeout: Duration) {
        wait_until(timeout, "server open_connections == 0", || {
            self.stats().open_connections == 0
        });
    }
}

/// A 1-core, unpinned runtime for clients.
pub fn client_runtime() -> Runtime {
    Runtime::builder()
        .cores(1)
        .pin(false)
        .name("test-client")
        .build()
        .expect("client runtime")
}

/// Client settings for tests: short deadline, heartbeat and backoff.
pub fn client_builder() -> ClientBuilder {
    Client::builder()
        .insecure_plaintext()
        .pool_size(1)
        .deadline(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(500))
        .heartbeat_interval(Duration::from_millis(250))
        .heartbeat_timeout(Duration::from_secs(1))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
}

thread_local! {
    /// The client owned by a [`TestClient`]'s core thread.
    static CLIENT: RefCell<Option<Client>> = const { RefCell::new(None) };
}

/// A client runtime whose single core holds one connected [`Client`].
pub struct TestClient {
    pub rt: Runtime,
}

impl TestClient {
    /// Connects with [`client_builder`] and waits (bounded) for the connection.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(client_builder(), addr)
    }

    /// Connects with `builder` and waits (bounded) for the connection.
    pub fn connect_with(builder: ClientBuilder, addr: SocketAddr) -> Self {
        let rt = client_runtime();
        let connected = rt
            .block_on(0, move || async move {
                let client = builder.connect(addr).expect("connect on a ringrpc core");
                let up = client.wait_connected(Duration::from_secs(2)).await;
                CLIENT.with(|c| *c.borrow_mut() = Some(client));
                up
            })
            .expect("client core");
        assert!(connected, "client did not connect to {addr} within 2 s");
        Self { rt }
    }

    /// Runs `f(client)` on the client core and blocks until it finishes.
    ///
    /// A panic (failed assertion) inside `f` is reported on stderr by the core
    /// thread and turns into a panic here.
    pub fn run<F, Fut>(&self, f: F) -> Fut::Output
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.spawn(f)
            .join()
            .expect("client core task panicked (see its message above)")
    }

    /// Starts `f(client)` on the client core without waiting for it.
    pub fn spawn<F, Fut>(&self, f: F) -> CoreTask<Fut::Output>
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.rt
            .spawn_on(0, move || {
                let client = CLIENT.with(|c| c.borrow().clone()).expect("client is open");
                f(client)
            })
            .expect("client core")
    }

    pub fn stats(&self) -> ClientStats {
        self.run(|client| async move { client.stats() })
    }

    /// One echo call; returns the echoed message or the error.
    pub fn echo(&self, id: u64) -> Result<Msg, Error> {
        self.run(move |client| async move {
            let reply = client
                .call(
                    &ECHO,
                    &Msg {
                        id,
                        text: text_for(id),
                    },
                )
                .await?;
            Ok(reply.to_owned().expect("deserialise reply"))
        })
    }

    /// Closes and drops the client.
    pub fn close(&self) {
        self.rt
            .block_on(0, || async {
                if let Some(client) = CLIENT.with(|c| c.borrow_mut().take()) {
                    client.close();
                }
            })
            .expect("client core");
    }
}

/// The checks every test ends with: nothing in flight on the client, and once the
/// client is closed the server sees no open connection.
pub fn finish(client: &TestClient, server: &TestServer) {
    let stats = client.stats();
    assert_eq!(stats.in_flight, 0, "calls left in flight: {stats:?}");
    client.close();
    server.wait_no_connections(Duration::from_secs(3));
}

/// Asserts `result` is `Error::Remote` with `code`; returns its message.
pub fn expect_remote<T: std::fmt::Debug>(
    result: Result<T, Error>,
    code: ringrpc::ErrorCode,
) -> String {
    match result {
        Err(Error::Remote { code: got, message }) => {
            assert_eq!(got, code, "remote error code (message {message:?})");
            message
        }
        other => panic!("expected Error::Remote({code:?}), got {other:?}"),
    }
}

/// A raw (non-ringrpc) TCP connection for hostile-peer tests: `TCP_NODELAY`,
/// read and write timeouts of `timeout` so a test cannot hang on it.
pub fn raw_connect(addr: SocketAddr, timeout: Duration) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr).expect("raw connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(timeout))
        .expect("write timeout");
    stream
}

/// A complete, valid request frame calling `method` with `msg`.
pub fn request_frame<T>(call_id: u64, method: u32, msg: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    use ringrpc::protocol::{encode_frame, FrameHeader, FrameKind, DEFAULT_MAX_FRAME};
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(msg).expect("serialise");
    let mut header = FrameHeader::new(FrameKind::Request);
    header.call_id = call_id;
    header.method = method;
    let mut frame = Vec::new();
    encode_frame(&mut frame, header, &payload, DEFAULT_MAX_FRAME).expect("encode");
    frame
}

/// Keeps a test binary's intentional panics (payload exactly `text`) out of the
/// output; any other panic still prints. Installed once per binary: the first
/// call's `text` is the one filtered.
pub fn quiet_panics_with(text: &'static str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str));
            if payload != Some(text) {
                default(info);
            }
        }));
    });
}
