//! An HTTP gateway in front of a ringrpc service: `cargo run --example axum_gateway [HTTP_ADDR]`.
//!
//! A tokio application (axum, HTTP/1.1) whose handlers call a ringrpc
//! key-value service through a [`Handle`]: the `Send + Sync + Clone` client
//! that any thread or executor can await, while the calls themselves run on
//! the ringrpc cores (one `Client` per core, round-robin). The key-value
//! server runs on the same ringrpc runtime here; in a real deployment it
//! would be another process, and only [`Client::builder`] would change.
//!
//! ```text
//! cargo run --example axum_gateway             # HTTP on 127.0.0.1:3000
//! curl -X PUT --data 'hello' 127.0.0.1:3000/kv/greeting
//! curl 127.0.0.1:3000/kv/greeting              # hello
//! ```
//!
//! `GET /kv/{key}` answers 200 with the value (404 if absent), `PUT /kv/{key}`
//! stores the request body (200); a failed call answers 504 on a timeout,
//! 503 when the service is unavailable, 502 otherwise. The GET body is a
//! view into the reply's own buffer ([`OwnedReply::bytes`]): the value
//! is not copied again between the ringrpc reply and the HTTP response.
//!
//! tests/axum_gateway.rs runs [`Gateway`] and [`router`] in-process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ringrpc::{Client, Error, Handle, Method, OwnedReply, Runtime, Server, ServerHandle};

/// A `put` request: store `value` under `key`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub struct Put {
    /// The key.
    pub key: String,
    /// The bytes stored.
    pub value: Vec<u8>,
}

/// A `get` request: the value under `key`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub struct Get {
    /// The key.
    pub key: String,
}

/// A stored value, if any (the answer to both methods: `put` returns the
/// value it replaced).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
pub struct Value {
    /// The value, or `None` if the key has none.
    pub value: Option<Vec<u8>>,
}

/// Stores a value, returning the one it replaced.
pub const PUT: Method<Put, Value> = Method::new("Kv.put");
/// Reads a value.
pub const GET: Method<Get, Value> = Method::new("Kv.get");

/// The ringrpc side: a runtime, the key-value server on its cores, and a
/// [`Handle`] to it for the HTTP handlers.
#[derive(Debug)]
pub struct Gateway {
    /// The ringrpc cores (server and the handle's clients).
    pub runtime: Runtime,
    /// The key-value server.
    pub server: ServerHandle,
    /// What the HTTP handlers call through.
    pub handle: Handle,
}

impl Gateway {
    /// Starts `cores` ringrpc cores, the key-value service on them (port
    /// chosen by the system), and a handle to it with a client on every core.
    pub fn start(cores: usize) -> Result<Self, Error> {
        let runtime = Runtime::builder().cores(cores).pin(false).build()?;
        let store: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let (put_store, get_store) = (store.clone(), store);
        let server = Server::builder()
            .insecure_plaintext()
            .register(PUT, move |req: &ArchivedPut| -> Result<Value, String> {
                let mut store = put_store.lock().map_err(|e| e.to_string())?;
                let old = store.insert(req.key.to_string(), req.value.to_vec());
                Ok(Value { value: old })
            })?
            .register(GET, move |req: &ArchivedGet| -> Result<Value, String> {
                let store = get_store.lock().map_err(|e| e.to_string())?;
                Ok(Value {
                    value: store.get(req.key.as_str()).cloned(),
                })
            })?
            .serve(&runtime, "127.0.0.1:0".parse().expect("address"))?;
        let handle = Client::builder()
            .insecure_plaintext()
            .deadline(Duration::from_secs(1))
            .connect_handle(&runtime, server.local_addr())?;
        Ok(Self {
            runtime,
            server,
            handle,
        })
    }

    /// Drains the server and stops the cores, without blocking the executor.
    pub async fn shutdown(self) {
        let Self {
            runtime,
            server,
            handle,
        } = self;
        drop(handle);
        server.shutdown_async(Duration::from_secs(1)).await;
        runtime.shutdown_async().await;
    }
}

/// The HTTP routes, calling the key-value service through `handle`.
pub fn router(handle: Handle) -> axum::Router {
    axum::Router::new()
        .route("/kv/{key}", get(get_value).put(put_value))
        .with_state(handle)
}

/// `GET /kv/{key}`.
async fn get_value(State(handle): State<Handle>, Path(key): Path<String>) -> Response {
    match handle.call(&GET, &Get { key }).await {
        Ok(reply) => match value_bytes(&reply) {
            Some(value) => value.into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        Err(e) => failed(&e),
    }
}

/// `PUT /kv/{key}`: stores the request body.
async fn put_value(State(handle): State<Handle>, Path(key): Path<String>, body: Bytes) -> Response {
    let put = Put {
        key,
        value: body.to_vec(),
    };
    match handle.call(&PUT, &put).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => failed(&e),
    }
}

/// The value of a reply as a view of the reply's buffer (no copy).
fn value_bytes(reply: &OwnedReply<Value>) -> Option<Bytes> {
    let value = reply.value.as_ref()?;
    Some(reply.bytes().slice_ref(value.as_slice()))
}

/// An HTTP answer for a failed call.
fn failed(error: &Error) -> Response {
    let status = match error {
        Error::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Error::Unavailable | Error::Overloaded | Error::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    (status, error.to_string()).into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()?;
    let gateway = Gateway::start(2)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "HTTP on {}, ringrpc key-value service on {}",
        listener.local_addr()?,
        gateway.server.local_addr()
    );
    axum::serve(listener, router(gateway.handle.clone())).await?;
    gateway.shutdown().await;
    Ok(())
}
