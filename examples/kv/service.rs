//! The `Kv` service of the kv example: a sharded in-memory store.
//!
//! Each server core owns the keys that `ringrpc::shard_of` gives it and keeps
//! them in its own map (`ServerBuilder::with_state`: no locks, nothing
//! shared); the client routes each key to its core (`ShardedClient`). Shared
//! by `examples/kv/main.rs` and its test, `tests/kv_example.rs`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ringrpc::{
    shard_of, CallOptions, Client, Ctx, Error, Request, Runtime, Server, ServerHandle,
    ShardedClient,
};

/// A key.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct Key {
    /// The key's bytes.
    pub key: String,
}

/// A key and the value to store under it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct Put {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
}

/// A put that borrows its key and value (archives exactly like [`Put`]): the
/// client sends what it holds without building an owned `Put`.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedPut, serialize_bounds(__S: ringrpc::BorrowSerializer))]
pub struct PutRef<'a> {
    /// The key.
    #[rkyv(with = ringrpc::StrAsString, omit_bounds)]
    pub key: &'a str,
    /// The value.
    #[rkyv(with = ringrpc::SliceAsVec, omit_bounds)]
    pub value: &'a [u8],
}

/// A lookup's answer.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct Value {
    /// Whether the key was there.
    pub found: bool,
    /// Its value (empty if not found).
    pub value: Vec<u8>,
    /// The core that answered.
    pub core: u32,
}

/// A store's answer to a put: the value it replaced, if any.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct Stored {
    /// Whether a value was replaced.
    pub replaced: bool,
}

/// The service: two methods, each seeing its call's context.
#[ringrpc::service]
pub trait Kv {
    /// The value stored under a key.
    async fn get(&self, ctx: Ctx, req: Request<Key>) -> Result<Value, String>;
    /// Stores a value under a key.
    async fn put(&self, ctx: Ctx, req: Request<Put>) -> Result<Stored, String>;
}

/// One core's shard of the store.
pub struct Shard {
    core: usize,
    cores: usize,
    map: RefCell<HashMap<String, Vec<u8>>>,
}

/// The implementation: stateless itself, the data is in each core's `Shard`.
pub struct Store;

impl Store {
    /// This core's shard, after checking the key was routed here.
    fn shard<'c>(ctx: &'c Ctx, key: &str) -> Result<&'c Shard, String> {
        let shard = ctx
            .state::<Shard>()
            .ok_or("server built without with_state")?;
        let owner = shard_of(key.as_bytes(), shard.cores);
        if owner != shard.core {
            return Err(format!(
                "key {key:?} belongs to core {owner}, not {}",
                shard.core
            ));
        }
        Ok(shard)
    }
}

impl Kv for Store {
    async fn get(&self, ctx: Ctx, req: Request<Key>) -> Result<Value, String> {
        let shard = Self::shard(&ctx, req.key.as_str())?;
        let value = shard.map.borrow().get(req.key.as_str()).cloned();
        Ok(Value {
            found: value.is_some(),
            value: value.unwrap_or_default(),
            core: ctx.core() as u32,
        })
    }

    async fn put(&self, ctx: Ctx, req: Request<Put>) -> Result<Stored, String> {
        let shard = Self::shard(&ctx, req.key.as_str())?;
        let old = shard
            .map
            .borrow_mut()
            .insert(req.key.to_string(), req.value.to_vec());
        Ok(Stored {
            replaced: old.is_some(),
        })
    }
}

/// Starts the store on every core of `runtime`, one address per core.
pub fn serve(runtime: &Runtime) -> Result<ServerHandle, Error> {
    let cores = runtime.cores();
    Server::builder()
        .insecure_plaintext()
        .with_state(move |core| Shard {
            core,
            cores,
            map: RefCell::default(),
        })
        .add_service(KvService::new(Store))?
        .serve_sharded(runtime, "127.0.0.1:0".parse().expect("address"))
}

/// Puts `n` keys through typed clients routed by key, reads them back, and
/// returns how many landed on each server core.
pub async fn demo(addrs: Vec<SocketAddr>, n: usize) -> Result<Vec<usize>, Error> {
    let builder = Client::builder()
        .insecure_plaintext()
        .deadline(Duration::from_secs(2));
    let sharded = ShardedClient::connect(&builder, &addrs)?;
    for c in sharded.shards() {
        c.wait_connected(Duration::from_secs(2)).await;
    }
    let client_for = |key: &str| KvClient::new(sharded.for_key(key.as_bytes()).clone());
    for i in 0..n {
        let key = format!("key-{i}");
        let value = i.to_le_bytes();
        let stored = if i % 2 == 0 {
            // Borrowed: the key and value go out without an owned copy.
            let put = PutRef {
                key: &key,
                value: &value,
            };
            client_for(&key).put_borrowed(&put).await?
        } else {
            let put = Put {
                key: key.clone(),
                value: value.to_vec(),
            };
            let opts = CallOptions::new().metadata("request-id", i.to_string())?;
            client_for(&key).put_with(&put, &opts).await?
        };
        assert!(!stored.replaced);
    }
    let mut per_core = vec![0; addrs.len()];
    for i in 0..n {
        let key = format!("key-{i}");
        let got = client_for(&key).get(&Key { key: key.clone() }).await?;
        assert!(got.found, "{key} was stored");
        assert_eq!(got.value.as_slice(), i.to_le_bytes().as_slice());
        per_core[got.core.to_native() as usize] += 1;
    }
    let missing = client_for("nope").get(&Key { key: "nope".into() }).await?;
    assert!(!missing.found);
    Ok(per_core)
}
