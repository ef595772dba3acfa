//! `cargo bench -p ringrpc-peers --bench peers`: the same echo workload against the raw-socket
//! floors, ringrpc (on io_uring, and on epoll as `ringrpc-epoll`), tarpc and
//! tonic, in one run, printed side by side.
//!
//! A hand-written closed-loop harness (criterion's per-iteration model does not
//! give per-call latency percentiles under concurrency): for each cell of the
//! matrix and each peer, a fresh server (pinned to CPU 0) and client (pinned to
//! CPU 1) run a warmup, then a measured window; latencies go into an HDR
//! histogram. Each (cell, peer) is measured `--rounds` times, interleaved
//! across peers, and the round with the median calls/s is reported.
//!
//! Options (after `--`): `--secs S` (measured seconds, default 3),
//! `--warmup S` (default 1), `--rounds N` (default 5), `--server-cpu N`,
//! `--client-cpu N`, `--cell IN_FLIGHTxPAYLOAD` (repeatable, e.g.
//! `--cell 128x64`; default: the three cells of the matrix), `--targets FILE`
//! (the P1–P5 targets checked at the end; default: `$RINGRPC_TARGETS`, else
//! `benches/targets.txt`), `--congestion NAME` (run every peer in a network
//! namespace of the bench's own whose TCP congestion control is `NAME`, e.g.
//! `cubic`, leaving the host's alone; needs root: under the common `bbr` the
//! kernel paces the pipelined floors, which then switch between two speeds
//! ~2x apart from round to round; if the host does not allow `NAME` in a
//! namespace, it is allowed only while the namespace takes it), and words
//! that filter peers by name (e.g. `ringrpc tonic`; `=NAME` selects that
//! peer only, e.g. `=ringrpc =ringrpc-tls =tonic =tonic-tls` for the cost of
//! TLS).
//! Results are also written to `target/peers/peers.csv` (reported rounds) and
//! `target/peers/peers-rounds.csv` (every round).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringrpc_peers::{RunFn, Spec, Tally, Window, PEERS};
use ringrpc_workload::cpu::{sleep_until, CpuBusy, Naming, ThreadSample};
use ringrpc_workload::targets::{self, Cell, Metric, Target};

/// The matrix: (calls in flight, payload bytes).
const CELLS: &[(usize, usize)] = &[(1, 64), (128, 64), (128, 4096)];

/// Every peer names its server threads `*srv*` and its client threads `*cli*`.
const NAMING: Naming = Naming::Tags {
    server: "srv",
    client: "cli",
};

#[derive(Debug, Clone)]
struct Options {
    secs: f64,
    warmup: f64,
    rounds: usize,
    server_cpu: usize,
    client_cpu: usize,
    filters: Vec<String>,
    /// Cells to run (default: all of [`CELLS`]).
    cells: Vec<(usize, usize)>,
    /// The targets file.
    targets: PathBuf,
    /// Run in a network namespace of its own with this TCP congestion control.
    congestion: Option<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        secs: 3.0,
        warmup: 1.0,
        rounds: 5,
        server_cpu: 0,
        client_cpu: 1,
        filters: Vec::new(),
        cells: Vec::new(),
        targets: targets::default_path(),
        congestion: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            "--secs" => {
                o.secs = value("--secs")?
                    .parse()
                    .map_err(|e| format!("--secs: {e}"))?
            }
            "--warmup" => {
                o.warmup = value("--warmup")?
                    .parse()
                    .map_err(|e| format!("--warmup: {e}"))?
            }
            "--rounds" => {
                o.rounds = value("--rounds")?
                    .parse()
                    .map_err(|e| format!("--rounds: {e}"))?
            }
            "--server-cpu" => {
                o.server_cpu = value("--server-cpu")?
                    .parse()
                    .map_err(|e| format!("--server-cpu: {e}"))?
            }
            "--client-cpu" => {
                o.client_cpu = value("--client-cpu")?
                    .parse()
                    .map_err(|e| format!("--client-cpu: {e}"))?
            }
            "--cell" => {
                let v = value("--cell")?;
                let cell = v
                    .split_once('x')
                    .and_then(|(f, p)| Some((f.parse().ok()?, p.parse().ok()?)))
                    .ok_or_else(|| {
                        format!("--cell {v}: expected IN_FLIGHTxPAYLOAD, e.g. 128x64")
                    })?;
                o.cells.push(cell);
            }
            "--targets" => o.targets = PathBuf::from(value("--targets")?),
            "--congestion" => o.congestion = Some(value("--congestion")?),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            word => o.filters.push(word.to_string()),
        }
    }
    let bad = |v: f64, min: f64| !v.is_finite() || v < min;
    if o.rounds == 0 || bad(o.secs, 1e-3) || bad(o.warmup, 0.0) {
        return Err("--rounds must be >= 1, --secs > 0, --warmup >= 0".into());
    }
    if o.cells.is_empty() {
        o.cells = CELLS.to_vec();
    }
    Ok(o)
}

