//! [`Blob`]: bytes in a message that are sent without being copied first.
//!
//! A `Blob` field archives exactly like a `Vec<u8>` (the peer reads an
//! `ArchivedVec<u8>`, in place as always), so a method declared with
//! `Vec<u8>` fields can be called with a twin type that has `Blob` fields
//! instead (`#[rkyv(as = ...)]`, see [`ArchivesAs`](crate::ArchivesAs)).
//! What differs is the send: on a plaintext connection a blob of at least
//! 1 KiB in a request (or in a response) is not copied into the send buffer;
//! the frame refers to the blob's bytes (a reference count, `bytes::Bytes`),
//! and the kernel copies them once, straight from the sender's memory into
//! the socket.
//!
//! How the serialiser learns that a write is a blob's bytes: rkyv's
//! `Serialize` is generic over the serialiser, so [`Blob`]'s impl cannot call
//! ringrpc's writer directly. It *offers* its bytes in a per-thread slot for
//! the duration of its own serialisation; ringrpc's writer takes the offer
//! when the next write is exactly those bytes. Any other serialiser ignores
//! the offer and copies, so a `Blob` serialises correctly everywhere.
//!
//! Invariant: the slot holds a pointer to the `Bytes` of a `Blob` that is
//! borrowed for the whole time the pointer is there (the guard clears it
//! before `serialize` returns, also on error or unwind).

use std::cell::Cell;
use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;

use bytes::Bytes;
use rkyv::rancor::Fallible;
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Deserialize, Place, Serialize};

/// Bytes sent without a copy: a `bytes::Bytes` that archives as a `Vec<u8>`.
///
/// Put one in a request or response type for payloads of a kilobyte or more
/// (file chunks, tensors, opaque values): on a plaintext connection the
/// frame refers to the blob's bytes instead of copying them into the send
/// buffer, and keeps them alive (a reference count) until they are sent, so
/// the sender may drop or reuse its `Blob` as soon as the call is made (or
/// the response handed to the `Responder`). Smaller blobs, TLS connections
/// (the record layer encrypts into its own buffer anyway) and calls through
/// a `Handle` (serialised on the caller's thread) copy, as a `Vec<u8>` does.
/// The receiver sees the same bytes either way, as an `ArchivedVec<u8>`
/// read in place.
///
/// Cloning a `Blob` is cheap (a reference count). Making one from a `Vec`
/// takes the vector without copying; the first send of it allocates the
/// shared count once (`bytes`' promotion), later sends of the same blob or
/// its clones allocate nothing.
///
/// ```
/// use ringrpc::{Blob, Client, Error, Method};
///
/// // The method's own types: what the server reads (`Vec<u8>` archives the same).
/// #[derive(rkyv::Archive, rkyv::Serialize)]
/// struct Put {
///     key: String,
///     value: Vec<u8>,
/// }
///
/// // The caller's twin, archiving as a `Put`, with the value in a `Blob`.
/// #[derive(rkyv::Archive, rkyv::Serialize)]
/// #[rkyv(as = ArchivedPut)]
/// struct PutBlob {
///     key: String,
///     value: Blob,
/// }
///
/// const PUT: Method<Put, u64> = Method::new("Store.put");
///
/// async fn put(client: &Client, key: &str, value: &Blob) -> Result<u64, Error> {
///     let req = PutBlob { key: key.into(), value: value.clone() };
///     let reply = client.call_borrowed(&PUT, &req).await?;
///     Ok(reply.to_native())
/// }
///
/// let value = Blob::from(vec![7u8; 64 << 10]);
/// assert_eq!((value.len(), value[0]), (64 << 10, 7));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Blob(Bytes);

