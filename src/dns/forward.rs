//! Asking the upstream resolvers: which ones (per-domain routes, health,
//! speed) and the exchange itself.
//!
//! Each query goes over UDP with its own random ID (a spoofed answer must
//! guess it, and match the question); a truncated answer is asked again
//! over TCP of the same upstream, so what gets cached is whole whatever the
//! client's transport. Upstreams are tried fastest first (smoothed RTT, as
//! CoreDNS's forward does not and Unbound does); one that failed
//! [`DOWN_AFTER`](super::upstream::DOWN_AFTER) times in a row is left out for a growing pause, and when
//! every upstream of a name is out the query fails at once (the client gets
//! SERVFAIL, or a stale answer, promptly rather than after every timeout).
//! One that has answered nothing for
//! [`SILENT_AFTER`](super::upstream::SILENT_AFTER) with a query waiting
//! counts as failing for serve-stale before its first timeout.
//! One query in [`EXPLORE_ONE_IN`] tries the second-fastest first, so a
//! recovered or faster upstream is noticed.
//!
//! Owns: upstream choice and health, the wire exchange. May not touch: the
//! cache (see [`super::resolve`]), the client's sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::upstream::Upstream;

/// Why no upstream answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    Timeout,
    Unreachable,
    BadResponse,
    NoUpstream,
    /// Every upstream for the name failed recently; not asked.
    AllDown,
}

impl UpstreamError {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::BadResponse => "bad_response",
            Self::NoUpstream => "no_upstream",
            Self::AllDown => "all_down",
        }
    }
}

/// One query in this many tries the second-fastest upstream first.
const EXPLORE_ONE_IN: u32 = 20;

/// A domain whose names go to upstreams of their own (`--forward`).
#[derive(Debug, Clone)]
struct Route {
    /// Lower-case, no final dot: "consul", "corp.example".
    domain: String,
    upstreams: Vec<Arc<Upstream>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    upstreams: Vec<Arc<Upstream>>,
    routes: Vec<Route>,
    pub(crate) timeout: Duration,
    base: Instant,
}

/// The nameservers of a resolv.conf, on port 53, minus `exclude` (the
/// agent's own address: forwarding to ourselves would loop).
pub(crate) fn upstreams_from_resolv_conf(text: &str, exclude: SocketAddr) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next())?
        })
        .filter_map(|address| {
            // Drop an IPv6 zone ("fe80::1%eth0"): SocketAddr cannot hold it.
            let address = address.split('%').next()?;
            address.parse().ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|addr| *addr != exclude)
        .collect()
}

/// Parses `--upstream` entries: `ip` or `ip:port` or `[v6]:port`.
pub(crate) fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{text:?} is not an address (ip, ip:port or [ipv6]:port)"))
}

/// Parses a `--forward` entry: `domain=ip[:port]` (repeat the domain for
/// several upstreams). The domain is lower-cased, its final dot dropped.
pub(crate) fn parse_route(text: &str) -> Result<(String, SocketAddr), String> {
    let (domain, upstream) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not domain=ip[:port]"))?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(valid_label) {
        return Err(format!("{text:?}: {domain:?} is not a domain name"));
    }
    Ok((
        domain,
        parse_upstream(upstream).map_err(|e| format!("{text:?}: {e}"))?,
    ))
}

impl Forwarder {
    /// `routes` are (domain, upstream) pairs; a domain may repeat.
    pub(crate) fn new(
        upstreams: Vec<SocketAddr>,
        routes: &[(String, SocketAddr)],
        timeout: Duration,
    ) -> Self {
        let mut grouped: Vec<Route> = Vec::new();
        for (domain, addr) in routes {
            let upstream = Arc::new(Upstream::new(*addr));
            match grouped.iter_mut().find(|r| &r.domain == domain) {
                Some(route) => route.upstreams.push(upstream),
                None => grouped.push(Route {
                    domain: domain.clone(),
                    upstreams: vec![upstream],
                }),
            }
        }
        // Longest domain first: the most specific route wins.
        grouped.sort_by_key(|r| std::cmp::Reverse(r.domain.len()));
        Self {
            upstreams: upstreams
                .into_iter()
                .map(|a| Arc::new(Upstream::new(a)))
                .collect(),
            routes: grouped,
            timeout,
            base: Instant::now(),
        }
    }

