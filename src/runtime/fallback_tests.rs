//! `Driver::Auto` falls back to epoll where io_uring is refused: a test
//! thread installs a seccomp filter on itself (inherited by the core threads
//! it starts, and by nothing else in the process) that fails
//! `io_uring_setup` with `EPERM`, then builds runtimes there.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use super::{Driver, Runtime};
use crate::Error;

/// Records (level, message) of every event.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(Level, String)>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for Log {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        if let Ok(mut log) = self.0.lock() {
            log.push((*event.metadata().level(), message.0));
        }
    }
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Classic BPF over `struct seccomp_data`: `io_uring_setup` fails with
/// `EPERM`, every other call is allowed.
static FILTER: [libc::sock_filter; 6] = [
    op(0x20, 0, 0, 4), // load the architecture
    op(0x15, 0, 3, AUDIT_ARCH),
    op(0x20, 0, 0, 0), // load the system call number
    op(0x15, 0, 1, libc::SYS_io_uring_setup as u32),
    op(0x06, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
    op(0x06, 0, 0, 0x7fff_0000), // SECCOMP_RET_ALLOW
];

/// Refuses io_uring to the calling thread and the threads it starts.
fn refuse_io_uring_here() -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: FILTER.len() as u16,
        filter: FILTER.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with a valid sock_fprog (the kernel copies the static
    // filter); without SECCOMP_FILTER_FLAG_TSYNC it applies to this thread
    // only, and NO_NEW_PRIVS is a per-thread attribute too.
    let failed = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                std::ptr::from_ref(&prog),
            ) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn runtime(driver: Driver) -> Result<Runtime, Error> {
    Runtime::builder()
        .cores(2)
        .pin(false)
        .driver(driver)
        .build_with(None)
}

#[test]
fn auto_runs_epoll_where_io_uring_is_refused_and_warns_once() {
    let log = Log::default();
    let seen = log.clone();
    std::thread::spawn(move || {
        refuse_io_uring_here().expect("seccomp filter");
        let subscriber = tracing_subscriber::registry().with(seen);
        tracing::subscriber::with_default(subscriber, || {
            assert!(matches!(
                runtime(Driver::IoUring),
                Err(Error::IoUringUnavailable(e)) if e.raw_os_error() == Some(libc::EPERM)
            ));
            for _ in 0..2 {
                let rt = runtime(Driver::Auto).expect("auto runtime");
                let info = rt.driver();
                assert_eq!((info.kind, info.requested), (Driver::Epoll, Driver::Auto));
                let why = info.fallback.as_deref().unwrap_or_default();
                assert!(why.contains("not permitted"), "{why}");
                assert_eq!(rt.ring_flags(1), Some(super::RingFlags::default()));
                let cores = rt.block_on(1, || async { super::backend::current() });
                assert_eq!(cores.expect("core 1"), Driver::Epoll);
                assert_eq!(rt.metrics().driver(), Some(Driver::Epoll));
            }
        });
    })
    .join()
    .expect("test thread");
    let log = log.0.lock().expect("log").clone();
    let fallbacks: Vec<_> = log
        .iter()
        .filter(|(_, m)| m.contains("io_uring is unavailable"))
        .collect();
    assert_eq!(fallbacks.len(), 2, "{log:?}");
    assert_eq!(fallbacks[0].0, Level::WARN, "{log:?}");
    assert_eq!(
        fallbacks[1].0,
        Level::DEBUG,
        "the warning is said once: {log:?}"
    );
}
