//! `kubedisco resolve NAME [TYPE]`: asks the agent's DNS as dig does and
//! prints the whole answer (status, flags, every section), for operators in
//! images without dig (the agent's own distroless image, `kubectl debug`).
//!
//! One query, with EDNS (1232 bytes) and RD set, as dig sends it; over UDP
//! unless `--tcp`, and a truncated UDP answer is asked again over TCP
//! (`--no-tcp-retry` shows it as it came). The message is built and read
//! by hickory-proto, not by the agent's own wire code, so what is printed
//! is what a resolver would make of the agent's bytes.
//!
//! Exit status: 0 when the server answered about the name (NOERROR, also
//! with no records, or NXDOMAIN); 1 when it could not (SERVFAIL, REFUSED
//! or any other error code) or nothing usable came back (timeout, refused
//! connection, malformed reply); 2 for bad arguments.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::Args;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};

/// The agent's `--dns-addr` default.
pub const DEFAULT_SERVER: &str = "127.0.0.1:1053";

/// What the agent advertises, and so what we offer.
const EDNS_PAYLOAD: u16 = 1232;

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The name to look up (always absolute: no search list). An IP
    /// address asks for its PTR record.
    pub name: String,
    /// The record type: A, AAAA, SRV, PTR, TXT, SOA, CNAME, NS, MX, ANY...
    /// (default A; PTR for an IP address).
    #[arg(value_name = "TYPE")]
    pub record_type: Option<String>,
    /// The agent's DNS address, ip[:port] (port 53 when left out).
    #[arg(long, env = "KUBEDISCO_DNS_ADDR", default_value = DEFAULT_SERVER,
          value_parser = crate::dns::forward::parse_upstream)]
    pub server: SocketAddr,
    /// Ask over TCP instead of UDP.
    #[arg(long)]
    pub tcp: bool,
    /// Show a truncated UDP answer as it came, instead of asking again
    /// over TCP.
    #[arg(long, conflicts_with = "tcp")]
    pub no_tcp_retry: bool,
    /// Print only the answer records' data, one per line (dig +short).
    #[arg(long)]
    pub short: bool,
    /// Give up when no answer has come within this time.
    #[arg(long, default_value = "5s", value_parser = crate::duration::parse_duration)]
    pub timeout: Duration,
}

