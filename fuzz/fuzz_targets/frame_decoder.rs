//! Arbitrary bytes through `ringrpc::protocol::decode_frame`, driven like a
//! connection reader, whole and split at arbitrary points; see
//! `ringrpc_fuzz::check_decoder` for the layout of the input and the properties.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringrpc_fuzz::check_decoder(data);
});
