//! The invariant checker every fault test ends with: a [`Report`] holds every
//! call of a workload run and the machine lag seen meanwhile; its checks say
//! each call ended with Ok or an allowed typed error no later than its deadline
//! (plus the lag that overlapped it) and that every reply echoed its own call.

use super::*;

/// Every call of a workload run.
pub struct Report {
    pub records: Vec<Record>,
    /// Times a client or server core was held back by the machine (see [`Lag`]).
    pub lags: Vec<Lag>,
    pub started: Instant,
}

impl Report {
    /// How long some core was held back by the machine during `from..to` (the
    /// union of the lags, clipped). Timing bounds add this, so a starved machine
    /// does not fail them while a late call on running cores still does.
    pub fn lag_during(&self, from: Instant, to: Instant) -> Duration {
        let mut spans: Vec<(Instant, Instant)> = self
            .lags
            .iter()
            .map(|l| ((l.woke - l.late).max(from), l.woke.min(to)))
            .filter(|(a, b)| a < b)
            .collect();
        spans.sort();
        let (mut total, mut reach) = (Duration::ZERO, from);
        for (a, b) in spans {
            let a = a.max(reach);
            if b > a {
                total += b - a;
                reach = b;
            }
        }
        total
    }

    /// How long `r` took, minus the time the machine held the cores back.
    pub fn adjusted(&self, r: &Record) -> Duration {
        r.elapsed().saturating_sub(self.lag_during(r.start, r.end))
    }

    /// Asserts every call in flight at `t` ended Ok right away (its reply was
    /// already on its way) or with ConnectionLost, within `within` (plus the
    /// client core's lag) of `t`, and that at least one did fail.
    pub fn assert_failed_fast(&self, t: Instant, within: Duration, what: &str) {
        let mut lost = 0;
        for r in self.in_flight_at(t) {
            let after = r.end.saturating_duration_since(t);
            let bound = within + self.lag_during(t, r.end);
            let ok = match r.outcome {
                Outcome::Ok => after <= bound,
                Outcome::ConnectionLost => {
                    lost += 1;
                    after <= bound
                }
                _ => false,
            };
            assert!(
                ok,
                "{what}: call {}/{} in flight ended {:?} {after:?} later (want Ok or \
                 ConnectionLost within {bound:?})",
                r.caller, r.seq, r.outcome
            );
        }
        assert!(
            lost > 0,
            "{what}: no call in flight failed with ConnectionLost"
        );
    }

    /// The longest single lag.
    pub fn max_lag(&self) -> Duration {
        self.lags.iter().map(|l| l.late).max().unwrap_or_default()
    }

    /// Calls per outcome name.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in &self.records {
            *m.entry(r.outcome.name()).or_insert(0) += 1;
        }
        m
    }

    pub fn count(&self, name: &str) -> usize {
        self.records
            .iter()
            .filter(|r| r.outcome.name() == name)
            .count()
    }

    /// Successful calls that started after `t`.
    pub fn ok_started_after(&self, t: Instant) -> usize {
        self.records
            .iter()
            .filter(|r| r.outcome == Outcome::Ok && r.start > t)
            .count()
    }

    /// Calls in flight at `t`.
    pub fn in_flight_at(&self, t: Instant) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(move |r| r.spans(t))
    }

    /// The shared invariants; panics listing every violation.
    ///
    /// - every call ended with `Ok` or one of `expect.errors`;
    /// - no call took longer than its deadline plus `expect.past_deadline`;
    /// - every reply carried its own caller id, sequence number and body.
    pub fn check(&self, expect: &Expect<'_>) {
        self.check_with(expect, "");
    }

    /// [`check`](Self::check), with `context` (e.g. client stats) in the message.
    pub fn check_with(&self, expect: &Expect<'_>, context: &str) {
        let mut problems = Vec::new();
        for r in &self.records {
            let name = r.outcome.name();
            match &r.outcome {
                Outcome::Ok => {}
                Outcome::Misdelivered(e) => problems.push(format!("MISDELIVERED: {e}")),
                Outcome::Other(e) => problems.push(format!(
                    "caller {} seq {}: untyped/unexpected error {e}",
                    r.caller, r.seq
                )),
                _ if !expect.errors.contains(&name.as_str()) => problems.push(format!(
                    "caller {} seq {}: unexpected {name} after {:?} ({:?}), {:?} into the run",
                    r.caller,
                    r.seq,
                    r.elapsed(),
                    r.plan,
                    r.start - self.started,
                )),
                _ => {}
            }
            let lag = self.lag_during(r.start, r.end);
            let limit = r.plan.deadline + expect.past_deadline + lag;
            if r.elapsed() > limit {
                problems.push(format!(
                    "caller {} seq {}: ended ({name}) after {:?}, past deadline {:?} + {:?} \
                     (+ {lag:?} the cores were held back), {:?} into the run",
                    r.caller,
                    r.seq,
                    r.elapsed(),
                    r.plan.deadline,
                    expect.past_deadline,
                    r.start - self.started,
                ));
            }
        }
        assert!(!self.records.is_empty(), "the workload made no calls");
        if !problems.is_empty() {
            let n = problems.len();
            problems.truncate(20);
            panic!(
                "{n} invariant violations (first {}):\n  {}\noutcomes: {:?}\ncore lags: {} \
                 (max {:?})\n{context}",
                problems.len(),
                problems.join("\n  "),
                self.counts(),
                self.lags.len(),
                self.max_lag(),
            );
        }
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Report({} calls: {:?})",
            self.records.len(),
            self.counts()
        )
    }
}
