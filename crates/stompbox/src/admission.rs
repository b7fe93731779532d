//! Limits per client address and per user: how many connections one
//! address may hold, how often it may try to CONNECT, how many sessions one
//! user may have, and which peers are proxies whose forwarded address
//! counts instead of their own.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// An IP network such as `10.0.0.0/8` or `::1/128`; a bare address is a
/// network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// True when `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(net), self.prefix) == mask_v4(u32::from(ip), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(net), self.prefix) == mask_v6(u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

fn mask_v4(bits: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(prefix.min(32))))
    }
}

fn mask_v6(bits: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix.min(128))))
    }
}

/// An IPv4 address arriving as `::ffff:a.b.c.d` on a dual-stack socket is
/// the same client as `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for IpNetwork {
    type Err = String;

    fn from_str(text: &str) -> Result<IpNetwork, String> {
        let bad = || format!("\"{text}\" is not an IP address or network like 10.0.0.0/8 or ::1");
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(IpNetwork { addr, prefix })
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What addresses are counted by: an IPv4 address, or the /64 of an IPv6
/// address, as one IPv6 host usually holds a whole /64 and could otherwise
/// use a new address for every connection.
fn address_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
        v4 => v4,
    }
}

/// Per-address state: open connections, a token bucket of CONNECT
/// attempts, and one of failed logins.
#[derive(Debug)]
struct Entry {
    connections: usize,
    tokens: f64,
    refilled: Instant,
    failures_left: f64,
    failures_refilled: Instant,
}

/// Limits per client address. An entry exists while the address holds a
/// connection or one of its buckets is refilling (a second after its last
/// CONNECT, a minute after its last failed login), so the map is bounded by
/// the open connections plus the addresses that attempted a CONNECT in the
/// last second or failed a login in the last minute.
#[derive(Debug)]
pub(crate) struct AddressLimits {
    max_connections: usize,
    connects_per_sec: u32,
    failures_per_min: u32,
    entries: Mutex<HashMap<IpAddr, Entry>>,
    last_sweep: Mutex<Instant>,
}

/// One connection counted against its address; dropping it releases it.
#[derive(Debug)]
pub(crate) struct AddressPermit {
    limits: Arc<AddressLimits>,
    key: IpAddr,
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        let mut entries = self.limits.lock();
        if let Some(entry) = entries.get_mut(&self.key) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 && self.limits.bucket_full(entry, Instant::now()) {
                entries.remove(&self.key);
            }
        }
    }
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyConnections {
    pub(crate) limit: usize,
}

impl AddressLimits {
    /// `max_connections` per address, `connects_per_sec` CONNECT attempts
    /// per address per second (a burst of as many) and `failures_per_min`
    /// failed logins per address per minute (as many at once); zero turns
    /// any of them off.
    pub(crate) fn new(
        max_connections: usize,
        connects_per_sec: u32,
        failures_per_min: u32,
    ) -> Arc<AddressLimits> {
        Arc::new(AddressLimits {
            max_connections,
            connects_per_sec,
            failures_per_min,
            entries: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn capacity(&self) -> f64 {
        f64::from(self.connects_per_sec)
    }

    fn refill(&self, entry: &mut Entry, now: Instant) {
        let elapsed = now.duration_since(entry.refilled).as_secs_f64();
        entry.tokens = (entry.tokens + elapsed * self.capacity()).min(self.capacity());
        entry.refilled = now;
    }

    fn refill_failures(&self, entry: &mut Entry, now: Instant) {
        let capacity = f64::from(self.failures_per_min);
        let elapsed = now.duration_since(entry.failures_refilled).as_secs_f64();
        entry.failures_left = (entry.failures_left + elapsed * capacity / 60.0).min(capacity);
        entry.failures_refilled = now;
    }

    /// True when nothing about the address needs remembering any more.
    fn bucket_full(&self, entry: &mut Entry, now: Instant) -> bool {
        self.refill(entry, now);
        self.refill_failures(entry, now);
        (self.connects_per_sec == 0 || entry.tokens >= self.capacity())
            && (self.failures_per_min == 0
                || entry.failures_left >= f64::from(self.failures_per_min))
    }

    /// Drops entries with no connection whose bucket is full again; at most
    /// once a second, so it costs nothing per connection.
    fn sweep(&self, entries: &mut HashMap<IpAddr, Entry>, now: Instant) {
        {
            let mut last = self
                .last_sweep
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if now.duration_since(*last) < Duration::from_secs(1) {
                return;
            }
            *last = now;
        }
        entries.retain(|_, entry| entry.connections > 0 || !self.bucket_full(entry, now));
    }

    fn entry<'a>(&self, entries: &'a mut HashMap<IpAddr, Entry>, key: IpAddr) -> &'a mut Entry {
        entries.entry(key).or_insert_with(|| Entry {
            connections: 0,
            tokens: f64::from(self.connects_per_sec),
            refilled: Instant::now(),
            failures_left: f64::from(self.failures_per_min),
            failures_refilled: Instant::now(),
        })
    }

    /// Counts one more connection from `ip`.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
    ) -> Result<Option<AddressPermit>, TooManyConnections> {
        if self.max_connections == 0 && self.connects_per_sec == 0 && self.failures_per_min == 0 {
            return Ok(None);
        }
        let key = address_key(ip);
        let now = Instant::now();
        let mut entries = self.lock();
        self.sweep(&mut entries, now);
        let entry = self.entry(&mut entries, key);
        if self.max_connections != 0 && entry.connections >= self.max_connections {
            return Err(TooManyConnections {
                limit: self.max_connections,
            });
        }
        entry.connections += 1;
        Ok(Some(AddressPermit {
            limits: Arc::clone(self),
            key,
        }))
    }

