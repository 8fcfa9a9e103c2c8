//! A scripted upstream resolver the test controls: UDP and TCP on a free
//! port of 127.0.0.1, answers built with hickory-proto, every query that
//! reaches it counted. Knobs: the TTL it gives, a delay before each answer,
//! and dropping everything (an outage).
//!
//! Names it knows: anything under `nx.` … → NXDOMAIN, `nodata.` … →
//! NODATA (both with an SOA whose TTL and MINIMUM are the knobs), `big.` …
//! → 100 A records (truncated over UDP, whole over TCP), anything else → one
//! A (192.0.2.53) or AAAA (2001:db8::53) record.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

pub const ANSWER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

#[derive(Default)]
struct Knobs {
    ttl: AtomicU32,
    soa_ttl: AtomicU32,
    soa_minimum: AtomicU32,
    delay_ms: AtomicU64,
    drop_all: AtomicBool,
    stop: AtomicBool,
    /// (lower-cased name without the final dot, type) of each query.
    seen: Mutex<Vec<(String, RecordType)>>,
}

pub struct Scripted {
    pub addr: SocketAddr,
    knobs: Arc<Knobs>,
}

impl Scripted {
    /// Answers with TTL `ttl` (SOA TTL and MINIMUM 60) at once.
    pub fn start(ttl: u32) -> Scripted {
        // The UDP port's TCP twin may be taken (other tests run in
        // parallel): another pair then.
        let (udp, tcp, addr) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let addr = udp.local_addr().ok()?;
                let tcp = TcpListener::bind(addr).ok()?;
                Some((udp, tcp, addr))
            })
            .expect("a free UDP and TCP port pair");
        let knobs = Arc::new(Knobs::default());
        knobs.ttl.store(ttl, Ordering::SeqCst);
        knobs.soa_ttl.store(60, Ordering::SeqCst);
        knobs.soa_minimum.store(60, Ordering::SeqCst);
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let k = knobs.clone();
        std::thread::spawn(move || serve_udp(udp, k));
        tcp.set_nonblocking(true).unwrap();
        let k = knobs.clone();
        std::thread::spawn(move || serve_tcp(tcp, k));
        Scripted { addr, knobs }
    }

    /// The SOA of negative answers: its TTL and MINIMUM.
    pub fn set_soa(&self, ttl: u32, minimum: u32) {
        self.knobs.soa_ttl.store(ttl, Ordering::SeqCst);
        self.knobs.soa_minimum.store(minimum, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.knobs
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// An outage: every query is read, counted and dropped.
    pub fn drop_all(&self, drop: bool) {
        self.knobs.drop_all.store(drop, Ordering::SeqCst);
    }

    /// Queries for `name` (any case, final dot optional) that reached it.
    pub fn count(&self, name: &str) -> usize {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.knobs
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| *n == name)
            .count()
    }

    pub fn total(&self) -> usize {
        self.knobs.seen.lock().unwrap().len()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.knobs.stop.store(true, Ordering::SeqCst);
    }
}

/// The answer to `query`, or None to drop it.
fn answer(query: &[u8], knobs: &Knobs, over_udp: bool) -> Option<Vec<u8>> {
    let asked = Message::from_vec(query).ok()?;
    let question = asked.queries.first()?.clone();
    let name = question.name().to_ascii().to_ascii_lowercase();
    let name = name.trim_end_matches('.').to_string();
    knobs
        .seen
        .lock()
        .unwrap()
        .push((name.clone(), question.query_type()));
    if knobs.drop_all.load(Ordering::SeqCst) {
        return None;
    }
    let ttl = knobs.ttl.load(Ordering::SeqCst);
    let mut message = Message::response(asked.metadata.id, asked.metadata.op_code);
    message.metadata.message_type = MessageType::Response;
    message.metadata.recursion_desired = asked.metadata.recursion_desired;
    message.metadata.recursion_available = true;
    message.add_query(question.clone());
    if let Some(edns) = asked.edns.clone() {
        message.set_edns(edns);
    }
    let first = name.split('.').next().unwrap_or("");
    let owner = question.name().clone();
    match first {
        "nx" | "nodata" => {
            if first == "nx" {
                message.metadata.response_code = ResponseCode::NXDomain;
            }
            let zone = Name::from_str("example.").unwrap();
            let _ = message.add_authority(Record::from_rdata(
                zone,
                knobs.soa_ttl.load(Ordering::SeqCst),
                RData::SOA(SOA::new(
                    Name::from_str("ns.example.").unwrap(),
                    Name::from_str("hostmaster.example.").unwrap(),
                    1,
                    3600,
                    600,
                    86400,
                    knobs.soa_minimum.load(Ordering::SeqCst),
                )),
            ));
        }
        "big" => {
            for i in 0..100 {
                message.add_answer(Record::from_rdata(
                    owner.clone(),
                    ttl,
                    RData::A(A(Ipv4Addr::new(198, 51, 100, i))),
                ));
            }
            let limit = asked.edns.as_ref().map_or(512, |e| e.max_payload()) as usize;
            let bytes = message.to_vec().ok()?;
            if over_udp && bytes.len() > limit {
                let mut cut = message.truncate();
                cut.metadata.truncation = true;
                return cut.to_vec().ok();
            }
            return Some(bytes);
        }
        _ => {
            let data = match question.query_type() {
                RecordType::AAAA => {
                    RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53)))
                }
                _ => RData::A(A(ANSWER_V4)),
            };
            message.add_answer(Record::from_rdata(owner, ttl, data));
        }
    }
    message.to_vec().ok()
}

fn delay(knobs: &Knobs) -> Duration {
    Duration::from_millis(knobs.delay_ms.load(Ordering::SeqCst))
}

fn serve_udp(socket: UdpSocket, knobs: Arc<Knobs>) {
    let socket = Arc::new(socket);
    let mut buffer = vec![0u8; 4096];
    while !knobs.stop.load(Ordering::SeqCst) {
        let Ok((len, peer)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let Some(reply) = answer(&buffer[..len], &knobs, true) else {
            continue;
        };
        let wait = delay(&knobs);
        if wait.is_zero() {
            let _ = socket.send_to(&reply, peer);
        } else {
            // Each answer waits on its own: concurrent queries are not
            // serialized behind one another's delay.
            let socket = socket.clone();
            std::thread::spawn(move || {
                std::thread::sleep(wait);
                let _ = socket.send_to(&reply, peer);
            });
        }
    }
}

fn serve_tcp(listener: TcpListener, knobs: Arc<Knobs>) {
    while !knobs.stop.load(Ordering::SeqCst) {
        let Ok((mut stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let knobs = knobs.clone();
        std::thread::spawn(move || {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            loop {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).is_err() {
                    return;
                }
                let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                if stream.read_exact(&mut query).is_err() {
                    return;
                }
                let Some(reply) = answer(&query, &knobs, false) else {
                    continue;
                };
                std::thread::sleep(delay(&knobs));
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                if stream.write_all(&framed).is_err() {
                    return;
                }
            }
        });
    }
}
