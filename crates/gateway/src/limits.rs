//! Caps on what one client address or one user may hold open at once, so
//! that nobody starves everyone else of the upstream pools:
//! `GATEWAY_MAX_REQUESTS_PER_CLIENT` (connections per client address,
//! counted when a connection is accepted: an HTTP/1.1 connection carries one
//! request at a time, so this caps the address's open requests and streams
//! too), `GATEWAY_MAX_REQUESTS_PER_USER` and
//! `GATEWAY_MAX_STREAMS_PER_USER` (per token `tenant_id` and `sub`: the
//! same name in another tenant is another user). Past a cap the request
//! is 429 E1001 before any upstream is called. A cap of 0 is no cap.
//!
//! Behind trusted proxies (`GATEWAY_FORWARDED_HOPS` above 0) every client
//! comes on the proxies' connections, so the per-address cap counts open
//! requests by the address the proxies appended to `X-Forwarded-For`
//! instead ([`Limits::forwarded`]).
//!
//! Each route whose upstream pool other routes share may hold at most
//! `GATEWAY_ROUTE_MAX_POOL_PERCENT` of that pool in open requests (503
//! E5000 past it, [`Limits::route`]): anonymous sign-in traffic can never
//! take the connections approvals need.
//!
//! A [`Slot`] is held for the connection's or the request's whole life (for
//! a stream, until it ends) and given back when it is dropped.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::GatewayError;
use crate::ids::Prehashed;

/// A user's key in the per-user counts: a keyed hash (random per process)
/// of its (tenant, user) text, computed once per verified token
/// ([`crate::tokens::Verified`]) so that counting a request hashes
/// nothing. Two users share a count only if their 64-bit keys collide.
pub fn user_key(owner: &str) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one(owner)
}

/// Open counts by key, with a cap.
#[derive(Debug)]
struct Counts<K, S = RandomState> {
    cap: usize,
    open: Mutex<HashMap<K, usize, S>>,
}

impl<K: Hash + Eq + Clone, S: BuildHasher + Default> Counts<K, S> {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            open: Mutex::new(HashMap::default()),
        }
    }

    /// Counts one more for `key`; false when it is at its cap.
    fn take(&self, key: &K) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.cap {
            return false;
        }
        *n += 1;
        true
    }

    fn give_back(&self, key: &K) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let std::collections::hash_map::Entry::Occupied(mut n) = open.entry(key.clone()) {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
    }
}

/// The caps and what is open now.
#[derive(Debug)]
pub struct Limits {
    clients: Counts<IpAddr>,
    forwarded: Counts<Arc<str>>,
    users: Counts<u64, BuildHasherDefault<Prehashed>>,
    streams: Counts<u64, BuildHasherDefault<Prehashed>>,
    /// Per route in table order: its cap (0: none) and its open requests.
    routes: Vec<(usize, AtomicUsize)>,
}

/// Which count a slot was taken from.
#[derive(Debug)]
enum Key {
    Client(IpAddr),
    Forwarded(Arc<str>),
    Route(usize),
    User(u64),
    Stream(u64),
}

/// One open request (or stream) counted against its client or user.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<Limits>,
    key: Key,
}

