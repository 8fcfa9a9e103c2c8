//! Abusive requests on the HTTP port: a slow head (slowloris) is cut off,
//! an oversized head gets 431 and a body on the GET-only API 413, watch
//! streams beyond the cap get 503; heads hyper itself refuses get the same
//! JSON error as every route, whole, and the client can read it. Each
//! answer is what a client reads off the socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Agent, eventually};

#[tokio::test]
async fn slow_oversized_and_bodied_requests_are_cut_off() {
    let agent = Agent::start(&[
        "--source",
        "demo",
        "--http-header-timeout",
        "1s",
        "--max-watch-streams",
        "2",
    ])
    .await;
    // Slowloris: half a request head, then nothing.
    let mut slow = TcpStream::connect(agent.http).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n")
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let cut = started.elapsed();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    eprintln!(
        "slowloris: connection closed {:.1} s after the partial head (--http-header-timeout 1s)",
        cut.as_secs_f64()
    );

    // A head larger than --http-max-header-bytes: 431, the same JSON error
    // as every route's, and the connection closes.
    let big = "x".repeat(20_000);
    let response = agent
        .client
        .get(agent.url("/healthz"))
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    assert_eq!(response.headers()["connection"], "close");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "header_too_large", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("16384 bytes"),
        "{body}"
    );
    // A body on a GET-only API: 413 before it is read.
    let response = agent
        .client
        .get(agent.url("/v1/services"))
        .body("x".repeat(1 << 20))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "body_not_allowed", "{body}");

    // Watch streams beyond --max-watch-streams: 503 with a code.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let stream = agent.open_watch("/v1/watch/shop/orders").await;
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    let (status, body) = agent.get("/v1/watch/shop/orders").await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(body["code"], "too_many_watch_streams", "{body}");
    // A closed stream frees its place.
    streams.pop();
    eventually("a watch stream after one closed", || async {
        let response = agent
            .client
            .get(agent.url("/v1/watch/shop/orders"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() == 200 {
            Ok(())
        } else {
            Err(response.status().to_string())
        }
    })
    .await;
    let metrics = agent.metrics().await;
    for series in [
        "kubedisco_http_requests_rejected_total{reason=\"body\"} 1",
        "kubedisco_http_requests_rejected_total{reason=\"watch_streams\"}",
        "kubedisco_http_requests_rejected_total{reason=\"header_too_large\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing");
    }
}

/// Sends `request` on a connection of its own, closes the sending side and
/// returns everything that came back.
fn raw_exchange(agent: &Agent, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(agent.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Written whole even past what the agent reads of it: the agent keeps
    // reading (and dropping) after its answer instead of resetting.
    stream
        .write_all(request)
        .expect("the whole request is taken, never reset");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("still connected, never reset");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the answer arrives whole, then the close");
    String::from_utf8(answer).unwrap()
}

/// The first answer in `text`: its head (lowercase) and JSON body, and
/// what follows it.
fn next_answer(text: &str) -> (String, Value, &str) {
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {text:?}"));
    let head = head.to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .unwrap_or_else(|| panic!("no content-length in {head}"))
        .parse()
        .unwrap();
    let (body, rest) = rest.split_at(length);
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (head, json, rest)
}

#[tokio::test]
async fn heads_hyper_refuses_get_the_json_error_and_the_client_reads_it() {
    let agent = Agent::start(&["--source", "demo"]).await;
    // Not HTTP: hyper's own 400, as the agent's JSON.
    let answer = raw_exchange(&agent, b"GET /healthz HTTP/1.1\r\nHost agent\r\n\r\n");
    let (head, body, rest) = next_answer(&answer);
    assert!(head.starts_with("http/1.1 400 bad request\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: application/json"),
        "{head}"
    );
    assert_eq!(body["code"], "bad_request", "{body}");
    assert_eq!(rest, "", "nothing after the answer");

    // A head 32 times the limit, still being sent when the agent answers:
    // the client can send it all and read the 431.
    let mut huge = b"GET /healthz HTTP/1.1\r\nHost: agent\r\nx-big: ".to_vec();
    huge.resize(512 << 10, b'x');
    let answer = raw_exchange(&agent, &huge);
    let (head, body, rest) = next_answer(&answer);
    assert!(
        head.starts_with("http/1.1 431 request header fields too large\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert_eq!(body["code"], "header_too_large", "{body}");
    assert_eq!(rest, "", "nothing after the answer");

    // Pipelined behind a route's answer: that one is left as it is, the
    // refused head after it gets the JSON error.
    let answer = raw_exchange(
        &agent,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost a\r\n\r\n",
    );
    let (head, body, rest) = next_answer(&answer);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert_eq!(body["status"], "ok", "{body}");
    let (head, body, rest) = next_answer(rest);
    assert!(head.starts_with("http/1.1 400 bad request\r\n"), "{head}");
    assert_eq!(body["code"], "bad_request", "{body}");
    assert_eq!(rest, "", "nothing after the answer");

    let metrics = agent.metrics().await;
    for series in [
        "kubedisco_http_requests_rejected_total{reason=\"malformed_head\"} 2",
        "kubedisco_http_requests_rejected_total{reason=\"header_too_large\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing");
    }
}