    /// The upstreams for `name` (lower-case, final dot allowed): those of
    /// the longest `--forward` domain it is in, else the default ones.
    pub(crate) fn upstreams_for(&self, name: &str) -> &[Arc<Upstream>] {
        let name = name.trim_end_matches('.');
        for route in &self.routes {
            let inside = name == route.domain
                || name
                    .strip_suffix(route.domain.as_str())
                    .is_some_and(|rest| rest.ends_with('.'));
            if inside {
                return &route.upstreams;
            }
        }
        &self.upstreams
    }

    /// Whether the last exchange with every upstream of `name` failed, or
    /// each has been silent for a while with a query waiting. The
    /// resolver then serves that name's stale entry at once instead of
    /// making its client wait out `--stale-client-timeout` for
    /// an upstream that has just stopped answering; the refresh it starts
    /// is the probe that ends this state.
    pub(crate) fn failing(&self, name: &str) -> bool {
        let all = self.upstreams_for(name);
        let since_base = self.base.elapsed();
        !all.is_empty() && all.iter().all(|u| u.failing(since_base))
    }

    /// Sends `packet` (a query with its own ID) to the upstreams of `name`,
    /// fastest healthy first, until one answers.
    pub(crate) async fn exchange(
        &self,
        name: &str,
        packet: &[u8],
        rtt: &prometheus_client::metrics::histogram::Histogram,
    ) -> Result<Vec<u8>, UpstreamError> {
        let all = self.upstreams_for(name);
        if all.is_empty() {
            return Err(UpstreamError::NoUpstream);
        }
        let since_base = self.base.elapsed();
        let mut order: Vec<&Arc<Upstream>> = all.iter().filter(|u| !u.paused(since_base)).collect();
        if order.is_empty() {
            return Err(UpstreamError::AllDown);
        }
        order.sort_by_key(|u| u.srtt_us());
        if order.len() > 1 && rand::rng().random_ratio(1, EXPLORE_ONE_IN) {
            order.swap(0, 1);
        }
        let mut last = UpstreamError::Unreachable;
        for upstream in order {
            let started = Instant::now();
            upstream.sending(self.base.elapsed());
            match self.ask(upstream.addr, packet).await {
                Ok(answer) => {
                    let took = started.elapsed();
                    upstream.succeeded(took);
                    rtt.observe(took.as_secs_f64());
                    return Ok(answer);
                }
                Err(error) => {
                    upstream.failed(self.base.elapsed());
                    last = error;
                }
            }
        }
        Err(last)
    }

    /// One upstream: UDP, then TCP when the answer is truncated (the
    /// truncated one when TCP fails: the client can still retry).
    async fn ask(&self, upstream: SocketAddr, packet: &[u8]) -> Result<Vec<u8>, UpstreamError> {
        let answer = self.over_udp(upstream, packet).await?;
        check(packet, &answer)?;
        if answer[2] & 0x02 == 0 {
            return Ok(answer);
        }
        match self.over_tcp(upstream, packet).await {
            Ok(whole) if check(packet, &whole).is_ok() => Ok(whole),
            _ => Ok(answer),
        }
    }

    async fn over_udp(
        &self,
        upstream: SocketAddr,
        packet: &[u8],
    ) -> Result<Vec<u8>, UpstreamError> {
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|_| UpstreamError::Unreachable)?;
        socket
            .connect(upstream)
            .await
            .map_err(|_| UpstreamError::Unreachable)?;
        socket
            .send(packet)
            .await
            .map_err(|_| UpstreamError::Unreachable)?;
        let mut buffer = vec![0u8; 65535];
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let received = tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await;
            match received {
                Err(_) => return Err(UpstreamError::Timeout),
                Ok(Err(_)) => return Err(UpstreamError::Unreachable),
                // A stray datagram with another ID: keep waiting for ours.
                Ok(Ok(len)) if len >= 2 && buffer[..2] != packet[..2] => continue,
                Ok(Ok(len)) => {
                    buffer.truncate(len);
                    return Ok(buffer);
                }
            }
        }
    }

    async fn over_tcp(
        &self,
        upstream: SocketAddr,
        packet: &[u8],
    ) -> Result<Vec<u8>, UpstreamError> {
        let exchange = async {
            let mut stream = TcpStream::connect(upstream)
                .await
                .map_err(|_| UpstreamError::Unreachable)?;
            let mut framed = Vec::with_capacity(packet.len() + 2);
            framed.extend_from_slice(&(packet.len() as u16).to_be_bytes());
            framed.extend_from_slice(packet);
            stream
                .write_all(&framed)
                .await
                .map_err(|_| UpstreamError::Unreachable)?;
            let len = stream
                .read_u16()
                .await
                .map_err(|_| UpstreamError::BadResponse)?;
            let mut answer = vec![0u8; len as usize];
            stream
                .read_exact(&mut answer)
                .await
                .map_err(|_| UpstreamError::BadResponse)?;
            Ok(answer)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout))
    }
}