/// CPU use during a window, as shares of one CPU (1.0 = one CPU fully busy).
#[derive(Debug, Clone, Copy, Default)]
struct CpuShares {
    /// Server-side and client-side threads of the peer.
    threads: Option<(f64, f64)>,
    /// The whole server and client CPUs (every process on them).
    busy: Option<(f64, f64)>,
}

/// Samples thread and CPU times from `window.start` until `window.end`, every
/// 100 ms, and returns the shares between the first sample and the last one in
/// which every peer thread was still alive (threads exit right after the window,
/// and this sampler may run late on a busy machine).
fn sample_window(window: Window, opts: &Options) -> CpuShares {
    sleep_until(window.start);
    let (t0, threads0, busy0) = (Instant::now(), ThreadSample::now(NAMING), CpuBusy::now());
    let mut shares = CpuShares::default();
    loop {
        let next = (Instant::now() + Duration::from_millis(100)).min(window.end);
        sleep_until(next);
        let (t, threads, busy) = (Instant::now(), ThreadSample::now(NAMING), CpuBusy::now());
        let secs = (t - t0).as_secs_f64();
        let used = threads.since(&threads0);
        // A peer thread that exited took its time since the first sample with it.
        if used.exited == 0 {
            let s = used.shares();
            shares.threads = Some((s.server.unwrap_or(0.0), s.client.unwrap_or(0.0)));
            let share = |cpu| busy.since(&busy0, cpu).map(|d| d.as_secs_f64() / secs);
            shares.busy = share(opts.server_cpu).zip(share(opts.client_cpu));
        }
        if next >= window.end {
            return shares;
        }
    }
}

/// One measured round of one peer in one cell.
#[derive(Debug, Clone)]
struct Measured {
    calls_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    server_cpu_us: Option<f64>,
    client_cpu_us: Option<f64>,
    /// Busy share of the server and client CPUs during the window (all processes).
    busy: Option<(f64, f64)>,
    errors: u64,
    first_error: Option<String>,
}

impl Measured {
    fn new(tally: &Tally, window: &Window, cpu: CpuShares) -> Self {
        let calls_per_s = tally.calls() as f64 / window.duration().as_secs_f64();
        // CPU share / (calls per second) = CPU seconds per call.
        let per_call = |share: f64| (calls_per_s > 0.0).then(|| share * 1e6 / calls_per_s);
        let (server_cpu_us, client_cpu_us) = cpu
            .threads
            .map_or((None, None), |(s, c)| (per_call(s), per_call(c)));
        Self {
            calls_per_s,
            p50_us: tally.quantile_us(0.50),
            p99_us: tally.quantile_us(0.99),
            p999_us: tally.quantile_us(0.999),
            server_cpu_us,
            client_cpu_us,
            busy: cpu.busy,
            errors: tally.errors,
            first_error: tally.first_error.clone(),
        }
    }
}

/// Whether `peer` takes part in a cell with `in_flight` calls: the blocking
/// floor only at 1 in flight, the pipelined floor only above.
fn applies(peer: &str, in_flight: usize) -> bool {
    match peer {
        "raw-blocking" => in_flight == 1,
        "raw-pipelined" | "raw-crc" => in_flight > 1,
        _ => true,
    }
}

