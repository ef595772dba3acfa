//! Ring setup: ask for the best flags and fall back one step at a time.
//!
//! Tried in order: `SINGLE_ISSUER` + `DEFER_TASKRUN` + `COOP_TASKRUN` +
//! `TASKRUN_FLAG` (Linux 6.1), then without `DEFER_TASKRUN`/`SINGLE_ISSUER`
//! (5.19), then a plain ring (5.11, for `EXT_ARG` waits). Only `EINVAL` (a flag
//! the kernel does not know) moves to the next step; `EPERM`, `ENOSYS` and
//! `ENOMEM` are returned as they are, so the runtime can say io_uring is
//! unavailable. What was granted is returned as [`RingFlags`].

use std::io;
use std::time::Duration;

use io_uring::IoUring;

/// The io_uring setup flags a core's ring runs with (see `docs/design.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RingFlags {
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0): only the core thread submits.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1): completion work runs only when the
    /// core asks for completions.
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN` + `TASKRUN_FLAG` (5.19): completions do not
    /// interrupt the core; a flag says when work is pending.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SQPOLL`: a kernel thread polls the submission queue.
    pub sqpoll: bool,
    /// A provided-buffer ring is registered (5.19): receives are multishot
    /// (6.0) and idle connections hold no receive buffer.
    pub buffer_ring: bool,
}

/// What the runtime builder asks of each ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingConfig {
    pub entries: u32,
    pub coop_taskrun: bool,
    pub defer_taskrun: bool,
    pub sqpoll_idle: Option<Duration>,
    /// Sends of at least this many bytes use `SEND_ZC` (`None`: never).
    pub send_zc: Option<usize>,
}

fn try_build(cfg: &RingConfig, flags: RingFlags) -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    if flags.single_issuer {
        builder.setup_single_issuer();
    }
    if flags.defer_taskrun {
        builder.setup_defer_taskrun();
    }
    if flags.coop_taskrun {
        builder.setup_coop_taskrun().setup_taskrun_flag();
    }
    if let Some(idle) = cfg.sqpoll_idle {
        builder.setup_sqpoll(u32::try_from(idle.as_millis()).unwrap_or(u32::MAX));
    }
    builder
        .setup_cqsize(cfg.entries.saturating_mul(4))
        .build(cfg.entries)
}

/// Builds a ring with the best flags the kernel grants.
pub(crate) fn build(cfg: &RingConfig) -> io::Result<(IoUring, RingFlags)> {
    let sqpoll = cfg.sqpoll_idle.is_some();
    let full = RingFlags {
        single_issuer: cfg.defer_taskrun && !sqpoll,
        defer_taskrun: cfg.defer_taskrun && !sqpoll,
        coop_taskrun: cfg.coop_taskrun,
        sqpoll,
        ..RingFlags::default()
    };
    let steps = [
        full,
        RingFlags {
            single_issuer: false,
            defer_taskrun: false,
            ..full
        },
        RingFlags {
            sqpoll,
            ..RingFlags::default()
        },
    ];
    let mut last = io::Error::from_raw_os_error(libc::EINVAL);
    for flags in steps {
        match try_build(cfg, flags) {
            Ok(ring) if !ring.params().is_feature_ext_arg() => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "io_uring without IORING_FEAT_EXT_ARG (Linux 5.11+ needed)",
                ));
            }
            Ok(ring) => return Ok((ring, flags)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}