/// An answer to `query`: same ID, QR set, one question that is ours
/// (letter case aside: some servers change it).
fn check(query: &[u8], answer: &[u8]) -> Result<(), UpstreamError> {
    // Our own query: an uncompressed name, walked label by label.
    let question = {
        let mut at = 12;
        while let Some(&len) = query.get(at).filter(|&&len| len != 0) {
            at += 1 + len as usize;
        }
        query.get(12..at + 5)
    };
    let ok = answer.len() >= 12
        && answer[..2] == query[..2]
        && answer[2] & 0x80 != 0
        && answer[4..6] == [0, 1]
        && question.is_some_and(|q| {
            answer
                .get(12..12 + q.len())
                .is_some_and(|a| a.eq_ignore_ascii_case(q))
        });
    if ok {
        Ok(())
    } else {
        Err(UpstreamError::BadResponse)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::dns::upstream::DOWN_AFTER;
    use hickory_proto::rr::RecordType;

    fn rtt() -> prometheus_client::metrics::histogram::Histogram {
        prometheus_client::metrics::histogram::Histogram::new([0.1])
    }

    #[test]
    fn resolv_conf_nameservers_minus_ourselves() {
        let text = "search svc.cluster.local\nnameserver 10.96.0.10\nnameserver 127.0.0.1\n# nameserver 1.1.1.1\nnameserver fe80::1%eth0\noptions ndots:5\n";
        let ours: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let upstreams = upstreams_from_resolv_conf(text, ours);
        assert_eq!(
            upstreams,
            [
                "10.96.0.10:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn upstream_flags_take_ports_or_not() {
        assert_eq!(parse_upstream("10.0.0.1").unwrap().port(), 53);
        assert_eq!(parse_upstream("10.0.0.1:5353").unwrap().port(), 5353);
        assert_eq!(parse_upstream("[::1]:54").unwrap().port(), 54);
        assert!(parse_upstream("dns.example").is_err());
    }

    #[test]
    fn routes_pick_the_longest_domain() {
        let route = |t: &str| parse_route(t).unwrap();
        let routes = [
            route("Consul.=10.0.0.5:8600"),
            route("corp.example=10.0.1.1"),
            route("eu.corp.example=10.0.2.1"),
            route("corp.example=10.0.1.2"),
        ];
        let forwarder = Forwarder::new(
            vec!["10.9.9.9:53".parse().unwrap()],
            &routes,
            Duration::from_secs(1),
        );
        let addrs = |name: &str| -> Vec<String> {
            forwarder
                .upstreams_for(name)
                .iter()
                .map(|u| u.addr.to_string())
                .collect()
        };
        assert_eq!(addrs("web.service.consul."), ["10.0.0.5:8600"]);
        assert_eq!(addrs("consul."), ["10.0.0.5:8600"]);
        assert_eq!(addrs("a.corp.example."), ["10.0.1.1:53", "10.0.1.2:53"]);
        assert_eq!(addrs("x.eu.corp.example."), ["10.0.2.1:53"]);
        // A suffix that is not a whole label is not inside.
        assert_eq!(addrs("notconsul."), ["10.9.9.9:53"]);
        assert_eq!(addrs("example.org."), ["10.9.9.9:53"]);
        for bad in [
            "consul",
            "=10.0.0.1",
            "bad domain=10.0.0.1",
            "consul=nowhere",
        ] {
            assert!(parse_route(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_an_answer_to_our_question_is_taken() {
        let query = crate::dns::wire::tests::query_packet("www.example.org.", RecordType::A, None);
        let mut answer = query.clone();
        answer[2] |= 0x80;
        assert_eq!(check(&query, &answer), Ok(()));
        // Letter case changed by the server: still ours.
        answer[13] = b'W';
        assert_eq!(check(&query, &answer), Ok(()));
        let mut other_id = answer.clone();
        other_id[1] ^= 1;
        let other_name =
            crate::dns::wire::tests::query_packet("www.example.net.", RecordType::A, None);
        let mut other_name = other_name.clone();
        other_name[2] |= 0x80;
        let mut not_a_response = answer.clone();
        not_a_response[2] &= 0x7F;
        for bad in [
            &other_id,
            &other_name,
            &not_a_response,
            &answer[..11].to_vec(),
        ] {
            assert_eq!(check(&query, bad), Err(UpstreamError::BadResponse));
        }
    }

    #[tokio::test]
    async fn a_silent_upstream_times_out_then_is_left_out() {
        // A bound socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let forwarder = Forwarder::new(
            vec![silent.local_addr().unwrap()],
            &[],
            Duration::from_millis(50),
        );
        let query = crate::dns::wire::tests::query_packet("example.org.", RecordType::A, None);
        for _ in 0..DOWN_AFTER {
            assert_eq!(
                forwarder.exchange("example.org.", &query, &rtt()).await,
                Err(UpstreamError::Timeout)
            );
        }
        // Down now: the next query fails at once, without asking.
        assert_eq!(
            forwarder.exchange("example.org.", &query, &rtt()).await,
            Err(UpstreamError::AllDown)
        );
    }

    #[tokio::test]
    async fn a_silent_upstream_counts_as_failing_before_its_timeout() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let forwarder = Forwarder::new(
            vec![silent.local_addr().unwrap()],
            &[],
            Duration::from_secs(5),
        );
        assert!(!forwarder.failing("example.org."));
        let query = crate::dns::wire::tests::query_packet("example.org.", RecordType::A, None);
        let waiting = {
            let forwarder = forwarder.clone();
            tokio::spawn(async move { forwarder.exchange("example.org.", &query, &rtt()).await })
        };
        // Well before the 5 s timeout, the query still waiting.
        let deadline = Instant::now() + Duration::from_secs(3);
        while !forwarder.failing("example.org.") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(forwarder.failing("example.org."));
        assert!(!waiting.is_finished());
        waiting.abort();
    }

    #[tokio::test]
    async fn the_faster_upstream_is_preferred() {
        // Two responders; the slow one sleeps before answering.
        async fn responder(delay: Duration) -> (SocketAddr, Arc<AtomicU32>) {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = socket.local_addr().unwrap();
            let count = Arc::new(AtomicU32::new(0));
            let seen = count.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 512];
                while let Ok((len, peer)) = socket.recv_from(&mut buffer).await {
                    seen.fetch_add(1, Ordering::Relaxed);
                    let mut answer = buffer[..len].to_vec();
                    answer[2] |= 0x80;
                    tokio::time::sleep(delay).await;
                    let _ = socket.send_to(&answer, peer).await;
                }
            });
            (addr, count)
        }
        let (slow, slow_count) = responder(Duration::from_millis(30)).await;
        let (fast, fast_count) = responder(Duration::ZERO).await;
        let forwarder = Forwarder::new(vec![slow, fast], &[], Duration::from_secs(2));
        let query = crate::dns::wire::tests::query_packet("example.org.", RecordType::A, None);
        for _ in 0..60 {
            forwarder
                .exchange("example.org.", &query, &rtt())
                .await
                .unwrap();
        }
        let (slow, fast) = (
            slow_count.load(Ordering::Relaxed),
            fast_count.load(Ordering::Relaxed),
        );
        // Both measured; then the fast one takes the bulk (the slow one
        // only gets its share of exploration).
        assert!(slow >= 1 && fast > 3 * slow, "slow {slow}, fast {fast}");
    }
}
