//! Closing a TCP connection without a reset. Linux answers a close with
//! unread bytes in the socket with RST, which a client sees as a failed
//! request even when the agent meant to answer or had nothing to say.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a refused connection is given to send its request (which is
/// then answered), and how long a gentle close reads what still arrives.
pub const REFUSE_WAIT: Duration = Duration::from_secs(1);
/// How much a gentle close reads (and discards) at most.
const LINGER_BYTES: usize = 64 << 10;

/// Closes a connection without a reset: the write side first (the client
/// sees the end of the stream after everything sent to it), then whatever
/// the client still sends is read and discarded until it closes too, for
/// at most [`REFUSE_WAIT`] and [`LINGER_BYTES`].
pub async fn close_gently(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    // (Already shut down by the front end, or reset by the peer: the reads
    // below then end at once.)
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 512];
    let mut read = 0;
    let deadline = Instant::now() + REFUSE_WAIT;
    while read < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => break, // closed by the client, broken, or out of time
        }
    }
    discard_ready(&stream);
}

/// Reads and discards what has already arrived, without waiting.
pub(super) fn discard_ready(stream: &TcpStream) {
    let mut sink = [0u8; 2048];
    for _ in 0..LINGER_BYTES / sink.len() {
        match stream.try_read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gentle_close_with_unread_data_is_no_reset() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        use tokio::io::AsyncWriteExt;
        client.write_all(b"a request nobody read").await.unwrap();
        // Let it arrive before the close.
        server.readable().await.unwrap();
        close_gently(server).await;
        // The client reads an end of stream, not ECONNRESET.
        let mut rest = Vec::new();
        let read = client.read_to_end(&mut rest).await;
        assert!(read.is_ok(), "{read:?}");
    }
}
