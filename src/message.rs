//! Typed messages: zero-copy access to rkyv archives in receive buffers.
//!
//! A [`Message`] is any rkyv-serialisable type whose archive can be validated.
//! [`Reply`] (client side) and [`Request`] (server side) own a view of the receive
//! buffer holding the frame and deref to the archived value in place. Invariant:
//! a `Reply`/`Request` is only constructed after `rkyv::access` validated its
//! bytes, so later derefs can skip validation; network bytes are never accessed
//! unchecked before that.

use std::marker::PhantomData;
use std::ops::Deref;

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::rancor::Fallible;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::Allocator;
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, SerializeWith};
use rkyv::{Archive, Place, Portable, Serialize};

use crate::protocol::segment::{self, Segment};
use crate::protocol::{ProtocolError, FRAME_ALIGN};
use crate::runtime::buf::FrameBytes;

/// Appends serialised bytes to a connection's send buffer in place.
///
/// On a connection that sends by reference, a [`Blob`](crate::Blob) of at
/// least 1 KiB is not copied: its bytes become a segment of the send buffer
/// (`protocol::segment`), and [`pos`](rkyv::ser::Positional::pos) counts them
/// as written, so the archive's offsets are those of the stream sent.
#[derive(Debug)]
pub struct OutWriter<'w> {
    out: &'w mut Vec<u8>,
    segments: Option<&'w mut Vec<Segment>>,
    /// Bytes written as segments by this writer.
    by_reference: usize,
}

impl rkyv::ser::Positional for OutWriter<'_> {
    fn pos(&self) -> usize {
        self.out.len() + self.by_reference
    }
}

impl<E> rkyv::ser::Writer<E> for OutWriter<'_> {
    /// Copies `bytes`, unless they are an offered blob sent by reference.
    /// rkyv writes each message in a few small pieces (fields, padding), so
    /// the copy is the whole of this function and the blob case is kept out
    /// of line: inlined, it made every write save and restore the registers
    /// the blob case needs.
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        if bytes.len() >= segment::MIN_LEN && self.write_by_reference(bytes) {
            return Ok(());
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

impl OutWriter<'_> {
    /// Appends `bytes` by reference if this connection sends by reference
    /// and they are the blob being serialised (`blob::take_offer`): a
    /// multiple of 16 becomes a segment, the rest is copied, so the buffer
    /// stays aligned as the stream is (segment.rs). False, with nothing
    /// written, otherwise.
    #[inline(never)]
    fn write_by_reference(&mut self, bytes: &[u8]) -> bool {
        let Some(segments) = self.segments.as_deref_mut() else {
            return false;
        };
        let Some(blob) = crate::blob::take_offer(bytes) else {
            return false;
        };
        let by_reference = bytes.len() & !(FRAME_ALIGN - 1);
        segments.push(Segment {
            at: self.out.len(),
            bytes: blob.slice(..by_reference),
        });
        self.by_reference += by_reference;
        self.out.extend_from_slice(&bytes[by_reference..]);
        true
    }
}

/// Where a payload is written: the send buffer, and the segments list on a
/// connection that sends blobs by reference (`None`: everything is copied).
#[derive(Debug)]
pub(crate) struct Out<'a> {
    pub(crate) bytes: &'a mut Vec<u8>,
    pub(crate) segments: Option<&'a mut Vec<Segment>>,
}

/// The serialiser ringrpc writes messages with (straight into a connection's send buffer).
pub type Serializer<'a, 'w> = HighSerializer<OutWriter<'w>, ArenaHandle<'a>, rancor::Error>;

/// A type that can travel as a request or response.
///
/// Implemented for every type with `#[derive(rkyv::Archive, rkyv::Serialize)]`
/// (and `rkyv::Deserialize` if you want owned copies back).
pub trait Message:
    Archive<Archived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>>
    + for<'a, 'w> Serialize<Serializer<'a, 'w>>
{
}

impl<T> Message for T where
    T: Archive<Archived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>>
        + for<'a, 'w> Serialize<Serializer<'a, 'w>>
{
}

