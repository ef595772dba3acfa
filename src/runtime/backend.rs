//! Which I/O driver a core runs, how it is chosen, and the per-core dispatch
//! to it.
//!
//! Two drivers sit behind `runtime::io`: io_uring (`driver`, completion-based)
//! and epoll (`epoll`, readiness-based, on `mio`). A runtime picks one at
//! start-up ([`Driver`]): `Auto` (the default) tries io_uring with the
//! configured flags and falls back to epoll when the kernel refuses to set up
//! a ring (`EPERM`: seccomp or `kernel.io_uring_disabled`; `ENOSYS`: no
//! io_uring at all; `EINVAL`: setup arguments it does not know even after the
//! flag fallback; `EACCES`: an LSM such as SELinux denied it; a ring without
//! `EXT_ARG`: a kernel older than 5.11), logging
//! once which driver runs and why. The environment variable
//! [`DRIVER_ENV`] (`RINGRPC_DRIVER=auto|io_uring|epoll`) overrides what the
//! program asked for, so an operator can force a driver without a rebuild.
//!
//! Invariants: every core of a runtime runs the same driver; a core's driver
//! is fixed when its thread starts and recorded in a thread-local flag, so the
//! dispatch in `runtime::io` and the executor is one predictable branch per
//! operation (no trait object, no allocation).

use std::cell::Cell;
use std::io;
use std::time::Duration;

use super::driver;
use super::epoll;
use crate::Error;

/// The environment variable that overrides [`RuntimeBuilder::driver`](super::RuntimeBuilder::driver):
/// `auto`, `io_uring` (also `io-uring`, `uring`) or `epoll` (case-insensitive).
pub const DRIVER_ENV: &str = "RINGRPC_DRIVER";

/// The I/O driver a runtime's cores run (see `docs/design.md`, "Drivers").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Driver {
    /// io_uring when the kernel allows it, epoll otherwise (the default).
    #[default]
    Auto,
    /// io_uring only: the runtime fails to start with
    /// [`Error::IoUringUnavailable`] where it is refused.
    IoUring,
    /// epoll (through `mio`) only: readiness-based reads and writes, for
    /// hosts that refuse io_uring or to compare the two.
    Epoll,
}

impl Driver {
    /// The name used by [`DRIVER_ENV`], the CLI's `--driver` and the
    /// `ringrpc_driver{kind=...}` gauge: `auto`, `io_uring` or `epoll`.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Auto => "auto",
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Driver {
    type Err = Error;

    /// Parses `auto`, `io_uring` (`io-uring`, `iouring`, `uring`) or `epoll`,
    /// case-insensitive; anything else is an [`Error::Config`].
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Driver::Auto),
            "io_uring" | "io-uring" | "iouring" | "uring" => Ok(Driver::IoUring),
            "epoll" | "mio" => Ok(Driver::Epoll),
            other => Err(Error::Config(format!(
                "driver {other:?}: expected auto, io_uring or epoll"
            ))),
        }
    }
}

/// Which driver a runtime runs and why (see [`Runtime::driver`](super::Runtime::driver)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverInfo {
    /// The driver every core runs: [`Driver::IoUring`] or [`Driver::Epoll`]
    /// (never `Auto`).
    pub kind: Driver,
    /// What was asked for: the builder's setting, or [`DRIVER_ENV`] when set.
    pub requested: Driver,
    /// Why `Auto` fell back to epoll (the io_uring setup error), if it did.
    pub fallback: Option<String>,
}

/// The driver to start with: `env` (the value of [`DRIVER_ENV`], if set)
/// overrides `asked`.
pub(crate) fn requested(asked: Driver, env: Option<&str>) -> Result<Driver, Error> {
    match env {
        Some(value) => value.parse().map_err(|_| {
            Error::Config(format!(
                "{DRIVER_ENV}={value:?}: expected auto, io_uring or epoll"
            ))
        }),
        None => Ok(asked),
    }
}

/// Whether an io_uring setup error means "io_uring is not available here"
/// (so `Auto` runs epoll) rather than a resource problem worth reporting
/// (`ENOMEM`, `EMFILE`...).
pub(crate) fn falls_back(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::ENOSYS | libc::EINVAL | libc::EACCES)
    ) || e.kind() == io::ErrorKind::Unsupported
}