/// Runs one round: warmup, measured window, CPU samples at the window edges.
fn measure(run: RunFn, spec: &Spec, opts: &Options) -> Result<Measured, String> {
    let window = Window::after(
        Duration::from_secs_f64(opts.warmup),
        Duration::from_secs_f64(opts.secs),
    );
    let sampler = {
        let opts = opts.clone();
        std::thread::spawn(move || sample_window(window, &opts))
    };
    let tally = run(spec, window)?;
    let cpu = sampler.join().unwrap_or_default();
    Ok(Measured::new(&tally, &window, cpu))
}

/// Measures how busy the benchmark CPUs are before anything runs (other load skews results).
fn idle_check(opts: &Options) -> String {
    let before = CpuBusy::now();
    std::thread::sleep(Duration::from_millis(500));
    let after = CpuBusy::now();
    let share = |cpu| {
        after
            .since(&before, cpu)
            .map_or(0.0, |d| d.as_secs_f64() / 0.5 * 100.0)
    };
    let (s, c) = (share(opts.server_cpu), share(opts.client_cpu));
    let warn = if s.max(c) > 10.0 {
        "  WARNING: other load on the benchmark CPUs; results will be noisy"
    } else {
        ""
    };
    format!(
        "peers: before the run, cpu {} was {s:.0}% busy, cpu {} {c:.0}%{warn}",
        opts.server_cpu, opts.client_cpu
    )
}

fn cell_name(in_flight: usize, payload: usize) -> String {
    let size = Cell { in_flight, payload }.size();
    format!("{in_flight} in flight x {size}")
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

/// Results of every (cell, peer): all rounds, in order.
type Results = Vec<((usize, usize), &'static str, Vec<Measured>)>;

/// The median of one metric over the rounds that have it.
fn median_of(rounds: &[Measured], metric: impl Fn(&Measured) -> Option<f64>) -> Option<f64> {
    let mut v: Vec<f64> = rounds.iter().filter_map(metric).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// Appends a table with one row per peer (in [`PEERS`] order) and one column per cell.
fn side_by_side(
    out: &mut String,
    results: &Results,
    opts: &Options,
    title: &str,
    cell_text: impl Fn(&[Measured]) -> Option<String>,
) {
    let _ = writeln!(out, "== side by side: {title}");
    let mut header = format!("{:<14}", "peer");
    for &(f, p) in &opts.cells {
        let _ = write!(header, " | {:^32}", cell_name(f, p));
    }
    let _ = writeln!(out, "{header}");
    for (name, _) in PEERS {
        if !results.iter().any(|(_, n, _)| n == name) {
            continue;
        }
        let mut line = format!("{name:<14}");
        for &cell in &opts.cells {
            let text = rounds_of(results, cell, name)
                .and_then(&cell_text)
                .unwrap_or_else(|| "-".to_string());
            let _ = write!(line, " | {text:^32}");
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out);
}

/// The round with the median calls/s.
fn median(rounds: &[Measured]) -> Option<&Measured> {
    let mut sorted: Vec<&Measured> = rounds.iter().collect();
    sorted.sort_by(|a, b| a.calls_per_s.total_cmp(&b.calls_per_s));
    sorted.get(sorted.len() / 2).copied()
}

/// Where Linux keeps a network namespace's TCP congestion control.
const CONGESTION_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_congestion_control";

/// The host-wide list of congestion controls a network namespace other than
/// the host's may take as its default (any other is refused with `EPERM`).
const ALLOWED_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";

/// The congestion controls the kernel has (built in or loaded).
const AVAILABLE_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";

/// Moves the bench into a network namespace of its own, with its loopback up
/// and `cc` as its TCP congestion control. Must run before any thread is
/// started: a namespace is per thread, and threads inherit it.
///
/// Linux lets a namespace other than the host's default to an algorithm only
/// if the host allows it (`net.ipv4.tcp_allowed_congestion_control`; a host
/// whose default is bbr often lists only "reno bbr"). If `cc` is not allowed,
/// it is added to the host's list for the moment the namespace takes it, and
/// the list is put back right after, through a handle opened in the host's
/// namespace (the list is host-wide; the namespace keeps its default).
fn private_netns(cc: &str) -> Result<(), String> {
    let allowed = HostAllowList::admit(cc)?;
    let entered = enter_netns(cc);
    // Put the host's list back whether or not the namespace took `cc`.
    let restored = allowed.restore();
    entered.and(restored)
}

/// Moves this thread to a new network namespace, brings its loopback up and
/// makes `cc` its default congestion control.
fn enter_netns(cc: &str) -> Result<(), String> {
    // SAFETY: unshare takes no pointers; it moves only this (so far the only)
    // thread to a new network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "--congestion: cannot make a network namespace (needs root): {}",
            std::io::Error::last_os_error()
        ));
    }
    let up = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("--congestion: ip link set lo up: {e}"))?;
    if !up.success() {
        return Err(format!("--congestion: ip link set lo up: {up}"));
    }
    std::fs::write(CONGESTION_SYSCTL, cc).map_err(|e| format!("--congestion {cc}: {e}"))
}

