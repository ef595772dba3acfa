//! Typed application errors: a handler fails with an rkyv value instead of
//! text, and the caller gets that value back.
//!
//! A handler's error type is any [`HandlerError`]: every `Display` type (its
//! text travels, the caller sees [`Error::Remote`] with code `Application`)
//! and [`Typed<E>`] for an rkyv type `E` (its archive travels in an Error
//! frame with the `TYPED` flag, the caller sees [`Error::Application`] and
//! decodes it with [`AppError::decode`] or reads it in place with
//! [`AppError::access`]). Invariant: a typed error's bytes are validated on
//! every access, like every other network input.

use std::fmt::Display;

use rkyv::util::AlignedVec;

use crate::message::{access, serialize_into, Message};
use crate::Error;

/// A handler error that travels as a typed value (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typed<E>(pub E);

/// What an error from a handler turns into on the wire.
#[doc(hidden)]
#[derive(Debug)]
pub enum ErrorPayload {
    /// A text message (an `Application` Error frame).
    Text(String),
    /// An rkyv archive (an Error frame with the `TYPED` flag).
    Typed(Vec<u8>),
}

/// An error type a handler may return: any `Display` type, or [`Typed`].
pub trait HandlerError {
    /// The wire form of the error.
    #[doc(hidden)]
    fn error_payload(&self) -> ErrorPayload;
}

impl<E: Display> HandlerError for E {
    fn error_payload(&self) -> ErrorPayload {
        ErrorPayload::Text(self.to_string())
    }
}

impl<E: Message> HandlerError for Typed<E> {
    fn error_payload(&self) -> ErrorPayload {
        let mut out = Vec::new();
        match serialize_into(&self.0, &mut out) {
            Ok(()) => ErrorPayload::Typed(out),
            Err(e) => ErrorPayload::Text(format!("typed error not encoded: {e}")),
        }
    }
}

/// A typed application error received from a server (see the module docs).
#[derive(Clone)]
pub struct AppError {
    bytes: AlignedVec<16>,
}

impl AppError {
    /// Copies the archive out of the receive buffer (errors are rare; the
    /// copy keeps `Error` owned and `Send`).
    pub(crate) fn new(bytes: &[u8]) -> Self {
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        Self { bytes: aligned }
    }

    /// The error, validated and read in place as `E`'s archive.
    pub fn access<E: Message>(&self) -> Result<&E::Archived, Error> {
        Ok(access::<E>(&self.bytes)?)
    }

    /// The error, validated and deserialised into an owned `E`.
    pub fn decode<E: Message>(&self) -> Result<E, Error>
    where
        E::Archived:
            rkyv::Deserialize<E, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
    {
        let archived = self.access::<E>()?;
        rkyv::deserialize::<E, rkyv::rancor::Error>(archived).map_err(|e| {
            Error::Protocol(crate::protocol::ProtocolError::InvalidPayload(
                e.to_string(),
            ))
        })
    }

    /// The archive's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AppError({} bytes)", self.bytes.len())
    }
}

impl Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "typed application error ({} bytes)", self.bytes.len())
    }
}
