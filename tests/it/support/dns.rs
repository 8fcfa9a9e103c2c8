//! DNS at the wire, for tests that count what the agent answers: one A
//! query over UDP or over a new TCP connection, and the two-byte length
//! framing of DNS over TCP (RFC 1035 4.2.2). No resolver library sits in
//! the way, so nothing retries, caches or expands a search path behind the
//! test's back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// An A query (class IN, recursion desired) for `name` with ID `id`.
pub fn query_a(id: u16, name: &str) -> Vec<u8> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// (rcode, answer count) of a DNS response.
pub fn outcome(response: &[u8]) -> Result<(u8, u16), String> {
    if response.len() < 12 {
        return Err(format!("{}-byte response", response.len()));
    }
    Ok((
        response[3] & 0x0F,
        u16::from_be_bytes([response[6], response[7]]),
    ))
}

/// `message` as DNS over TCP sends it: behind its length.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    framed
}

/// The next length-framed message on a DNS-over-TCP stream.
pub fn read_frame(stream: &mut impl Read) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).map_err(|e| e.to_string())?;
    let mut message = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut message).map_err(|e| e.to_string())?;
    Ok(message)
}

/// One A query over UDP: (rcode, answers).
pub fn udp_a(server: SocketAddr, name: &str, timeout: Duration) -> Result<(u8, u16), String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(timeout)).unwrap();
    socket
        .send_to(&query_a(0x4242, name), server)
        .map_err(|e| e.to_string())?;
    let mut buffer = [0u8; 1500];
    let (len, _) = socket.recv_from(&mut buffer).map_err(|e| e.to_string())?;
    outcome(&buffer[..len])
}

/// One A query over a new TCP connection: (rcode, answers).
pub fn tcp_a(server: SocketAddr, name: &str, timeout: Duration) -> Result<(u8, u16), String> {
    let mut stream = TcpStream::connect_timeout(&server, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream
        .write_all(&frame(&query_a(0x4343, name)))
        .map_err(|e| e.to_string())?;
    outcome(&read_frame(&mut stream)?)
}