    /// Takes one CONNECT attempt from `ip`'s bucket; false when it is empty.
    pub(crate) fn connect_attempt(&self, ip: IpAddr) -> bool {
        if self.connects_per_sec == 0 {
            return true;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        self.sweep(&mut entries, now);
        let entry = self.entry(&mut entries, address_key(ip));
        self.refill(entry, now);
        if entry.tokens >= 1.0 {
            entry.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes one failed login from `ip`'s allowance before its credentials
    /// are checked: false (and nothing taken) once it is used up, and then
    /// the login is not even tried. Taken before, not after, the check, so
    /// many guesses sent at once cannot all be checked before the first
    /// failure counts. A login that does not fail gives it back with
    /// [`AddressLimits::login_done`].
    pub(crate) fn login_begins(&self, ip: IpAddr) -> bool {
        if self.failures_per_min == 0 {
            return true;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        self.sweep(&mut entries, now);
        let entry = self.entry(&mut entries, address_key(ip));
        self.refill_failures(entry, now);
        if entry.failures_left >= 1.0 {
            entry.failures_left -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back what [`AddressLimits::login_begins`] took, for a login
    /// that did not fail on its credentials.
    pub(crate) fn login_done(&self, ip: IpAddr) {
        if self.failures_per_min == 0 {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        let entry = self.entry(&mut entries, address_key(ip));
        self.refill_failures(entry, now);
        entry.failures_left = (entry.failures_left + 1.0).min(f64::from(self.failures_per_min));
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// Sessions per user on this server.
#[derive(Debug, Default)]
pub(crate) struct UserSessions {
    counts: Mutex<HashMap<Arc<str>, usize>>,
}

/// One session counted against its user; dropping it releases it.
#[derive(Debug)]
pub(crate) struct UserSlot {
    sessions: Arc<UserSessions>,
    name: Arc<str>,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut counts = self
            .sessions
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.name) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.name);
            }
        }
    }
}

impl UserSessions {
    /// Counts one more session of `name`, unless it has `limit` already
    /// (zero: no limit).
    pub(crate) fn try_add(self: &Arc<Self>, name: &str, limit: usize) -> Option<UserSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let name: Arc<str> = match counts.get_key_value(name) {
            Some((key, count)) => {
                if limit != 0 && *count >= limit {
                    return None;
                }
                Arc::clone(key)
            }
            None => name.into(),
        };
        *counts.entry(Arc::clone(&name)).or_insert(0) += 1;
        Some(UserSlot {
            sessions: Arc::clone(self),
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNetwork = "10.1.0.0/16".parse().expect("net");
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        let one: IpNetwork = "127.0.0.1".parse().expect("net");
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        let v6: IpNetwork = "fd00::/8".parse().expect("net");
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        let all: IpNetwork = "0.0.0.0/0".parse().expect("net");
        assert!(all.contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "nonsense", "1.2.3.4/x", "::/129"] {
            assert!(bad.parse::<IpNetwork>().is_err(), "{bad}");
        }
    }

    #[test]
    fn connections_per_address_are_bounded_and_released() {
        let limits = AddressLimits::new(2, 0, 0);
        let a = limits.admit(ip("192.0.2.1")).expect("first");
        let _b = limits.admit(ip("192.0.2.1")).expect("second");
        assert_eq!(
            limits.admit(ip("192.0.2.1")).err(),
            Some(TooManyConnections { limit: 2 })
        );
        assert!(limits.admit(ip("192.0.2.2")).is_ok());
        drop(a);
        assert!(limits.admit(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_address() {
        let limits = AddressLimits::new(1, 0, 0);
        let _a = limits.admit(ip("2001:db8:1:2::1")).expect("first");
        assert!(limits.admit(ip("2001:db8:1:2:ffff::9")).is_err());
        assert!(limits.admit(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn connect_attempts_are_rate_limited_per_address() {
        let limits = AddressLimits::new(0, 3, 0);
        let addr = ip("198.51.100.7");
        assert!((0..3).all(|_| limits.connect_attempt(addr)));
        assert!(!limits.connect_attempt(addr));
        assert!(limits.connect_attempt(ip("198.51.100.8")));
    }

    #[test]
    fn failed_logins_per_address_are_limited() {
        let limits = AddressLimits::new(0, 0, 3);
        let addr = ip("198.51.100.9");
        // Logins that succeed cost nothing…
        for _ in 0..10 {
            assert!(limits.login_begins(addr));
            limits.login_done(addr);
        }
        // …failed ones use up the allowance, counted when they start.
        for _ in 0..3 {
            assert!(limits.login_begins(addr));
        }
        assert!(!limits.login_begins(addr));
        assert!(limits.login_begins(ip("198.51.100.10")));
    }

    #[test]
    fn entries_go_once_idle() {
        let limits = AddressLimits::new(10, 0, 0);
        let permit = limits.admit(ip("203.0.113.1")).expect("admit");
        assert_eq!(limits.tracked(), 1);
        drop(permit);
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn sessions_per_user_are_bounded() {
        let sessions = Arc::new(UserSessions::default());
        let a = sessions.try_add("alice", 2).expect("first");
        let _b = sessions.try_add("alice", 2).expect("second");
        assert!(sessions.try_add("alice", 2).is_none());
        assert!(sessions.try_add("bob", 2).is_some());
        drop(a);
        assert!(sessions.try_add("alice", 2).is_some());
        assert!(sessions.try_add("carol", 0).is_some());
    }
}