/// The host's allow list of congestion controls, while `cc` is added to it:
/// the list opened for writing in the host's namespace and what it said
/// before (`None` when `cc` was already allowed and nothing was changed).
struct HostAllowList {
    changed: Option<(std::fs::File, String)>,
}

impl HostAllowList {
    /// Adds `cc` to the host's list if it is missing.
    fn admit(cc: &str) -> Result<Self, String> {
        use std::io::Write;
        let err = |e: std::io::Error| format!("--congestion {cc}: {ALLOWED_SYSCTL}: {e}");
        let list = std::fs::read_to_string(ALLOWED_SYSCTL).map_err(err)?;
        let list = list.trim().to_string();
        if list.split_whitespace().any(|a| a == cc) {
            return Ok(Self { changed: None });
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(ALLOWED_SYSCTL)
            .map_err(err)?;
        file.write_all(format!("{list} {cc}").as_bytes())
            .map_err(|e| {
                let known = std::fs::read_to_string(AVAILABLE_SYSCTL).unwrap_or_default();
                format!(
                    "--congestion {cc}: cannot be allowed ({e}); this kernel has: {}",
                    known.trim()
                )
            })?;
        Ok(Self {
            changed: Some((file, list)),
        })
    }

    /// Puts the host's list back as it was.
    fn restore(self) -> Result<(), String> {
        use std::io::{Seek, Write};
        let Some((mut file, before)) = self.changed else {
            return Ok(());
        };
        let err = |e: std::io::Error| format!("--congestion: restoring {ALLOWED_SYSCTL}: {e}");
        file.rewind().map_err(err)?;
        file.write_all(before.as_bytes()).map_err(err)
    }
}

/// The TCP congestion control every peer's sockets use (the host's, or the
/// bench's own namespace's with `--congestion`). Under
/// `bbr` the kernel paces each connection's sends, and the pipelined floors
/// settle, round by round, at one of two speeds about 2x apart (measured on
/// this project's hosts; `cubic` does not pace and they stay at the fast one).
fn congestion_note(own_netns: bool) -> String {
    let path = CONGESTION_SYSCTL;
    let whose = if own_netns {
        "the bench's network namespace"
    } else {
        "the host's"
    };
    match std::fs::read_to_string(path) {
        Ok(cc) if cc.trim() == "bbr" => format!(
            "TCP congestion control: bbr, {whose} (paced: the pipelined floors switch between \
             two speeds ~2x apart from round to round; `--congestion cubic` avoids it; see \
             docs/benchmarks.md, \"Floors and BBR pacing\")"
        ),
        Ok(cc) => format!("TCP congestion control: {}, {whose}", cc.trim()),
        Err(e) => format!("TCP congestion control: unknown ({path}: {e})"),
    }
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("peers: {e}");
            std::process::exit(2);
        }
    };
    if let Some(cc) = &opts.congestion {
        if let Err(e) = private_netns(cc) {
            eprintln!("peers: {e}");
            std::process::exit(2);
        }
    }
    let peers: Vec<(&'static str, RunFn)> = PEERS
        .iter()
        .copied()
        .filter(|(name, _)| {
            opts.filters.is_empty()
                || opts.filters.iter().any(|f| match f.strip_prefix('=') {
                    Some(exact) => *name == exact,
                    None => name.contains(f.as_str()),
                })
        })
        .collect();
    let began = Instant::now();
    let idle = idle_check(&opts);
    println!(
        "peers: echo (u64 id + payload), one loopback TCP connection per peer; server cpu {}, client cpu {}; \
         {:.1} s warmup + {:.1} s measured per round, {} round(s), median round reported",
        opts.server_cpu, opts.client_cpu, opts.warmup, opts.secs, opts.rounds
    );

    println!("{idle}");
    println!("{}", congestion_note(opts.congestion.is_some()));
    let mut results: Results = Vec::new();
    for &(in_flight, payload) in &opts.cells {
        let spec = Spec {
            in_flight,
            payload,
            server_cpu: opts.server_cpu,
            client_cpu: opts.client_cpu,
        };
        let cell_peers: Vec<_> = peers
            .iter()
            .filter(|(n, _)| applies(n, in_flight))
            .collect();
        let rounds = run_cell(&spec, &cell_peers, &opts);
        for ((name, _), r) in cell_peers.iter().zip(rounds) {
            results.push(((in_flight, payload), name, r));
        }
    }

    let report = render(&results, &opts);
    println!("\n{report}");
    if let Err(e) = write_csv(&results) {
        eprintln!("peers: could not write CSV: {e}");
    }
    println!(
        "peers: total run time {:.1} s",
        began.elapsed().as_secs_f64()
    );
    if results
        .iter()
        .any(|(_, _, r)| r.iter().any(|m| m.errors > 0))
    {
        eprintln!("peers: some calls failed (see ERRORS above)");
        std::process::exit(1);
    }
}

