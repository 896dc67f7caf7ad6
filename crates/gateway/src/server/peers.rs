//! Connections per client: one client (an IPv4 address, or an IPv6 /64, which one host may fill
//! with addresses) holds at most a share of a listener's connections. On the admin listener
//! that is [`PER_PEER`], so a single client holding idle connections cannot take every slot and
//! leave `/readyz` unanswered for the load balancers and Prometheus that probe it from
//! elsewhere; on the webhook listener, `[server] max_connections_per_client` when set.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The most admin connections one client holds at once (of the listener's 64).
pub(super) const PER_PEER: usize = 16;

/// The open connections per client of one listener, and how many one client may hold.
#[derive(Debug, Clone)]
pub(super) struct Peers {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    limit: usize,
}

/// One connection's share of its client's count, given back when dropped.
#[derive(Debug)]
pub(super) struct PeerSlot {
    peers: Peers,
    key: IpAddr,
}

impl Peers {
    /// No connection open yet; one client may hold `limit`.
    pub(super) fn new(limit: usize) -> Peers {
        Peers {
            open: Arc::default(),
            limit,
        }
    }

    /// How many connections one client may hold.
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for a new connection from `ip`, unless its client holds its limit already.
    pub(super) fn take(&self, ip: IpAddr) -> Option<PeerSlot> {
        let key = client(ip);
        let mut open = self.open.lock().ok()?;
        let n = open.entry(key).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            key,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let Ok(mut open) = self.peers.open.lock() else {
            return;
        };
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The client an address belongs to: an IPv4 address (an IPv4-mapped IPv6 one too, and one
/// behind a NAT64 gateway's well-known prefix `64:ff9b::/96`, whose /64 all IPv4 clients of
/// that gateway share), or the /64 of an IPv6 address.
pub(crate) fn client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                    let o = v6.octets();
                    return IpAddr::V4(std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]));
                }
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_holds_at_most_its_share_and_gets_it_back() {
        let peers = Peers::new(PER_PEER);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let held: Vec<PeerSlot> = (0..PER_PEER).filter_map(|_| peers.take(a)).collect();
        assert_eq!(held.len(), PER_PEER);
        assert!(peers.take(a).is_none(), "past its share");
        // The same client through an IPv4-mapped address: the same share.
        assert!(peers.take("::ffff:10.0.0.1".parse().expect("ip")).is_none());
        // Another client is not held up.
        assert!(peers.take("10.0.0.2".parse().expect("ip")).is_some());
        drop(held);
        assert!(peers.take(a).is_some(), "given back");
        assert_eq!(
            peers.open.lock().map(|m| m.len()).unwrap_or(9),
            0,
            "no entry left"
        );
    }

    #[test]
    fn the_limit_is_as_configured() {
        // What the refusal's log line reports.
        assert_eq!(Peers::new(PER_PEER).limit(), PER_PEER);
        assert_eq!(Peers::new(7).limit(), 7);
    }

    #[test]
    fn a_client_behind_nat64_is_its_ipv4_address() {
        let peers = Peers::new(1);
        let _held = peers
            .take("64:ff9b::a00:1".parse().expect("ip"))
            .expect("first");
        // The same IPv4 client, not another of the NAT64 gateway's.
        assert!(peers.take("10.0.0.1".parse().expect("ip")).is_none());
        assert!(peers.take("64:ff9b::a00:2".parse().expect("ip")).is_some());
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        let peers = Peers::new(PER_PEER);
        let held: Vec<PeerSlot> = (0..PER_PEER)
            .filter_map(|i| peers.take(format!("2001:db8:1:2::{i:x}").parse().expect("ip")))
            .collect();
        assert_eq!(held.len(), PER_PEER);
        assert!(peers
            .take("2001:db8:1:2:ffff::1".parse().expect("ip"))
            .is_none());
        assert!(peers.take("2001:db8:1:3::1".parse().expect("ip")).is_some());
    }
}
