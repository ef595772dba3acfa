//! With io_uring refused, `ringrpc serve` and the default bench still run,
//! on the epoll driver, and say so once.
//!
//! Each child process installs a seccomp filter before it runs the binary
//! (in `pre_exec`, so only the child and its threads are filtered) that fails
//! `io_uring_setup` with `EPERM`, as Docker's default profile and
//! `kernel.io_uring_disabled` do. The filter is built by hand (classic BPF
//! through `prctl`), needs no privilege (`PR_SET_NO_NEW_PRIVS` first) and
//! dies with the child: nothing global is changed. `RINGRPC_DRIVER` is
//! removed from the children's environment so the CI run that sets it does
//! not mask the fallback.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

/// `AUDIT_ARCH_*` of the architecture this test runs on (the filter checks
/// the system call's architecture before its number).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// io_uring_setup fails with EPERM; every other call is allowed.
static FILTER: [libc::sock_filter; 6] = [
    op(BPF_LD_W_ABS, 0, 0, ARCH_OFFSET),
    op(BPF_JEQ_K, 0, 3, AUDIT_ARCH),
    op(BPF_LD_W_ABS, 0, 0, NR_OFFSET),
    op(BPF_JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
    op(
        BPF_RET_K,
        0,
        0,
        libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
    ),
    op(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
];

/// The `ringrpc` binary with io_uring blocked in its process.
fn ringrpc_without_io_uring(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringrpc"));
    cmd.args(args).env_remove("RINGRPC_DRIVER");
    // SAFETY: the closure runs in the forked child before exec and only makes
    // two prctl calls (async-signal-safe system calls); `prog` points to the
    // static filter, which the kernel copies.
    unsafe {
        cmd.pre_exec(|| {
            let prog = libc::sock_fprog {
                len: FILTER.len() as u16,
                filter: FILTER.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    std::ptr::from_ref(&prog),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("run ringrpc")
}

/// `ringrpc serve` on one core of 127.0.0.1 for `duration` seconds, with
/// `extra` arguments, io_uring blocked.
fn serve_without_io_uring(duration: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--cores",
        "1",
        "--duration",
        duration,
    ];
    args.extend_from_slice(extra);
    ringrpc_without_io_uring(&args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The stdout and stderr of a run that must have succeeded.
fn succeeded(out: &Output) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn forcing_io_uring_fails_where_the_filter_refuses_it() {
    let out = serve_without_io_uring("0.1", &["--driver", "io_uring"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "io_uring ran despite the filter");
    assert!(stderr.contains("io_uring is unavailable"), "{stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
}

#[test]
fn serve_falls_back_to_epoll_and_says_so_once() {
    let out = serve_without_io_uring("0.3", &[]);
    let (stdout, _) = succeeded(&out);
    assert!(
        stdout.contains("driver epoll (io_uring unavailable: Operation not permitted"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("driver epoll").count(), 1, "{stdout}");
    assert!(stdout.contains("stopped"), "{stdout}");
    eprintln!("{stdout}");
}

#[test]
fn the_default_bench_runs_on_epoll_and_says_so_once() {
    let out = ringrpc_without_io_uring(&[
        "--in-flight",
        "1,16",
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
        "--server-cpu",
        "0",
        "--client-cpu",
        "0",
    ]);
    let (stdout, stderr) = succeeded(&out);
    assert_eq!(
        stderr
            .matches("ringrpc: driver epoll (io_uring unavailable: Operation not permitted")
            .count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("driver io_uring"), "{stderr}");
    // One row per in-flight value (1 and 16), each with calls and no errors.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("ringrpc ") && !l.starts_with("ringrpc bench"))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for row in rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.last(), Some(&"0"), "errors in {row}");
        assert_ne!(cols.get(5), Some(&"0"), "no calls in {row}");
    }
    eprintln!("{stderr}{stdout}");
}
