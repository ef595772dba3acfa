//! Arbitrary bytes (or a script of valid, invalid and damaged frames) on a live
//! ringrpc server connection; see `ringrpc_fuzz::FuzzServer::check_connection`
//! for the layout of the input and the properties. The server (a 1-core
//! runtime with echo, async echo and a validating typed handler) is started
//! once per process and shared by every input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrpc_fuzz::FuzzServer;

fuzz_target!(|data: &[u8]| {
    FuzzServer::shared().check_connection(data);
});