/// Serialises `value` at the end of `out` (which must end 16-byte aligned).
///
/// On error, `out` may hold a partial payload; callers truncate to the frame start.
pub(crate) fn serialize_into<T: Message>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    serialize_out(
        value,
        Out {
            bytes: out,
            segments: None,
        },
    )
}

/// [`serialize_into`], with large blobs sent by reference where `out` allows.
///
/// On error, `out` may hold a partial payload and segments; callers truncate
/// both to the frame start.
pub(crate) fn serialize_out<T: Message>(value: &T, out: Out<'_>) -> Result<(), ProtocolError> {
    let writer = OutWriter {
        out: out.bytes,
        segments: out.segments,
        by_reference: 0,
    };
    ARENA
        .with(|arena| match arena.try_borrow_mut() {
            Ok(mut arena) => rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
                value,
                writer,
                arena.acquire(),
            ),
            // Serialising from inside a serialisation (a custom `Serialize`
            // calling back into ringrpc): rkyv's own arena.
            Err(_) => rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, writer),
        })
        .map(|_| ())
        .map_err(|e| ProtocolError::InvalidPayload(e.to_string()))
}

thread_local! {
    /// Scratch space for serialisers, one per thread, kept between messages:
    /// what rkyv's `to_bytes_in` does with its own thread arena, without taking
    /// it out of and back into a thread-local, trimming it and comparing
    /// capacities around every message (`acquire` already keeps one block, the
    /// largest, as rkyv's does; plain data never uses it).
    static ARENA: std::cell::RefCell<rkyv::ser::allocator::Arena> =
        std::cell::RefCell::new(rkyv::ser::allocator::Arena::new());
}

/// What [`SliceAsVec`] and [`StrAsString`] need from a serializer, as one bound
/// for `#[rkyv(serialize_bounds(__S: ringrpc::BorrowSerializer))]` (see [`SliceAsVec`]).
pub trait BorrowSerializer:
    Fallible<Error: rkyv::rancor::Source> + Allocator + rkyv::ser::Writer
{
}

impl<S> BorrowSerializer for S where
    S: Fallible<Error: rkyv::rancor::Source> + Allocator + rkyv::ser::Writer + ?Sized
{
}

/// An rkyv `with` wrapper that archives a borrowed `&[T]` exactly like a `Vec<T>`.
///
/// It lets a response that borrows its bytes (from the request, a cache, ...)
/// archive as the owned response type of a [`Method`], so a handler registered
/// with [`ServerBuilder::register_responder`](crate::ServerBuilder::register_responder)
/// sends them without first copying them into a `Vec`. The borrowing type names
/// the archived type it must match (`as = ...`); its borrowed fields take
/// `omit_bounds` and the type takes one [`BorrowSerializer`] bound instead (the
/// bounds rkyv would generate for a field with a lifetime keep the compiler from
/// seeing that the archived types match):
///
/// ```
/// use ringrpc::SliceAsVec;
///
/// #[derive(rkyv::Archive, rkyv::Serialize)]
/// struct Blob { id: u64, data: Vec<u8> }
///
/// // Archives as `ArchivedBlob`: the same bytes as a `Blob` with the same fields.
/// #[derive(rkyv::Archive, rkyv::Serialize)]
/// #[rkyv(as = ArchivedBlob, serialize_bounds(__S: ringrpc::BorrowSerializer))]
/// struct BlobRef<'a> {
///     id: u64,
///     #[rkyv(with = SliceAsVec, omit_bounds)]
///     data: &'a [u8],
/// }
///
/// let owned = rkyv::to_bytes::<rkyv::rancor::Error>(&Blob { id: 7, data: vec![1, 2, 3] }).unwrap();
/// let borrowed = rkyv::to_bytes::<rkyv::rancor::Error>(&BlobRef { id: 7, data: &[1, 2, 3] }).unwrap();
/// assert_eq!(owned.as_slice(), borrowed.as_slice());
/// ```
#[derive(Debug)]
pub struct SliceAsVec;