/// Logs (once per process, as a warning; later runtimes at debug level) that
/// io_uring is refused here and why, so the epoll driver runs.
pub(crate) fn warn_fallback(e: &io::Error) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::debug!(error = %e, "io_uring is unavailable; this runtime runs on epoll too");
    } else {
        tracing::warn!(
            error = %e,
            "io_uring is unavailable here; ringrpc runs on the epoll driver"
        );
    }
}

thread_local! {
    /// This core runs the epoll driver (set once, when the core starts).
    static EPOLL: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling core runs the epoll driver.
#[inline]
pub(crate) fn is_epoll() -> bool {
    EPOLL.with(Cell::get)
}

/// The driver the calling core runs ([`Driver::IoUring`] off a core).
pub(crate) fn current() -> Driver {
    if is_epoll() {
        Driver::Epoll
    } else {
        Driver::IoUring
    }
}

/// Marks the calling thread as a core of `kind` (io_uring or epoll).
pub(crate) fn set_current(kind: Driver) {
    EPOLL.with(|e| e.set(kind == Driver::Epoll));
}

/// One scheduler turn's I/O: see `driver::turn` (io_uring) and
/// `epoll::turn`.
pub(crate) fn turn(wait: Option<Option<Duration>>) -> io::Result<()> {
    if is_epoll() {
        epoll::turn(wait)
    } else {
        driver::turn(wait)
    }
}

/// Whether entering the kernel now would only cost a system call: nothing is
/// queued to submit and no completion is waiting to be collected (io_uring).
/// An epoll core has nothing queued; its readiness is collected at the turn's
/// end.
pub(crate) fn quiet() -> bool {
    is_epoll() || driver::quiet()
}

/// Operations the kernel still holds memory of (none under epoll: a
/// readiness wait lends the kernel nothing).
pub(crate) fn kernel_held() -> usize {
    if is_epoll() {
        0
    } else {
        driver::kernel_held()
    }
}

/// Operations not completed yet (for the exit report).
pub(crate) fn in_flight() -> usize {
    if is_epoll() {
        0
    } else {
        driver::in_flight()
    }
}

/// Cancels every operation in flight (io_uring only).
pub(crate) fn cancel_all() {
    if !is_epoll() {
        driver::cancel_all();
    }
}

/// Removes this core's driver.
pub(crate) fn uninstall() {
    if is_epoll() {
        epoll::uninstall();
    } else {
        driver::uninstall();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_the_program_and_bad_values_are_config_errors() {
        assert_eq!(requested(Driver::Auto, None).unwrap(), Driver::Auto);
        assert_eq!(requested(Driver::IoUring, None).unwrap(), Driver::IoUring);
        assert_eq!(
            requested(Driver::IoUring, Some("epoll")).unwrap(),
            Driver::Epoll
        );
        assert_eq!(
            requested(Driver::Epoll, Some(" IO_URING ")).unwrap(),
            Driver::IoUring
        );
        assert_eq!(
            requested(Driver::Epoll, Some("auto")).unwrap(),
            Driver::Auto
        );
        assert!(matches!(
            requested(Driver::Auto, Some("kqueue")),
            Err(Error::Config(why)) if why.contains("RINGRPC_DRIVER")
        ));
        for d in [Driver::Auto, Driver::IoUring, Driver::Epoll] {
            assert_eq!(d.name().parse::<Driver>().unwrap(), d);
        }
    }

    #[test]
    fn only_unavailable_io_uring_falls_back() {
        for errno in [libc::EPERM, libc::ENOSYS, libc::EINVAL, libc::EACCES] {
            assert!(falls_back(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        assert!(falls_back(&io::Error::new(
            io::ErrorKind::Unsupported,
            "no EXT_ARG"
        )));
        for errno in [libc::ENOMEM, libc::EMFILE, libc::EFAULT] {
            assert!(!falls_back(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
    }
}

/// Both drivers through the seam, whatever `RINGRPC_DRIVER` says (the
/// builder's environment lookup is bypassed).
#[cfg(test)]
mod seam_tests {
    use std::time::{Duration, Instant};

    use super::Driver;
    use crate::runtime::buf::RecvBuf;
    use crate::runtime::{io, Runtime};

    fn runtime(driver: Driver) -> Runtime {
        Runtime::builder()
            .cores(1)
            .pin(false)
            .driver(driver)
            .build_with(None)
            .expect("runtime")
    }

    /// A megabyte each way between an echo server on `server` and a client
    /// on `client`: full send buffers, partial reads and writes, end of stream.
    fn echo_a_megabyte(server: Driver, client: Driver) {
        let (srv, cli) = (runtime(server), runtime(client));
        assert_eq!(srv.driver().kind, server);
        assert_eq!(cli.driver().kind, client);
        let std = io::bind_reuseport("127.0.0.1:0".parse().unwrap()).expect("bind");
        let addr = std.local_addr().expect("addr");
        let served = srv
            .spawn_on(0, move || async move {
                let listener = io::listener_from_std(std).expect("listener");
                let (stream, _) = io::accept(&listener).await.expect("accept");
                let mut buf = RecvBuf::new(64 << 10);
                let mut echoed = 0;
                loop {
                    let n = io::read(&stream, &mut buf).await.expect("read");
                    if n == 0 {
                        return echoed;
                    }
                    let bytes = buf.unconsumed().to_vec();
                    buf.consume(bytes.len());
                    echoed += bytes.len();
                    let (sent, _) = io::write_all(&stream, bytes).await;
                    sent.expect("write");
                }
            })
            .expect("spawn");
        let sent: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let expected = sent.clone();
        let received = cli
            .block_on(0, move || async move {
                let stream = io::connect(addr).await.expect("connect");
                let writer = io::spawn(async move {
                    let (res, _) = io::write_all(&stream, sent).await;
                    res.expect("write");
                    stream
                });
                let stream = writer.await.expect("writer");
                let mut buf = RecvBuf::new(64 << 10);
                let mut got = Vec::new();
                while got.len() < 1 << 20 {
                    let n = io::read(&stream, &mut buf).await.expect("read");
                    assert!(n > 0, "early end of stream");
                    got.extend_from_slice(buf.unconsumed());
                    let all = buf.unconsumed().len();
                    buf.consume(all);
                }
                io::shutdown(&stream);
                got
            })
            .expect("client");
        assert!(received == expected, "echo differs");
        assert_eq!(served.join().expect("server"), 1 << 20);
    }

    #[test]
    fn epoll_and_io_uring_cores_talk_to_each_other() {
        echo_a_megabyte(Driver::Epoll, Driver::Epoll);
        echo_a_megabyte(Driver::Epoll, Driver::IoUring);
        echo_a_megabyte(Driver::IoUring, Driver::Epoll);
    }

    #[test]
    fn an_epoll_core_runs_timers_and_jobs_from_other_threads() {
        let rt = runtime(Driver::Epoll);
        assert_eq!(rt.ring_flags(0), Some(crate::RingFlags::default()));
        assert!(format!("{rt:?}").contains("Epoll"));
        for _ in 0..3 {
            let slept = rt
                .block_on(0, || async {
                    let t = Instant::now();
                    io::sleep(Duration::from_millis(5)).await;
                    t.elapsed()
                })
                .expect("sleep");
            assert!(slept >= Duration::from_millis(5), "{slept:?}");
            assert!(slept < Duration::from_secs(1), "{slept:?}");
        }
        let metrics = rt.metrics();
        assert_eq!(metrics.driver(), Some(Driver::Epoll));
        let text = metrics.to_prometheus();
        assert!(text.contains("ringrpc_driver{kind=\"epoll\"} 1"), "{text}");
        assert!(
            text.contains("ringrpc_driver{kind=\"io_uring\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn a_connect_to_a_closed_port_fails_on_epoll() {
        let rt = runtime(Driver::Epoll);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let res = rt
            .block_on(0, move || async move { io::connect(addr).await.map(drop) })
            .expect("core");
        assert!(res.is_err());
    }
}
