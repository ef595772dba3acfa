//! The fault suite's servers and rigs: [`FaultServer`] (a server with the
//! workload's methods on its own runtime, that can be aborted, drained and
//! restarted on the same address) and [`Rig`] (server, optional proxy, client
//! and the descriptor/thread baseline every test ends by checking).

use super::*;

/// A server with the workload's methods on its own runtime.
pub struct FaultServer {
    // Dropped (aborted) before the runtime.
    handle: Option<ServerHandle>,
    stop_monitors: Arc<AtomicBool>,
    addr: SocketAddr,
    make: Box<dyn Fn() -> ServerBuilder>,
    pub rt: Runtime,
}

impl FaultServer {
    /// Serves `make()` on an unpinned runtime of `cores` cores, 127.0.0.1 port 0.
    pub fn start(cores: usize, make: impl Fn() -> ServerBuilder + 'static) -> Self {
        Self::start_on(cores, "127.0.0.1:0".parse().unwrap(), make)
    }

    /// Serves `make()` on an unpinned runtime of `cores` cores at `addr`.
    pub fn start_on(
        cores: usize,
        addr: SocketAddr,
        make: impl Fn() -> ServerBuilder + 'static,
    ) -> Self {
        let rt = Runtime::builder()
            .cores(cores)
            .pin(false)
            .name("fault-srv")
            .build()
            .expect("server runtime");
        let handle = make().serve(&rt, addr).expect("serve");
        let addr = handle.local_addr();
        let stop_monitors = Arc::new(AtomicBool::new(false));
        for core in 0..cores {
            let stop = stop_monitors.clone();
            drop(
                rt.spawn_on(core, move || lag_monitor(stop))
                    .expect("lag monitor"),
            );
        }
        Self {
            handle: Some(handle),
            stop_monitors,
            addr,
            make: Box::new(make),
            rt,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("server is running")
    }

    pub fn stats(&self) -> ServerStats {
        self.handle().stats()
    }

    pub fn is_running(&self) -> bool {
        self.handle.is_some()
    }

    /// Aborts (kills) the server; returns its last stats.
    pub fn abort(&mut self) -> ServerStats {
        let handle = self.handle.take().expect("server is running");
        let stats = handle.stats();
        handle.abort();
        stats
    }

    /// Graceful shutdown (goaway, drain up to `drain`); returns how long it took.
    pub fn shutdown(&mut self, drain: Duration) -> Duration {
        let handle = self.handle.take().expect("server is running");
        let start = Instant::now();
        handle.shutdown(drain);
        start.elapsed()
    }

    /// Serves again on the same runtime and address.
    pub fn restart(&mut self) {
        assert!(self.handle.is_none(), "stop the old server first");
        let handle = (self.make)()
            .serve(&self.rt, self.addr)
            .expect("serve again");
        assert_eq!(handle.local_addr(), self.addr);
        self.handle = Some(handle);
    }

    /// Waits (bounded) until the server has `n` open connections.
    pub fn wait_open(&self, n: usize, timeout: Duration) {
        wait_until(timeout, &format!("server open_connections == {n}"), || {
            self.stats().open_connections == n
        });
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop_monitors.store(true, Ordering::SeqCst);
    }
}

/// Everything one fault test runs: server, optional proxy, client, FD baseline.
pub struct Rig {
    pub server: FaultServer,
    pub proxy: Option<Proxy>,
    pub client: TestClient,
    baseline: Baseline,
    /// Named instants (faults injected...) for failure messages.
    marks: std::cell::RefCell<Vec<(String, Instant)>>,
}

impl Rig {
    /// A `cores`-core server, a proxy in front of it if `proxied`, and a client
    /// built from `builder` connected through it. Call with [`serial`] held.
    pub fn new(
        cores: usize,
        make: impl Fn() -> ServerBuilder + 'static,
        proxied: bool,
        builder: ClientBuilder,
    ) -> Self {
        let baseline = Baseline::take();
        let server = FaultServer::start(cores, make);
        let proxy = proxied.then(|| Proxy::start(server.addr()));
        let target = proxy.as_ref().map_or(server.addr(), Proxy::addr);
        let client = TestClient::connect_with(builder, target);
        Self {
            server,
            proxy,
            client,
            baseline,
            marks: Default::default(),
        }
    }

    /// Records that `what` happens now (shown in failure messages); returns now.
    pub fn mark(&self, what: &str) -> Instant {
        let now = Instant::now();
        self.marks.borrow_mut().push((what.to_owned(), now));
        now
    }

    /// The standard rig: 1-core server behind a proxy, suite client settings.
    pub fn proxied() -> Self {
        Self::new(1, server_builder, true, client_builder())
    }

    /// 1-core server, client connected directly.
    pub fn direct() -> Self {
        Self::new(1, server_builder, false, client_builder())
    }

    pub fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("rig has a proxy")
    }

    /// Starts the mixed workload with `callers` callers.
    pub fn load(&self, callers: u32, plan: PlanFn) -> Load {
        Load::start(&self.client, callers, plan)
    }

    pub fn client_stats(&self) -> ringrpc::ClientStats {
        self.client.stats()
    }

    /// [`Report::check`], with the client's and server's counters in the message.
    pub fn check(&self, report: &Report, expect: &Expect<'_>) {
        let server = self
            .server
            .handle
            .as_ref()
            .map(|h| format!("{:?}", h.stats()))
            .unwrap_or_else(|| "stopped".into());
        let marks: Vec<_> = self
            .marks
            .borrow()
            .iter()
            .map(|(what, t)| {
                format!(
                    "{what} at {:?}",
                    t.saturating_duration_since(report.started)
                )
            })
            .collect();
        let context = format!(
            "client: {:?}\nserver: {server}\nevents (into the run): {marks:?}",
            self.client_stats()
        );
        report.check_with(expect, &context);
    }

    /// The end-of-test invariants: nothing in flight; once the client closes the
    /// server has no open connection; after everything is dropped, the process's
    /// file descriptors and threads are back to the baseline.
    pub fn finish(self) {
        let Rig {
            mut server,
            proxy,
            client,
            baseline,
            ..
        } = self;
        let stats = client.stats();
        assert_eq!(stats.in_flight, 0, "calls left in flight: {stats:?}");
        client.close();
        if server.is_running() {
            server.wait_open(0, Duration::from_secs(3));
        }
        drop(proxy);
        drop(client);
        if server.is_running() {
            server.abort();
        }
        drop(server);
        baseline.wait_restored();
    }
}
