//! The in-process backend: GCRA over the bounded store, and a count of open
//! connections per client.

use super::{
    gcra::{self, Step},
    store::Store,
    Budget, Check, LimitId, Outcome, Rate,
};
use governor::clock::{Clock, DefaultClock, Reference};
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

pub struct LocalLimiter<C: Clock = DefaultClock> {
    store: Store,
    clock: C,
    start: C::Instant,
    open: Mutex<HashMap<IpAddr, u32>>,
    /// Members counted in their window (`distinct_recipients`), by the hash
    /// of (limit, rate, key, member), until the limiter's time in the
    /// value (ns).
    seen: Mutex<HashMap<u64, u64>>,
    max_seen: usize,
}

impl LocalLimiter<DefaultClock> {
    pub fn new(max_keys: usize) -> Self {
        Self::with_clock(max_keys, DefaultClock::default())
    }
}

impl<C: Clock> LocalLimiter<C> {
    pub fn with_clock(max_keys: usize, clock: C) -> Self {
        let start = clock.now();
        Self {
            store: Store::new(max_keys),
            clock,
            start,
            open: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            max_seen: max_keys,
        }
    }

    fn now(&self) -> u64 {
        self.clock.now().duration_since(self.start).as_u64()
    }

    fn stored_key(&self, name: &LimitId, rate: &Rate, key: &str) -> u64 {
        // The rate is part of the key: a reload that changes a limit's rate
        // starts it afresh, one that keeps it keeps its counters.
        self.store
            .key((name.as_str(), rate.count, rate.period, key))
    }

    /// Judges a batch all or nothing, under the locks of every shard it
    /// touches.
    pub fn check(&self, checks: &[Check]) -> Outcome {
        self.check_fill(checks).0
    }