/// Measures every peer of one cell `opts.rounds` times, interleaving the peers
/// round by round; returns each peer's rounds (a failed round is left out).
fn run_cell(spec: &Spec, peers: &[&(&'static str, RunFn)], opts: &Options) -> Vec<Vec<Measured>> {
    let mut rounds: Vec<Vec<Measured>> = vec![Vec::new(); peers.len()];
    let cell = cell_name(spec.in_flight, spec.payload);
    for round in 1..=opts.rounds {
        for (i, (name, run)) in peers.iter().enumerate() {
            match measure(*run, spec, opts) {
                Ok(m) => {
                    print_round(&cell, name, round, &m);
                    rounds[i].push(m);
                }
                Err(e) => println!("  [{cell}] {name}: FAILED: {e}"),
            }
        }
    }
    rounds
}

/// One line per measured round, as it finishes.
fn print_round(cell: &str, name: &str, round: usize, m: &Measured) {
    println!(
        "  [{cell}] {name:<13} round {round}: {:>10.0} calls/s  p50 {:>8.1} us  p99 {:>8.1} us  \
         cpu us/call srv {} cli {}  cpu busy {}{}",
        m.calls_per_s,
        m.p50_us,
        m.p99_us,
        opt(m.server_cpu_us),
        opt(m.client_cpu_us),
        m.busy.map_or_else(
            || "-".to_string(),
            |(s, c)| format!("{:.0}%/{:.0}%", s * 100.0, c * 100.0)
        ),
        if m.errors > 0 {
            format!("  ERRORS {} (first: {:?})", m.errors, m.first_error)
        } else {
            String::new()
        }
    );
}

/// The per-cell tables, the side-by-side matrix and the P1-P3 ratios.
fn render(results: &Results, opts: &Options) -> String {
    let mut out = String::new();
    for &cell in &opts.cells {
        cell_table(&mut out, results, cell, opts.rounds);
    }
    // Side by side: one row per peer, one column group per cell.
    side_by_side(&mut out, results, opts, "calls/s (p50 / p99 us)", |r| {
        median(r).map(|m| format!("{:>9.0} ({:.1} / {:.1})", m.calls_per_s, m.p50_us, m.p99_us))
    });
    // CPU per call barely depends on other load on the machine, unlike the rates above.
    side_by_side(
        &mut out,
        results,
        opts,
        "thread CPU us per call, server / client (median of rounds)",
        |r| {
            let srv = median_of(r, |m| m.server_cpu_us)?;
            let cli = median_of(r, |m| m.client_cpu_us)?;
            Some(format!("{srv:.2} / {cli:.2}"))
        },
    );
    check_targets(&mut out, results, opts);
    versus_peers(&mut out, results, opts);
    tls_cost(&mut out, results, opts);
    out
}

/// What TLS costs ringrpc and tonic, cell by cell: calls/s with TLS over
/// without (per-round ratios, as the targets), and the CPU per call it adds
/// (server + client thread CPU, median rounds); then the floor no TLS could
/// go under ([`tls_floor`]).
fn tls_cost(out: &mut String, results: &Results, opts: &Options) {
    for &cell in &opts.cells {
        for (plain, tls) in [("ringrpc", "ringrpc-tls"), ("tonic", "tonic-tls")] {
            let Some(rate) = ratio(results, cell, tls, plain, |m| m.calls_per_s) else {
                continue;
            };
            let p50 = ratio(results, cell, tls, plain, |m| m.p50_us).map_or(f64::NAN, |r| r.0);
            let added = tls_cpu(results, cell, plain, tls).map_or("-".to_string(), |(p, t)| {
                format!("{:+.2} us ({:.2}x)", t - p, t / p)
            });
            let _ = writeln!(
                out,
                "TLS cost {plain:<7} [{}]: calls/s {}, p50 {p50:.2}x, cpu/call {added}",
                cell_name(cell.0, cell.1),
                show_ratio(rate),
            );
        }
        tls_floor(out, results, cell);
    }
}

/// Server + client thread CPU per call of `plain`'s and `tls`'s median rounds
/// in `cell`, if both ran.
fn tls_cpu(results: &Results, cell: (usize, usize), plain: &str, tls: &str) -> Option<(f64, f64)> {
    let cpu = |peer| {
        let m = median_round(results, cell, peer)?;
        m.server_cpu_us.zip(m.client_cpu_us).map(|(s, c)| s + c)
    };
    cpu(plain).zip(cpu(tls))
}

/// The least TLS could cost ringrpc in `cell`: sealing and opening the
/// call's payload bytes alone (`aead_floor`, measured now), as CPU per call
/// and as the ratio it would give over ringrpc's plaintext CPU, next to
/// tonic's measured ratio.
fn tls_floor(out: &mut String, results: &Results, cell: (usize, usize)) {
    let Some((plain, _)) = tls_cpu(results, cell, "ringrpc", "ringrpc-tls") else {
        return;
    };
    let floor = ringrpc_peers::aead_floor::per_call_us(cell.0, cell.1);
    let tonic = tls_cpu(results, cell, "tonic", "tonic-tls")
        .map_or("-".to_string(), |(p, t)| format!("{:.2}x", t / p));
    let _ = writeln!(
        out,
        "TLS floor        [{}]: AES-128-GCM over the payload alone +{floor:.2} us per call: ringrpc's ratio >= {:.2}x (tonic's: {tonic})",
        cell_name(cell.0, cell.1),
        (plain + floor) / plain,
    );
}

/// The median round of `peer` in `cell`, if it has one.
fn median_round(results: &Results, cell: (usize, usize), peer: &str) -> Option<Measured> {
    rounds_of(results, cell, peer).and_then(median).cloned()
}

/// One cell's table: every peer's median round, with ratios to the cell's floor
/// (the blocking floor at 1 in flight, the pipelined one above).
fn cell_table(out: &mut String, results: &Results, cell: (usize, usize), rounds: usize) {
    let floor_name = if cell.0 == 1 {
        "raw-blocking"
    } else {
        "raw-pipelined"
    };
    let floor = median_round(results, cell, floor_name);
    let _ = writeln!(
        out,
        "== {} (median of {rounds} round(s))",
        cell_name(cell.0, cell.1)
    );
    let _ = writeln!(
        out,
        "{:<14} {:>11} {:>9} {:>9} {:>9} {:>10} {:>10} {:>13} {:>13}",
        "peer",
        "calls/s",
        "x floor",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "p50/floor",
        "srv cpu us/c",
        "cli cpu us/c"
    );
    for (_, name, rounds) in results.iter().filter(|(c, _, _)| *c == cell) {
        let Some(m) = median(rounds) else {
            let _ = writeln!(out, "{name:<14} (failed)");
            continue;
        };
        let ratio = floor.as_ref().map(|f| m.calls_per_s / f.calls_per_s);
        let p50_ratio = floor.as_ref().map(|f| m.p50_us / f.p50_us);
        let _ = writeln!(
            out,
            "{:<14} {:>11.0} {:>9} {:>9.1} {:>9.1} {:>10.1} {:>10} {:>13} {:>13}",
            name,
            m.calls_per_s,
            opt(ratio),
            m.p50_us,
            m.p99_us,
            m.p999_us,
            opt(p50_ratio),
            opt(m.server_cpu_us),
            opt(m.client_cpu_us),
        );
    }
    let _ = writeln!(out);
}

/// ringrpc against tarpc and tonic, cell by cell (median rounds).
fn versus_peers(out: &mut String, results: &Results, opts: &Options) {
    for &cell in &opts.cells {
        let Some(r) = median_round(results, cell, "ringrpc") else {
            continue;
        };
        for other in ["ringrpc-epoll", "tarpc", "tonic"] {
            if let Some(o) = median_round(results, cell, other) {
                let _ = writeln!(
                    out,
                    "ringrpc vs {other:<13} [{}]: {:.2}x calls/s, p50 {:.2}x",
                    cell_name(cell.0, cell.1),
                    r.calls_per_s / o.calls_per_s,
                    r.p50_us / o.p50_us
                );
            }
        }
    }
}

/// The rounds of `peer` in `cell`.
fn rounds_of<'r>(results: &'r Results, cell: (usize, usize), peer: &str) -> Option<&'r [Measured]> {
    results
        .iter()
        .find(|(c, n, _)| *c == cell && *n == peer)
        .map(|(_, _, r)| r.as_slice())
}

