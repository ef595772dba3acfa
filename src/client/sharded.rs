//! Routing a key to the server core that owns it: [`ShardedClient`].
//!
//! A server started with
//! [`ServerBuilder::serve_sharded`](crate::ServerBuilder::serve_sharded)
//! listens on one address per core, and each core keeps its own state
//! ([`ServerBuilder::with_state`](crate::ServerBuilder::with_state)). A
//! `ShardedClient` holds one [`Client`] per such address and sends the calls
//! for a key to the core that owns it. Invariant: [`shard_of`] is a fixed
//! function of the key bytes and the shard count (CRC-32 modulo the count),
//! the same on every client and in the server's handlers, so a key always
//! meets the same core's state.

use std::net::SocketAddr;

use super::{Client, ClientBuilder};
use crate::Error;

/// The shard (server core index) that owns `key` among `shards`.
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    crate::protocol::header::crc32(key) as usize % shards.max(1)
}

/// One client per server shard, choosing the shard by key (see the module docs).
#[derive(Debug, Clone)]
pub struct ShardedClient {
    shards: Vec<Client>,
}

impl ShardedClient {
    /// Connects one client (with `builder`'s settings) to each address, in
    /// order: pass [`ServerHandle::shard_addrs`](crate::ServerHandle::shard_addrs).
    /// Must run on a ringrpc core, like [`ClientBuilder::connect`].
    pub fn connect(builder: &ClientBuilder, addrs: &[SocketAddr]) -> Result<Self, Error> {
        if addrs.is_empty() {
            return Err(Error::Config(
                "a sharded client needs at least one address".into(),
            ));
        }
        let shards = addrs
            .iter()
            .map(|&addr| builder.connect(addr))
            .collect::<Result<_, _>>()?;
        Ok(Self { shards })
    }

    /// The client of the shard that owns `key`.
    pub fn for_key(&self, key: &[u8]) -> &Client {
        &self.shards[shard_of(key, self.shards.len())]
    }

    /// Every shard's client, in shard order.
    pub fn shards(&self) -> &[Client] {
        &self.shards
    }
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn the_shard_is_the_keys_crc32_modulo_the_shards() {
        // CRC-32/IEEE of "123456789" is 0xCBF43926: a key's shard must not
        // change between versions, or keys would move between cores.
        assert_eq!(shard_of(b"123456789", 7), 0xCBF4_3926 % 7);
        assert_eq!(shard_of(b"123456789", 4), 2);
        assert_eq!(shard_of(b"anything", 1), 0);
        assert_eq!(shard_of(b"anything", 0), 0, "no shards: shard 0");
    }
}