impl Blob {
    /// A blob of `bytes` (no copy).
    pub fn new(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// A blob of static bytes (no copy, no allocation, ever).
    pub const fn from_static(bytes: &'static [u8]) -> Self {
        Self(Bytes::from_static(bytes))
    }

    /// A blob holding a copy of `bytes`.
    pub fn copy_from_slice(bytes: &[u8]) -> Self {
        Self(Bytes::copy_from_slice(bytes))
    }

    /// The bytes, as the `bytes` crate's shared buffer.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The blob's `Bytes`.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for Blob {
    fn from(bytes: Bytes) -> Self {
        Self(bytes)
    }
}

impl From<Vec<u8>> for Blob {
    fn from(bytes: Vec<u8>) -> Self {
        Self(Bytes::from(bytes))
    }
}

impl From<Blob> for Bytes {
    fn from(blob: Blob) -> Self {
        blob.0
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Archive for Blob {
    type Archived = ArchivedVec<u8>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<ArchivedVec<u8>>) {
        ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<S: Fallible + Allocator + Writer + ?Sized> Serialize<S> for Blob {
    fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
        let _offer = Offer::new(&self.0);
        ArchivedVec::<u8>::serialize_from_slice(&self.0, serializer)
    }
}

impl<D: Fallible + ?Sized> Deserialize<Blob, D> for ArchivedVec<u8> {
    fn deserialize(&self, _: &mut D) -> Result<Blob, D::Error> {
        Ok(Blob::copy_from_slice(self.as_slice()))
    }
}

thread_local! {
    /// The blob being serialised on this thread, if any (see the module docs).
    static OFFER: Cell<Option<NonNull<Bytes>>> = const { Cell::new(None) };
}

/// Offers a blob's bytes to ringrpc's writer until dropped.
struct Offer;

impl Offer {
    fn new(bytes: &Bytes) -> Self {
        OFFER.set(Some(NonNull::from(bytes)));
        Self
    }
}

impl Drop for Offer {
    fn drop(&mut self) {
        OFFER.set(None);
    }
}

/// The offered blob's bytes (a new reference to them), if `written` is
/// exactly those bytes; the offer is withdrawn either way.
pub(crate) fn take_offer(written: &[u8]) -> Option<Bytes> {
    let offered = OFFER.take()?;
    // SAFETY: an offer is only in the slot while `Blob::serialize` runs with
    // the blob borrowed (its guard clears the slot before returning), and
    // this is called from inside that serialisation's writes, on the same
    // thread: the `Bytes` it points to is alive and not mutably borrowed.
    let bytes = unsafe { offered.as_ref() };
    let same = bytes.as_ptr() == written.as_ptr() && bytes.len() == written.len();
    same.then(|| bytes.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    struct WithVec {
        id: u64,
        payload: Vec<u8>,
    }

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    #[rkyv(as = ArchivedWithVec)]
    struct WithBlob {
        id: u64,
        payload: Blob,
    }

    #[test]
    fn a_blob_archives_as_a_vec_through_any_serialiser() {
        let blob = WithBlob {
            id: 7,
            payload: Blob::from(vec![3u8; 3000]),
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&blob).unwrap();
        let archived = rkyv::access::<ArchivedWithVec, rkyv::rancor::Error>(&bytes).unwrap();
        let back: WithVec = rkyv::deserialize::<_, rkyv::rancor::Error>(archived).unwrap();
        assert_eq!(
            back,
            WithVec {
                id: 7,
                payload: vec![3; 3000]
            }
        );
        let vec = rkyv::to_bytes::<rkyv::rancor::Error>(&back).unwrap();
        assert_eq!(
            &bytes[..],
            &vec[..],
            "byte for byte what a Vec<u8> archives to"
        );
        let owned: Blob = rkyv::deserialize::<_, rkyv::rancor::Error>(&archived.payload).unwrap();
        assert_eq!(&owned[..], &[3; 3000][..]);
        assert!(OFFER.get().is_none(), "the offer is withdrawn");
    }

    #[test]
    fn only_the_offered_bytes_are_taken() {
        let bytes = Bytes::from(vec![1u8; 2048]);
        let other = vec![1u8; 2048];
        {
            let _offer = Offer::new(&bytes);
            assert!(take_offer(&other).is_none(), "same content, other memory");
            assert!(take_offer(&bytes).is_none(), "withdrawn by the first write");
        }
        {
            let _offer = Offer::new(&bytes);
            assert!(
                take_offer(&bytes[..1024]).is_none(),
                "a part is not the blob"
            );
        }
        let _offer = Offer::new(&bytes);
        let taken = take_offer(&bytes).expect("the blob's own bytes");
        assert_eq!(taken.as_ptr(), bytes.as_ptr(), "a reference, not a copy");
    }
}