/// `metric(peer) / metric(base)` as (ratio of the median rounds, and the median,
/// lowest and highest of the per-round ratios). Round `i` of every peer ran back
/// to back, so per-round ratios cancel drifts of the machine's speed that last
/// longer than one round.
fn ratio(
    results: &Results,
    cell: (usize, usize),
    peer: &str,
    base: &str,
    metric: impl Fn(&Measured) -> f64,
) -> Option<(f64, f64, f64, f64)> {
    let (p, b) = (
        rounds_of(results, cell, peer)?,
        rounds_of(results, cell, base)?,
    );
    let of_medians = metric(median(p)?) / metric(median(b)?);
    let mut per_round: Vec<f64> = p
        .iter()
        .zip(b)
        .map(|(p, b)| metric(p) / metric(b))
        .collect();
    per_round.sort_by(f64::total_cmp);
    let mid = *per_round.get(per_round.len() / 2)?;
    Some((
        of_medians,
        mid,
        per_round[0],
        per_round[per_round.len() - 1],
    ))
}

fn show_ratio((of_medians, mid, lo, hi): (f64, f64, f64, f64)) -> String {
    format!("{of_medians:.2}x (per round: median {mid:.2}x, {lo:.2}-{hi:.2}x)")
}

/// A measured round's value of `metric` (`None`: not measured by this bench).
fn metric_of(m: &Measured, metric: Metric) -> Option<f64> {
    match metric {
        Metric::P50 => Some(m.p50_us),
        Metric::P99 => Some(m.p99_us),
        Metric::CallsPerSec => Some(m.calls_per_s),
        Metric::ServerCpuUs => m.server_cpu_us,
        Metric::ClientCpuUs => m.client_cpu_us,
        Metric::AllocsPerCall => None,
    }
}