impl<T: Archive> ArchiveWith<&[T]> for SliceAsVec {
    type Archived = ArchivedVec<T::Archived>;
    type Resolver = VecResolver;

    fn resolve_with(field: &&[T], resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(field.len(), resolver, out);
    }
}

impl<T, S> SerializeWith<&[T], S> for SliceAsVec
where
    T: Serialize<S>,
    S: Fallible + Allocator + rkyv::ser::Writer + ?Sized,
{
    fn serialize_with(field: &&[T], serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::serialize_from_slice(field, serializer)
    }
}

/// An rkyv `with` wrapper that archives a borrowed `&str` exactly like a
/// `String` (the text counterpart of [`SliceAsVec`], used the same way).
#[derive(Debug)]
pub struct StrAsString;

impl ArchiveWith<&str> for StrAsString {
    type Archived = ArchivedString;
    type Resolver = StringResolver;

    fn resolve_with(field: &&str, resolver: StringResolver, out: Place<Self::Archived>) {
        ArchivedString::resolve_from_str(field, resolver, out);
    }
}

impl<S> SerializeWith<&str, S> for StrAsString
where
    S: Fallible + ?Sized,
    S::Error: rkyv::rancor::Source,
    str: rkyv::SerializeUnsized<S>,
{
    fn serialize_with(field: &&str, serializer: &mut S) -> Result<StringResolver, S::Error> {
        ArchivedString::serialize_from_str(field, serializer)
    }
}

/// Validates `bytes` as an archived `T` and returns a reference into them.
pub(crate) fn access<T: Message>(bytes: &[u8]) -> Result<&T::Archived, ProtocolError> {
    rkyv::access::<T::Archived, rancor::Error>(bytes)
        .map_err(|e| ProtocolError::InvalidPayload(e.to_string()))
}

/// A validated archived `T` living in a receive buffer.
struct Archived<T> {
    bytes: FrameBytes,
    _type: PhantomData<fn() -> T>,
}

impl<T: Message> Archived<T> {
    fn new(bytes: FrameBytes) -> Result<Self, ProtocolError> {
        access::<T>(&bytes)?;
        Ok(Self {
            bytes,
            _type: PhantomData,
        })
    }

    fn get(&self) -> &T::Archived {
        // SAFETY: `new` validated exactly these bytes as a `T::Archived` with
        // `rkyv::access`, and a FrameBytes view is immutable for its whole life.
        unsafe { rkyv::access_unchecked::<T::Archived>(&self.bytes) }
    }
}

macro_rules! archived_wrapper {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name<T>(Archived<T>);

        impl<T: Message> $name<T> {
            pub(crate) fn new(bytes: FrameBytes) -> Result<Self, ProtocolError> {
                Archived::new(bytes).map(Self)
            }

            /// The raw archived bytes (16-byte aligned).
            pub fn bytes(&self) -> &[u8] {
                &self.0.bytes
            }

            /// Deserialises an owned `T` (allocates; the archived view is usually enough).
            ///
            /// The bytes were validated when the message arrived, so this fails
            /// only if rkyv's deserialiser itself does (a custom `Deserialize`
            /// that refuses the value): [`Error::Decode`](crate::Error::Decode).
            pub fn to_owned(&self) -> Result<T, crate::Error>
            where
                T::Archived: rkyv::Deserialize<T, rancor::Strategy<rkyv::de::Pool, rancor::Error>>,
            {
                rkyv::deserialize::<T, rancor::Error>(self.0.get()).map_err(crate::Error::Decode)
            }
        }

        impl<T: Message> Deref for $name<T> {
            type Target = T::Archived;

            fn deref(&self) -> &T::Archived {
                self.0.get()
            }
        }

        impl<T> std::fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({} bytes)", stringify!($name), self.0.bytes.len())
            }
        }
    };
}

archived_wrapper!(
    /// A call's response, read in place in the connection's receive buffer.
    ///
    /// Holding a `Reply` does not stall the connection: the reader moves on to a
    /// fresh buffer chunk and this one is recycled when the reply is dropped.
    Reply
);