pub fn run(args: &ResolveArgs) -> ExitCode {
    let query = match Question::parse(&args.name, args.record_type.as_deref()) {
        Ok(query) => query,
        Err(message) => {
            eprintln!("kubedisco resolve: {message}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let mut over_tcp = args.tcp;
    let mut retried = false;
    let answer = loop {
        match ask(&query.packet(), args.server, over_tcp, args.timeout) {
            Ok(answer) if !over_tcp && answer.metadata.truncation && !args.no_tcp_retry => {
                over_tcp = true;
                retried = true;
            }
            Ok(answer) => break answer,
            Err(error) => {
                let transport = if over_tcp { "TCP" } else { "UDP" };
                eprintln!(
                    "kubedisco resolve: no answer from {} over {transport}: {error}",
                    args.server
                );
                eprintln!("  (is the agent running? set --server or KUBEDISCO_DNS_ADDR)");
                return ExitCode::FAILURE;
            }
        }
    };
    let text = if args.short {
        render_short(&answer)
    } else {
        let mut text = String::new();
        if retried {
            text.push_str(";; Truncated over UDP, asked again over TCP.\n");
        }
        text.push_str(&render(&answer));
        let _ = writeln!(
            text,
            ";; SERVER: {}#{} ({}), {:.1} ms",
            args.server.ip(),
            args.server.port(),
            if over_tcp { "TCP" } else { "UDP" },
            started.elapsed().as_secs_f64() * 1000.0
        );
        text
    };
    // A reader that stops early (`| head`) is no error of ours.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    match answer.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// The question, checked.
#[derive(Debug)]
pub struct Question {
    pub name: Name,
    pub record_type: RecordType,
}

impl Question {
    pub fn parse(name: &str, record_type: Option<&str>) -> Result<Self, String> {
        let address = name.parse::<IpAddr>().ok();
        let record_type = match record_type {
            None if address.is_some() => RecordType::PTR,
            None => RecordType::A,
            Some(text) => parse_type(text)?,
        };
        let name = match address {
            Some(address) => Name::from(address),
            None => parse_name(name)?,
        };
        Ok(Self { name, record_type })
    }

    fn packet(&self) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = rand::random();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(self.name.clone(), self.record_type));
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        message.set_edns(edns);
        message
            .to_vec()
            .expect("a checked name and a known type encode")
    }
}

fn parse_name(text: &str) -> Result<Name, String> {
    if text.is_empty() {
        return Err("empty name: give a DNS name, e.g. orders.shop.svc.cluster.local".into());
    }
    if !text.is_ascii() {
        return Err(format!(
            "{text:?} is not an ASCII DNS name (Kubernetes names are ASCII)"
        ));
    }
    if text != "." && text.trim_end_matches('.').split('.').any(str::is_empty) {
        return Err(format!("{text:?} is not a DNS name: it has an empty label"));
    }
    let mut name =
        Name::from_ascii(text).map_err(|e| format!("{text:?} is not a DNS name: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

fn parse_type(text: &str) -> Result<RecordType, String> {
    match RecordType::from_str(&text.to_ascii_uppercase()) {
        Ok(RecordType::Unknown(_)) | Err(_) => Err(format!(
            "unknown record type {text:?}: use A, AAAA, SRV, PTR, TXT, SOA, CNAME, NS, MX or ANY"
        )),
        Ok(record_type) => Ok(record_type),
    }
}

/// One query and its answer, with the same ID.
fn ask(
    packet: &[u8],
    server: SocketAddr,
    over_tcp: bool,
    timeout: Duration,
) -> Result<Message, String> {
    let bytes = if over_tcp {
        ask_tcp(packet, server, timeout)
    } else {
        ask_udp(packet, server, timeout)
    }
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
            "timed out after {}",
            crate::duration::format_duration(timeout)
        ),
        _ => e.to_string(),
    })?;
    let answer =
        Message::from_vec(&bytes).map_err(|e| format!("the answer is not a DNS message: {e}"))?;
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    if answer.metadata.id != id {
        return Err(format!(
            "the answer has ID {} where the query had {id}",
            answer.metadata.id
        ));
    }
    Ok(answer)
}

fn ask_udp(packet: &[u8], server: SocketAddr, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let socket = UdpSocket::bind(local)?;
    // Connected: only the server's datagrams are received.
    socket.connect(server)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send(packet)?;
    let mut buf = vec![0u8; 65535];
    let n = socket.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn ask_tcp(packet: &[u8], server: SocketAddr, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&server, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let length = u16::try_from(packet.len()).expect("a query fits in 64 KiB");
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    stream.write_all(&framed)?;
    let mut length = [0u8; 2];
    stream.read_exact(&mut length)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// The answer as dig prints it: header, flags, then every section.
pub fn render(answer: &Message) -> String {
    let meta = &answer.metadata;
    let mut out = String::new();
    let _ = writeln!(
        out,
        ";; ->>HEADER<<- opcode: {}, status: {}, id: {}",
        format!("{:?}", meta.op_code).to_uppercase(),
        rcode_name(meta.response_code),
        meta.id
    );
    let flags: Vec<&str> = [
        (
            meta.message_type == hickory_proto::op::MessageType::Response,
            "qr",
        ),
        (meta.authoritative, "aa"),
        (meta.truncation, "tc"),
        (meta.recursion_desired, "rd"),
        (meta.recursion_available, "ra"),
        (meta.authentic_data, "ad"),
        (meta.checking_disabled, "cd"),
    ]
    .into_iter()
    .filter_map(|(set, flag)| set.then_some(flag))
    .collect();
    let _ = writeln!(
        out,
        ";; flags: {}; QUERY: {}, ANSWER: {}, AUTHORITY: {}, ADDITIONAL: {}",
        flags.join(" "),
        answer.queries.len(),
        answer.answers.len(),
        answer.authorities.len(),
        answer.additionals.len()
    );
    if let Some(edns) = &answer.edns {
        let _ = writeln!(
            out,
            ";; EDNS: version: {}, udp: {}",
            edns.version(),
            edns.max_payload()
        );
    }
    out.push_str("\n;; QUESTION SECTION:\n");
    for query in &answer.queries {
        let _ = writeln!(
            out,
            ";{}\t\t{}\t{}",
            query.name(),
            query.query_class(),
            query.query_type()
        );
    }
    for (title, records) in [
        ("ANSWER", &answer.answers),
        ("AUTHORITY", &answer.authorities),
        ("ADDITIONAL", &answer.additionals),
    ] {
        if records.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n;; {title} SECTION:");
        for record in records {
            out.push_str(&render_record(record));
            out.push('\n');
        }
    }
    out.push('\n');
    out
}

fn render_record(record: &Record) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}",
        record.name,
        record.ttl,
        record.dns_class,
        record.record_type(),
        record.data
    )
}

/// Only the answer records' data, one per line, as `dig +short`.
pub fn render_short(answer: &Message) -> String {
    answer
        .answers
        .iter()
        .map(|record| format!("{}\n", record.data))
        .collect()
}

/// The status as dig names it.
fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("{other:?}").to_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::{A, SRV};

    #[test]
    fn questions_are_checked() {
        let q = Question::parse("Orders.shop.svc.cluster.local", None).unwrap();
        assert_eq!(q.record_type, RecordType::A);
        assert_eq!(q.name.to_string(), "Orders.shop.svc.cluster.local.");
        let q = Question::parse("_grpc._tcp.orders.shop.svc.cluster.local.", Some("srv")).unwrap();
        assert_eq!(q.record_type, RecordType::SRV);
        let q = Question::parse("10.244.1.11", None).unwrap();
        assert_eq!(
            (q.name.to_string().as_str(), q.record_type),
            ("11.1.244.10.in-addr.arpa.", RecordType::PTR)
        );
        for (name, record_type, complaint) in [
            ("", None, "empty name"),
            ("a..b", None, "has an empty label"),
            (".a", None, "has an empty label"),
            (&*"x".repeat(64), None, "not a DNS name"),
            ("a b.c", None, "not a DNS name"),
            ("ördérs.shop", None, "not an ASCII"),
            ("orders.shop", Some("AX"), "unknown record type \"AX\""),
            ("orders.shop", Some(""), "unknown record type"),
        ] {
            let error = Question::parse(name, record_type).unwrap_err();
            assert!(
                error.contains(complaint),
                "{name:?} {record_type:?}: {error}"
            );
        }
    }

    #[test]
    fn the_answer_reads_like_dig() {
        let mut answer = Message::response(7, hickory_proto::op::OpCode::Query);
        answer.metadata.authoritative = true;
        answer.metadata.recursion_desired = true;
        let name = Name::from_ascii("_grpc._tcp.orders.shop.svc.cluster.local.").unwrap();
        let target = Name::from_ascii("orders-0.orders.shop.svc.cluster.local.").unwrap();
        answer.add_query(Query::query(name.clone(), RecordType::SRV));
        answer.add_answer(Record::from_rdata(
            name,
            5,
            RData::SRV(SRV::new(0, 300, 9090, target.clone())),
        ));
        answer.add_additional(Record::from_rdata(
            target,
            5,
            RData::A(A::new(10, 244, 1, 11)),
        ));
        let text = render(&answer);
        assert!(
            text.starts_with(";; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 7\n;; flags: qr aa rd; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\n;; ANSWER SECTION:\n_grpc._tcp.orders.shop.svc.cluster.local.\t5\tIN\tSRV\t0 300 9090 orders-0.orders.shop.svc.cluster.local.\n"),
            "{text}"
        );
        assert!(
            text.contains("\n;; ADDITIONAL SECTION:\norders-0.orders.shop.svc.cluster.local.\t5\tIN\tA\t10.244.1.11\n"),
            "{text}"
        );
        assert!(!text.contains("AUTHORITY SECTION"), "{text}");
        assert_eq!(
            render_short(&answer),
            "0 300 9090 orders-0.orders.shop.svc.cluster.local.\n"
        );
    }
}
