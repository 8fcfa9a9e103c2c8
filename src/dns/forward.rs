//! Forwarding what the agent does not serve to the upstream resolvers.
//!
//! The query is relayed as bytes with a fresh ID (so a spoofed answer must
//! guess it), over UDP first; a truncated upstream answer is relayed as is to
//! a UDP client (which retries over TCP) and retried over TCP for a TCP
//! client. Each upstream gets `timeout`; when all fail the client gets
//! SERVFAIL, never silence.

use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Why an upstream did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    Timeout,
    Unreachable,
    BadResponse,
    NoUpstream,
}

impl UpstreamError {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::BadResponse => "bad_response",
            Self::NoUpstream => "no_upstream",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    pub(crate) upstreams: Vec<SocketAddr>,
    pub(crate) timeout: Duration,
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

impl Forwarder {
    /// Sends `query` upstream and returns the answer with the client's ID.
    pub(crate) async fn forward(
        &self,
        query: &[u8],
        over_tcp: bool,
    ) -> Result<Vec<u8>, UpstreamError> {
        if self.upstreams.is_empty() {
            return Err(UpstreamError::NoUpstream);
        }
        let client_id = [query[0], query[1]];
        let mut last = UpstreamError::Unreachable;
        for upstream in &self.upstreams {
            let id: u16 = rand::rng().random();
            let mut packet = query.to_vec();
            packet[..2].copy_from_slice(&id.to_be_bytes());
            let result = if over_tcp {
                self.over_tcp(*upstream, &packet).await
            } else {
                self.over_udp(*upstream, &packet).await
            };
            match result {
                Ok(mut answer) => {
                    if answer.len() < 12 || answer[..2] != id.to_be_bytes() || answer[2] & 0x80 == 0
                    {
                        last = UpstreamError::BadResponse;
                        continue;
                    }
                    answer[..2].copy_from_slice(&client_id);
                    return Ok(answer);
                }
                Err(error) => last = error,
            }
        }
        Err(last)
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn an_unanswering_upstream_times_out() {
        // A bound socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let forwarder = Forwarder {
            upstreams: vec![silent.local_addr().unwrap()],
            timeout: Duration::from_millis(200),
        };
        let query = crate::dns::wire::tests::query_packet(
            "example.org.",
            hickory_proto::rr::RecordType::A,
            None,
        );
        assert_eq!(
            forwarder.forward(&query, false).await,
            Err(UpstreamError::Timeout)
        );
    }
}
