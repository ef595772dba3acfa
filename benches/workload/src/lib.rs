//! What ringrpc's tools measure with, in one place (not part of the library's
//! API, not published):
//!
//! - [`echo`]: the echo workload: one message type, the `Bench.echo` method and
//!   its handlers; used by `ringrpc bench`/`serve`, the `calls` and `peers`
//!   benches and the `echo_server`/`echo_client` examples, so any two of them
//!   talk to each other;
//! - [`cpu`]: CPU time of the benchmark's own threads (from `/proc/self/task`)
//!   and of whole CPUs (from `/proc/stat`);
//! - [`pair`]: the benches' setup, an echo server and a client runtime on two
//!   pinned CPUs;
//! - [`targets`]: the performance targets P1–P5, read at run time from
//!   `benches/targets.txt` by the `peers` bench and `ringrpc bench --compare floor`.

pub mod cpu;
pub mod echo;
pub mod pair;
pub mod targets;
