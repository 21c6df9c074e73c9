//! A server's shape on `tokio`: connection tasks parse requests out of raw bytes and
//! hand each to a pool of handler tasks over a bounded `mpsc` channel; a handler
//! builds a JSON response (`serde_json`) of 60 B to 8 KiB and sends it back over a
//! `oneshot` channel; the connection checks it and drops it. Requests are freed by
//! handlers and responses by connections, on whichever worker thread runs them, and
//! tokio allocates its own tasks and channel nodes in between.

use super::{fnv, scramble, Outcome, Params};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// Requests at scale 1, all connections together.
const REQUESTS: u64 = 200_000;
/// Connection tasks.
const CONNECTIONS: u64 = 64;
/// Handler tasks.
const HANDLERS: usize = 8;
/// Requests queued per handler.
const QUEUE: usize = 32;

/// A parsed request, owned.
struct Request {
    path: String,
    headers: Vec<(String, String)>,
    reply: oneshot::Sender<Vec<u8>>,
}

#[derive(Serialize)]
struct Item {
    id: u64,
    name: String,
    tags: Vec<String>,
    price_cents: u64,
}

/// The raw bytes of request `id`.
fn raw_request(id: u64) -> Vec<u8> {
    let h = scramble(id);
    format!(
        "GET /items/{id}?page={} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench/{}\r\nX-Request-Id: {h:016x}\r\nAccept: application/json\r\n\r\n",
        h % 7,
        h % 100
    )
    .into_bytes()
}

/// Parses raw request bytes: the path and the headers, each an owned string.
fn parse(raw: &[u8]) -> (String, Vec<(String, String)>) {
    let text = std::str::from_utf8(raw).expect("requests are ASCII");
    let mut lines = text.split("\r\n");
    let first = lines.next().expect("a request line");
    let path = first.split(' ').nth(1).expect("a path").to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(": ").expect("a header");
            (k.to_ascii_lowercase(), v.to_string())
        })
        .collect();
    (path, headers)
}

/// The response body for a request: a JSON list of 0..=40 items, by the request id.
fn respond(path: &str, headers: &[(String, String)]) -> Vec<u8> {
    let id: u64 = path
        .trim_start_matches("/items/")
        .split('?')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("an item id");
    let tag = headers
        .iter()
        .find(|(k, _)| k == "x-request-id")
        .map_or(0, |(_, v)| u64::from_str_radix(v, 16).expect("hex"));
    assert_eq!(tag, scramble(id), "request {id} lost its header");
    let items: Vec<Item> = (0..scramble(tag) % 41)
        .map(|k| Item {
            id: id * 64 + k,
            name: format!("item-{id}-{k}"),
            tags: (0..k % 4).map(|t| format!("t{t}")).collect(),
            price_cents: (tag >> k) % 10_000,
        })
        .collect();
    serde_json::to_vec(&items).expect("items serialise")
}

/// Connection `c` sends its share of the requests, one at a time, to the handlers in
/// turn, and checks every response against one made here.
async fn connection(c: u64, n: u64, handlers: Vec<mpsc::Sender<Request>>) -> u64 {
    let mut digest = 0u64;
    let mut id = c;
    let mut turn = c as usize;
    while id < n {
        let raw = raw_request(id);
        let (path, headers) = parse(&raw);
        drop(raw);
        let (tx, rx) = oneshot::channel();
        let req = Request {
            path,
            headers,
            reply: tx,
        };
        turn = (turn + 1) % handlers.len();
        if handlers[turn].send(req).await.is_err() {
            panic!("handler {turn} gone");
        }
        let body = rx.await.expect("a response");
        let (path, headers) = parse(&raw_request(id));
        assert!(body == respond(&path, &headers), "response to {id} corrupt");
        digest = digest.wrapping_add(scramble(fnv(&body) ^ id));
        id += CONNECTIONS;
    }
    digest
}

/// Serves [`REQUESTS`] (scaled) on a runtime of `p.threads` workers.
pub fn tokio_server(p: &Params) -> Outcome {
    let n = p.count(REQUESTS);
    let pin = p.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(p.threads)
        .on_thread_start({
            let next = std::sync::atomic::AtomicUsize::new(0);
            move || pin.pin_worker(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
        })
        .build()
        .expect("a tokio runtime");
    let checksum = rt.block_on(async move {
        let mut senders = Vec::new();
        let mut handlers = Vec::new();
        for _ in 0..HANDLERS {
            let (tx, mut rx) = mpsc::channel::<Request>(QUEUE);
            senders.push(tx);
            handlers.push(tokio::spawn(async move {
                while let Some(req) = rx.recv().await {
                    let body = respond(&req.path, &req.headers);
                    let _ = req.reply.send(body);
                }
            }));
        }
        let conns: Vec<_> = (0..CONNECTIONS)
            .map(|c| tokio::spawn(connection(c, n, senders.clone())))
            .collect();
        drop(senders);
        let mut checksum = 0u64;
        for c in conns {
            checksum = checksum.wrapping_add(c.await.expect("a connection panicked"));
        }
        for h in handlers {
            h.await.expect("a handler panicked");
        }
        checksum
    });
    Outcome {
        checksum,
        // The request's bytes, path, headers and response, at least.
        allocs: n * 6,
    }
}