    /// [`check`](Self::check), with how full each check's bucket is once
    /// allowed, in thousandths of its burst (empty when denied).
    pub fn check_fill(&self, checks: &[Check]) -> (Outcome, Vec<u16>) {
        if checks.is_empty() {
            return (Outcome::Allowed, Vec::new());
        }
        let keys: Vec<u64> = checks
            .iter()
            .map(|c| self.stored_key(&c.name, &c.rate, &c.key))
            .collect();
        let now = self.now();
        // A member already counted in its window costs nothing.
        let members: Vec<Option<u64>> = checks
            .iter()
            .zip(&keys)
            .map(|(c, k)| c.member.as_ref().map(|m| self.store.key((*k, m))))
            .collect();
        let cells: Vec<u64> = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            checks
                .iter()
                .zip(&members)
                .map(|(c, m)| match m {
                    Some(m) if seen.get(m).is_some_and(|until| *until > now) => 0,
                    _ => c.n,
                })
                .collect()
        };
        self.store.with_keys(&keys, |locked| {
            let mut tats = Vec::with_capacity(checks.len());
            let mut denied: Option<(usize, u64)> = None;
            for (i, (c, &k)) in checks.iter().zip(&keys).enumerate() {
                // Two checks of one batch on the same key (a sender who is
                // also its own recipient) see each other's cells.
                let tat = keys[..i]
                    .iter()
                    .zip(&tats)
                    .rev()
                    .find(|(prev, _)| **prev == k)
                    .map(|(_, t)| Some(*t))
                    .unwrap_or_else(|| locked.get(k));
                match gcra::step(&c.rate, tat, now, cells[i]) {
                    Step::Allow { tat } => tats.push(tat),
                    Step::Deny { wait_ns } => {
                        tats.push(tat.unwrap_or(now));
                        if denied.is_none_or(|(_, w)| wait_ns > w) {
                            denied = Some((i, wait_ns));
                        }
                    }
                }
            }
            match denied {
                Some((index, wait_ns)) => (
                    Outcome::Denied {
                        index,
                        retry_after: Duration::from_nanos(wait_ns),
                    },
                    Vec::new(),
                ),
                None => {
                    for (&k, &tat) in keys.iter().zip(&tats) {
                        locked.put(k, tat);
                    }
                    self.remember(checks, &members, now);
                    let fill = checks
                        .iter()
                        .zip(&tats)
                        .map(|(c, &tat)| gcra::fill(&c.rate, tat, now))
                        .collect();
                    (Outcome::Allowed, fill)
                }
            }
        })
    }

    /// Records the members of an allowed batch until their window ends;
    /// at the cap, the expired ones go first, then any.
    fn remember(&self, checks: &[Check], members: &[Option<u64>], now: u64) {
        if members.iter().all(Option::is_none) {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= self.max_seen {
            seen.retain(|_, until| *until > now);
            if seen.len() >= self.max_seen {
                seen.clear();
            }
        }
        for (c, m) in checks.iter().zip(members) {
            if let Some(m) = m {
                let period = u64::try_from(c.rate.period.as_nanos()).unwrap_or(u64::MAX);
                let until = seen.entry(*m).or_insert(0);
                if *until <= now {
                    *until = now.saturating_add(period);
                }
            }
        }
    }

    /// The budget left for a key under each (limit, rate) asked about.
    pub fn show(&self, limits: &[(LimitId, Rate)], key: &str) -> Vec<Budget> {
        let now = self.now();
        limits
            .iter()
            .map(|(name, rate)| {
                let k = self.stored_key(name, rate, key);
                let tat = self.store.with_keys(&[k], |l| l.get(k));
                let (remaining, full_ns) = gcra::remaining(rate, tat, now);
                Budget {
                    name: *name,
                    rate: *rate,
                    remaining,
                    full_in: Duration::from_nanos(full_ns),
                }
            })
            .collect()
    }

    /// Forgets a key under the given limits: its budget is full again.
    pub fn reset(&self, limits: &[(LimitId, Rate)], key: &str) {
        for (name, rate) in limits {
            let k = self.stored_key(name, rate, key);
            self.store.with_keys(&[k], |l| l.remove(k));
        }
    }

    /// Drops the keys whose budget is full again; returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until > now);
        self.store.sweep(now)
    }

    pub fn tracked_keys(&self) -> usize {
        self.store.len()
    }

    pub fn evictions(&self) -> u64 {
        self.store
            .evictions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Opens a connection for `ip` if fewer than `max` are open; the lease
    /// closes it when dropped, however the connection ends.
    pub fn open_connection(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<Lease<C>>
    where
        C: Send + Sync + 'static,
    {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Lease {
            limiter: self.clone(),
            ip,
        })
    }

    pub fn open_connections(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// An open connection counted against `concurrent_per_client`.
pub struct Lease<C: Clock = DefaultClock> {
    limiter: Arc<LocalLimiter<C>>,
    ip: IpAddr,
}

impl<C: Clock> Drop for Lease<C> {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::LimitName;
    use governor::clock::FakeRelativeClock;

    fn rate(count: u64, secs: u64) -> Rate {
        Rate {
            count,
            period: Duration::from_secs(secs),
        }
    }

    fn check(name: LimitName, key: &str, rate: Rate) -> Check {
        Check {
            name: name.into(),
            key: key.into(),
            rate,
            n: 1,
            member: None,
        }
    }

    fn custom(key: &str, rate: Rate, n: u64, member: Option<&str>) -> Check {
        Check {
            name: LimitId::Custom(crate::rate::intern("t")),
            key: key.into(),
            rate,
            n,
            member: member.map(str::to_string),
        }
    }

    #[test]
    fn a_member_counts_once_per_window() {
        let clock = FakeRelativeClock::default();
        let l = LocalLimiter::with_clock(1000, clock.clone());
        let r = rate(2, 3600);
        let to = |m: &str| [custom("s@x.example", r, 1, Some(m))];
        assert_eq!(l.check(&to("a")), Outcome::Allowed);
        assert_eq!(l.check(&to("a")), Outcome::Allowed);
        assert_eq!(l.check(&to("b")), Outcome::Allowed);
        assert!(matches!(l.check(&to("c")), Outcome::Denied { .. }));
        // Seen ones still pass while the window lasts.
        assert_eq!(l.check(&to("b")), Outcome::Allowed);
        // A refused member was not recorded: it costs when it passes.
        clock.advance(Duration::from_secs(1800));
        assert_eq!(l.check(&to("c")), Outcome::Allowed);
        assert!(matches!(l.check(&to("d")), Outcome::Denied { .. }));
        // After its window, a member counts again.
        clock.advance(Duration::from_secs(1801));
        l.sweep();
        assert_eq!(l.check(&to("a")), Outcome::Allowed);
        assert_eq!(l.check(&to("a")), Outcome::Allowed);
    }

    #[test]
    fn fill_levels_and_bytes() {
        let clock = FakeRelativeClock::default();
        let l = LocalLimiter::with_clock(1000, clock.clone());
        let r = rate(100_000, 86_400);
        let c = [custom("example.com", r, 40_000, None)];
        assert_eq!(l.check_fill(&c), (Outcome::Allowed, vec![400]));
        assert_eq!(l.check_fill(&c), (Outcome::Allowed, vec![800]));
        let (o, fill) = l.check_fill(&c);
        assert!(matches!(o, Outcome::Denied { index: 0, .. }) && fill.is_empty());
        // A quarter of a day refills a quarter of the budget.
        clock.advance(Duration::from_secs(21_600));
        assert_eq!(
            l.check_fill(&[custom("example.com", r, 5_000, None)]),
            (Outcome::Allowed, vec![600])
        );
        // More than the whole budget: never, whatever the wait.
        let big = [custom("other.example", r, 100_001, None)];
        assert_eq!(
            l.check(&big),
            Outcome::Denied {
                index: 0,
                retry_after: Duration::from_nanos(u64::MAX)
            }
        );
    }

    #[test]
    fn burst_refill_and_retry_after() {
        let clock = FakeRelativeClock::default();
        let l = LocalLimiter::with_clock(1000, clock.clone());
        let c = [check(
            LimitName::MessagesPerSender,
            "jim@xyz.com",
            rate(2, 60),
        )];
        assert_eq!(l.check(&c), Outcome::Allowed);
        assert_eq!(l.check(&c), Outcome::Allowed);
        assert_eq!(
            l.check(&c),
            Outcome::Denied {
                index: 0,
                retry_after: Duration::from_secs(30)
            }
        );
        clock.advance(Duration::from_secs(29));
        assert!(matches!(l.check(&c), Outcome::Denied { .. }));
        clock.advance(Duration::from_secs(1));
        assert_eq!(l.check(&c), Outcome::Allowed);
        // Another sender has its own budget.
        let other = [check(
            LimitName::MessagesPerSender,
            "ann@xyz.com",
            rate(2, 60),
        )];
        assert_eq!(l.check(&other), Outcome::Allowed);
    }

    #[test]
    fn a_refused_batch_consumes_nothing() {
        let clock = FakeRelativeClock::default();
        let l = LocalLimiter::with_clock(1000, clock);
        let client = check(LimitName::MessagesPerClient, "10.0.0.1", rate(10, 3600));
        let sender = check(LimitName::MessagesPerSender, "jim@xyz.com", rate(1, 3600));
        assert_eq!(l.check(&[client.clone(), sender.clone()]), Outcome::Allowed);
        for _ in 0..20 {
            assert!(matches!(
                l.check(&[client.clone(), sender.clone()]),
                Outcome::Denied { index: 1, .. }
            ));
        }
        // The client's budget lost only the one message that passed.
        let b = l.show(
            &[(LimitName::MessagesPerClient.into(), client.rate)],
            "10.0.0.1",
        );
        assert_eq!(b[0].remaining, 9);
    }

    #[test]
    fn same_key_twice_in_one_batch() {
        let l = LocalLimiter::with_clock(1000, FakeRelativeClock::default());
        let r = rate(1, 3600);
        let c = check(LimitName::MessagesPerRecipient, "a@example.com", r);
        assert!(matches!(
            l.check(&[c.clone(), c.clone()]),
            Outcome::Denied { .. }
        ));
        assert_eq!(l.check(&[c]), Outcome::Allowed);
    }

    #[test]
    fn reload_with_another_rate_starts_afresh() {
        let l = LocalLimiter::with_clock(1000, FakeRelativeClock::default());
        let c = check(LimitName::MessagesPerClient, "10.0.0.1", rate(1, 3600));
        assert_eq!(l.check(std::slice::from_ref(&c)), Outcome::Allowed);
        assert!(matches!(
            l.check(std::slice::from_ref(&c)),
            Outcome::Denied { .. }
        ));
        let wider = check(LimitName::MessagesPerClient, "10.0.0.1", rate(5, 3600));
        assert_eq!(l.check(&[wider]), Outcome::Allowed);
        assert!(
            matches!(l.check(&[c]), Outcome::Denied { .. }),
            "unchanged rate keeps its state"
        );
    }

    #[test]
    fn show_reset_and_sweep() {
        let clock = FakeRelativeClock::default();
        let l = LocalLimiter::with_clock(1000, clock.clone());
        let r = rate(100, 3600);
        let c = check(LimitName::MessagesPerSender, "jim@xyz.com", r);
        for _ in 0..40 {
            assert_eq!(l.check(std::slice::from_ref(&c)), Outcome::Allowed);
        }
        let limits = [(LimitName::MessagesPerSender.into(), r)];
        let b = &l.show(&limits, "jim@xyz.com")[0];
        assert_eq!(b.remaining, 60);
        assert_eq!(b.full_in, Duration::from_secs(40 * 36));
        l.reset(&limits, "jim@xyz.com");
        assert_eq!(l.show(&limits, "jim@xyz.com")[0].remaining, 100);
        assert_eq!(l.check(&[c]), Outcome::Allowed);
        assert_eq!(l.sweep(), 0);
        clock.advance(Duration::from_secs(37));
        assert_eq!(l.sweep(), 1);
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn leases_count_open_connections() {
        let l = Arc::new(LocalLimiter::with_clock(10, FakeRelativeClock::default()));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = l.open_connection(ip, 2).unwrap();
        let b = l.open_connection(ip, 2).unwrap();
        assert!(l.open_connection(ip, 2).is_none());
        drop(a);
        let c = l.open_connection(ip, 2).unwrap();
        drop(b);
        drop(c);
        assert_eq!(l.open_connections(ip), 0);
    }
}
