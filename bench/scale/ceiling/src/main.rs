//! `kubedisco-bench-ceiling ADDR BODY_FILE`: serves the bytes of BODY_FILE as
//! `application/json` to every HTTP/1.1 request on ADDR, keep-alive, on a
//! multi-threaded tokio runtime (as the agent's HTTP server runs).
use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: kubedisco-bench-ceiling ADDR BODY_FILE");
        std::process::exit(2);
    }
    let body = Bytes::from(std::fs::read(&args[2]).expect("read body file"));
    let listener = tokio::net::TcpListener::bind(&args[1]).await.expect("bind");
    println!("ready {}", listener.local_addr().expect("local addr"));
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(body))
                            .expect("response"),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