/// Appends every target of the targets file as measured in this run: a ratio
/// as [`show_ratio`], a value as the median of rounds and their range.
fn check_targets(out: &mut String, results: &Results, opts: &Options) {
    let path = opts.targets.display();
    let _ = writeln!(out, "\n== targets of {path} (same run)");
    match targets::load(&opts.targets) {
        Ok(list) => {
            for target in &list {
                let note = match target.note.as_str() {
                    "" => String::new(),
                    note => format!("  [{note}]"),
                };
                let shown = show_target(results, target)
                    .unwrap_or_else(|| "not measured in this run".to_string());
                let _ = writeln!(out, "{:<58} {shown}{note}", target.label());
            }
        }
        Err(e) => {
            let _ = writeln!(out, "not checked: {e}");
        }
    }
}

/// One target's measurement and verdict, if this run measured it.
fn show_target(results: &Results, target: &Target) -> Option<String> {
    if target.metric == Metric::AllocsPerCall {
        return Some("measured by `cargo test --test alloc_per_call`".into());
    }
    let cell = target.cell.map(|c| (c.in_flight, c.payload))?;
    let metric = |m: &Measured| metric_of(m, target.metric).unwrap_or(f64::NAN);
    if let Some(base) = &target.base {
        let r = ratio(results, cell, &target.peer, base, metric)?;
        return Some(format!("{} {}", show_ratio(r), target.verdict(r.0)));
    }
    let mut values: Vec<f64> = rounds_of(results, cell, &target.peer)?
        .iter()
        .filter_map(|m| metric_of(m, target.metric))
        .collect();
    values.sort_by(f64::total_cmp);
    let (mid, lo, hi) = (
        values.get(values.len() / 2)?,
        values[0],
        values[values.len() - 1],
    );
    Some(format!(
        "{mid:.2} (median of rounds, {lo:.2}-{hi:.2}) {}",
        target.verdict(*mid)
    ))
}