archived_wrapper!(
    /// A request handed to an async handler, read in place in the receive buffer.
    Request
);

/// A typed method: its `"Service.method"` name, wire id, request and response types.
///
/// Declare one `const` per method and share it between client and server:
/// ```
/// # #[derive(rkyv::Archive, rkyv::Serialize)] struct Ping { n: u64 }
/// const PING: ringrpc::Method<Ping, Ping> = ringrpc::Method::new("Health.ping");
/// assert_eq!(PING.name(), "Health.ping");
/// ```
pub struct Method<Req, Resp> {
    name: &'static str,
    id: u32,
    _types: PhantomData<fn(Req) -> Resp>,
}

/// A request type that archives exactly like `Req`: `Req` itself, or a
/// borrowing twin declared with `#[rkyv(as = ArchivedReq)]` and
/// [`SliceAsVec`] / [`StrAsString`] fields, so a caller holding a `&str` or a
/// `&[u8]` sends it without building an owned `Req` first (see
/// [`Client::call_borrowed`](crate::Client::call_borrowed)).
pub trait ArchivesAs<Req: Archive>: Message + Archive<Archived = Req::Archived> {}

impl<Req: Archive, B> ArchivesAs<Req> for B where B: Message + Archive<Archived = Req::Archived> {}

impl<Req, Resp> Method<Req, Resp> {
    /// The same method (name, id, response) with the request type `B`, which
    /// archives like `Req` (see [`ArchivesAs`]).
    pub(crate) fn with_request<B>(&self) -> Method<B, Resp> {
        Method {
            name: self.name,
            id: self.id,
            _types: PhantomData,
        }
    }

    /// Declares a method; the id is derived from the name at compile time.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            id: crate::protocol::method_id(name),
            _types: PhantomData,
        }
    }

    /// The `"Service.method"` name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The wire method id.
    pub const fn id(&self) -> u32 {
        self.id
    }
}

impl<Req, Resp> Clone for Method<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp> Copy for Method<Req, Resp> {}

impl<Req, Resp> std::fmt::Debug for Method<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Method({}, {:#010x})", self.name, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(rkyv::Archive, rkyv::Serialize)]
    struct Owned {
        words: Vec<u32>,
        text: String,
    }

    #[derive(rkyv::Archive, rkyv::Serialize)]
    #[rkyv(as = ArchivedOwned, serialize_bounds(__S: crate::BorrowSerializer))]
    struct Borrowed<'a> {
        #[rkyv(with = SliceAsVec, omit_bounds)]
        words: &'a [u32],
        #[rkyv(with = StrAsString, omit_bounds)]
        text: &'a str,
    }

    fn bytes_of<T: for<'a, 'w> Serialize<Serializer<'a, 'w>>>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(
            value,
            OutWriter {
                out: &mut out,
                segments: None,
                by_reference: 0,
            },
        )
        .expect("serialise");
        out
    }

    #[test]
    fn borrowed_fields_archive_byte_for_byte_like_owned_ones() {
        // Short text is stored inline in an ArchivedString, long text out of line.
        for (n, text) in [(0, ""), (3, "short"), (1000, &"x".repeat(300)[..])] {
            let words: Vec<u32> = (0..n).map(|i| i * 7 + 1).collect();
            let owned = Owned {
                words: words.clone(),
                text: text.to_string(),
            };
            let borrowed = Borrowed {
                words: &words,
                text,
            };
            let (a, b) = (bytes_of(&owned), bytes_of(&borrowed));
            assert_eq!(a, b, "{n} words, {} bytes of text", text.len());
            let mut aligned = rkyv::util::AlignedVec::<16>::new();
            aligned.extend_from_slice(&b);
            let archived = rkyv::access::<ArchivedOwned, rancor::Error>(&aligned).expect("valid");
            assert_eq!(archived.words.len(), words.len());
            assert_eq!(archived.text.as_str(), text);
        }
    }
}
