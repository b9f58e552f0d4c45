//! A fast receiver for the throughput benchmark (scripts/bench_delivery.sh): a webhook
//! endpoint that checks every signature and an SMTP server that accepts every message and
//! checks it carries the unsubscribe headers, so the benchmark measures the worker and the
//! database rather than a Python stand-in. (The shape-checking stand-ins for the tests are
//! tests/delivery/standins.py.) `GET /stats` answers the counts as JSON.
//!
//!   cargo run --release -p personalize-worker --example delivery_sink -- HTTP_PORT SMTP_PORT SECRET

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Stats {
    webhook: AtomicU64,
    bad_signatures: AtomicU64,
    emails: AtomicU64,
    emails_without_unsubscribe: AtomicU64,
    keys: Mutex<HashSet<String>>,
}

struct Sink {
    secret: Vec<u8>,
    stats: Stats,
}

async fn webhook(
    State(s): State<Arc<Sink>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&s.secret).expect("key");
    mac.update(h("x-personalize-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&body);
    let want = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    if want != h("x-personalize-signature") {
        s.stats.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    s.stats.webhook.fetch_add(1, Ordering::Relaxed);
    s.stats.keys.lock().unwrap().insert(h("idempotency-key"));
    StatusCode::OK
}

async fn stats(State(s): State<Arc<Sink>>) -> String {
    let st = &s.stats;
    serde_json::json!({
        "webhook": st.webhook.load(Ordering::Relaxed),
        "distinct_keys": st.keys.lock().unwrap().len(),
        "bad_signatures": st.bad_signatures.load(Ordering::Relaxed),
        "emails": st.emails.load(Ordering::Relaxed),
        "emails_without_unsubscribe": st.emails_without_unsubscribe.load(Ordering::Relaxed),
    })
    .to_string()
}

/// Just enough SMTP (RFC 5321) for a client that sends mail: EHLO/HELO, MAIL, RCPT, DATA,
/// RSET, NOOP, QUIT.
async fn smtp_session(stream: TcpStream, sink: Arc<Sink>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
            "DATA" => {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut unsubscribe = false;
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    unsubscribe |=
                        line.starts_with("List-Unsubscribe-Post: List-Unsubscribe=One-Click");
                }
                sink.stats.emails.fetch_add(1, Ordering::Relaxed);
                if !unsubscribe {
                    sink.stats
                        .emails_without_unsubscribe
                        .fetch_add(1, Ordering::Relaxed);
                }
                b"250 accepted\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (http_port, smtp_port, secret) = match args.as_slice() {
        [_, h, s, k] => (h.clone(), s.clone(), k.clone()),
        _ => panic!("usage: delivery_sink HTTP_PORT SMTP_PORT SECRET"),
    };
    let sink = Arc::new(Sink {
        secret: secret.into_bytes(),
        stats: Stats::default(),
    });
    let smtp = TcpListener::bind(format!("127.0.0.1:{smtp_port}"))
        .await
        .expect("smtp port");
    let s = sink.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = smtp.accept().await {
            tokio::spawn(smtp_session(stream, s.clone()));
        }
    });
    let app = Router::new()
        .route("/webhook", post(webhook))
        .route("/stats", get(stats))
        .with_state(sink);
    let http = TcpListener::bind(format!("127.0.0.1:{http_port}"))
        .await
        .expect("http port");
    println!("sink ready");
    axum::serve(http, app).await.expect("serve");
}