impl Drop for Slot {
    fn drop(&mut self) {
        match &self.key {
            Key::Client(ip) => self.limits.clients.give_back(ip),
            Key::Forwarded(ip) => self.limits.forwarded.give_back(ip),
            Key::Route(index) => {
                if let Some((_, open)) = self.limits.routes.get(*index) {
                    open.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Key::User(user) => self.limits.users.give_back(user),
            Key::Stream(user) => self.limits.streams.give_back(user),
        }
    }
}

/// The slots one request holds.
#[derive(Debug, Default)]
pub struct Held {
    /// Its client address's, behind trusted proxies.
    pub client: Option<Slot>,
    /// Its route's share of the upstream pool.
    pub route: Option<Slot>,
    /// Its user's.
    pub user: Option<Slot>,
    /// Its user's streams'.
    pub stream: Option<Slot>,
}

impl Limits {
    /// Caps of requests per client address, requests per user and streams per user.
    pub fn new(per_client: usize, per_user: usize, streams_per_user: usize) -> Self {
        Self {
            clients: Counts::new(per_client),
            forwarded: Counts::new(per_client),
            users: Counts::new(per_user),
            streams: Counts::new(streams_per_user),
            routes: Vec::new(),
        }
    }

    /// With a cap of open requests per route, in table order (0: none).
    #[must_use]
    pub fn with_route_caps(mut self, caps: impl IntoIterator<Item = usize>) -> Self {
        self.routes = caps
            .into_iter()
            .map(|cap| (cap, AtomicUsize::new(0)))
            .collect();
        self
    }

    /// A slot of route `index`'s share of its pool (none without a cap).
    pub fn route(
        self: &Arc<Self>,
        index: usize,
        name: &'static str,
        held: &mut Held,
    ) -> Result<(), GatewayError> {
        let Some((cap, open)) = self.routes.get(index).filter(|(cap, _)| *cap > 0) else {
            return Ok(());
        };
        if open.fetch_add(1, Ordering::Relaxed) >= *cap {
            open.fetch_sub(1, Ordering::Relaxed);
            return Err(GatewayError::RouteBusy(name));
        }
        held.route = Some(self.slot(Key::Route(index)));
        Ok(())
    }

    /// A slot for a request from `client`, the address trusted proxies
    /// appended (none when there is no cap).
    pub fn forwarded(self: &Arc<Self>, client: &str, held: &mut Held) -> Result<(), GatewayError> {
        if self.forwarded.cap == 0 {
            return Ok(());
        }
        let client: Arc<str> = Arc::from(client);
        if !self.forwarded.take(&client) {
            return Err(GatewayError::TooManyRequests(
                "Too many open requests from this address",
            ));
        }
        held.client = Some(self.slot(Key::Forwarded(client)));
        Ok(())
    }

    /// A slot for a connection from `ip` (none when there is no cap).
    pub fn client(self: &Arc<Self>, ip: IpAddr) -> Result<Option<Slot>, GatewayError> {
        if self.clients.cap == 0 {
            return Ok(None);
        }
        if !self.clients.take(&ip) {
            return Err(GatewayError::TooManyRequests(
                "Too many open connections from this address",
            ));
        }
        Ok(Some(self.slot(Key::Client(ip))))
    }

    /// A slot for a request of `user`, and one of its streams when `stream`.
    pub fn user(
        self: &Arc<Self>,
        user: u64,
        stream: bool,
        held: &mut Held,
    ) -> Result<(), GatewayError> {
        if self.users.cap > 0 {
            if !self.users.take(&user) {
                return Err(GatewayError::TooManyRequests(
                    "Too many open requests for this user",
                ));
            }
            held.user = Some(self.slot(Key::User(user)));
        }
        if stream && self.streams.cap > 0 {
            if !self.streams.take(&user) {
                return Err(GatewayError::TooManyRequests(
                    "Too many open agent streams for this user: close one first",
                ));
            }
            held.stream = Some(self.slot(Key::Stream(user)));
        }
        Ok(())
    }

    fn slot(self: &Arc<Self>, key: Key) -> Slot {
        Slot {
            limits: self.clone(),
            key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_holds_until_a_slot_is_given_back_and_zero_is_none() {
        let limits = Arc::new(Limits::new(2, 1, 1));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let a = limits.client(ip).unwrap();
        let b = limits.client(ip).unwrap();
        assert!(limits.client(ip).is_err());
        assert!(limits.client([10, 0, 0, 2].into()).is_ok(), "per address");
        drop(a);
        assert!(limits.client(ip).is_ok());
        drop(b);
        let mut held = Held::default();
        limits.user(user_key("alice"), true, &mut held).unwrap();
        assert!(
            limits
                .user(user_key("alice"), false, &mut Held::default())
                .is_err()
        );
        drop(held);
        assert!(
            limits
                .user(user_key("alice"), true, &mut Held::default())
                .is_ok()
        );
        assert!(
            limits.clients.open.lock().unwrap().is_empty(),
            "nothing left behind"
        );
        let routes = Arc::new(Limits::new(0, 0, 0).with_route_caps([2, 0]));
        let (mut a, mut b) = (Held::default(), Held::default());
        routes.route(0, "auth", &mut a).unwrap();
        routes.route(0, "auth", &mut b).unwrap();
        assert!(routes.route(0, "auth", &mut Held::default()).is_err());
        for _ in 0..10 {
            routes.route(1, "main", &mut Held::default()).unwrap();
        }
        drop(a);
        assert!(routes.route(0, "auth", &mut Held::default()).is_ok());
        let mut by_address = Held::default();
        let proxied = Arc::new(Limits::new(1, 0, 0));
        proxied.forwarded("203.0.113.9", &mut by_address).unwrap();
        assert!(
            proxied
                .forwarded("203.0.113.9", &mut Held::default())
                .is_err()
        );
        assert!(
            proxied
                .forwarded("203.0.113.10", &mut Held::default())
                .is_ok()
        );
        let none = Arc::new(Limits::new(0, 0, 0));
        for _ in 0..100 {
            assert!(none.client(ip).unwrap().is_none());
        }
    }
}