/// `target/` of this build: the bench binary runs from `target/<profile>/deps/`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn write_csv(results: &Results) -> std::io::Result<()> {
    let dir = target_dir().join("peers");
    std::fs::create_dir_all(&dir)?;
    let head = "in_flight,payload,peer,round,calls_per_s,p50_us,p99_us,p999_us,\
                server_cpu_us_per_call,client_cpu_us_per_call,server_cpu_busy,client_cpu_busy,errors\n";
    let line = |cell: (usize, usize), name: &str, round: usize, m: &Measured| {
        format!(
            "{},{},{},{},{:.1},{:.2},{:.2},{:.2},{},{},{},{},{}\n",
            cell.0,
            cell.1,
            name,
            round,
            m.calls_per_s,
            m.p50_us,
            m.p99_us,
            m.p999_us,
            m.server_cpu_us.map_or(String::new(), |v| format!("{v:.3}")),
            m.client_cpu_us.map_or(String::new(), |v| format!("{v:.3}")),
            m.busy.map_or(String::new(), |b| format!("{:.3}", b.0)),
            m.busy.map_or(String::new(), |b| format!("{:.3}", b.1)),
            m.errors
        )
    };
    let (mut reported, mut all) = (head.to_string(), head.to_string());
    for (cell, name, rounds) in results {
        for (i, m) in rounds.iter().enumerate() {
            all.push_str(&line(*cell, name, i + 1, m));
        }
        if let Some(m) = median(rounds) {
            let i = rounds.iter().position(|r| std::ptr::eq(r, m)).unwrap_or(0);
            reported.push_str(&line(*cell, name, i + 1, m));
        }
    }
    std::fs::write(dir.join("peers.csv"), reported)?;
    std::fs::write(dir.join("peers-rounds.csv"), all)?;
    println!("peers: wrote {}", dir.join("peers.csv").display());
    Ok(())
}
