//! `ptap --serve ADDR`: the session's globals for Prometheus, at
//! `GET /metrics`, while the session runs.
//!
//! A thread of ptap answers; each scrape takes a [`Snapshot`] of the shared
//! globals (plain atomic loads, so the probes' hit path never waits for a
//! scrape) and encodes it. The endpoint only reads: any other path is 404,
//! any other method 405.
use std::sync::Arc;
use std::thread::JoinHandle;

use ptap_compiler::metrics::{Plan, Snapshot};
use ptap_rt::script::globals::Globals;
use ptap_rt::script::meta::Meta;

/// What `--serve` needs from the compiled script.
pub struct ServeSpec {
    pub addr: String,
    pub plan: Plan,
}

/// A running endpoint; dropping it stops the thread (before the session's
/// mapping goes away).
pub struct Server {
    http: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    /// The address it listens on (with the port the kernel chose for `:0`).
    pub addr: String,
}

/// Check `addr` before anything runs: `HOST:PORT`, with HOST an IP address
/// or `localhost`.
pub fn check_addr(addr: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    match addr.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        _ => Err(format!(
            "--serve `{addr}`: not an address to listen on; give HOST:PORT, e.g. 127.0.0.1:9464"
        )),
    }
}

/// Listen on `spec.addr` and serve snapshots of `g` (laid out by `meta`).
pub fn start(spec: &ServeSpec, meta: &Meta, g: Globals, target: String) -> Result<Server, String> {
    let http = tiny_http::Server::http(&spec.addr).map_err(|e| {
        format!(
            "--serve {}: cannot listen there: {e} (is the port in use? pick another one)",
            spec.addr
        )
    })?;
    let addr = http
        .server_addr()
        .to_ip()
        .map_or(spec.addr.clone(), |a| a.to_string());
    let http = Arc::new(http);
    let host = hostname();
    let plan = spec.plan.clone();
    let meta = meta.clone();
    let server = Arc::clone(&http);
    let thread = std::thread::Builder::new()
        .name("ptap-serve".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let resp = answer(&req, &plan, &meta, &g, &host, &target);
                let _ = req.respond(resp);
            }
        })
        .map_err(|e| format!("--serve: cannot start the server thread: {e}"))?;
    Ok(Server {
        http,
        thread: Some(thread),
        addr,
    })
}

fn answer(
    req: &tiny_http::Request,
    plan: &Plan,
    meta: &Meta,
    g: &Globals,
    host: &str,
    target: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let text = |code: u16, body: &str| {
        tiny_http::Response::from_string(body).with_status_code(tiny_http::StatusCode(code))
    };
    if !matches!(
        req.method(),
        tiny_http::Method::Get | tiny_http::Method::Head
    ) {
        return text(405, "only GET is served\n");
    }
    let path = req.url().split('?').next().unwrap_or("");
    match path {
        "/metrics" => match Snapshot::take(plan, meta, g, host, target).encode() {
            Ok(body) => {
                let ct = "text/plain; version=0.0.4; charset=utf-8";
                let mut r = tiny_http::Response::from_string(body);
                if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", ct) {
                    r = r.with_header(h);
                }
                r
            }
            Err(_) => text(500, "cannot encode the metrics\n"),
        },
        "/" => text(200, "ptap: metrics at /metrics\n"),
        _ => text(404, "not found: ptap serves /metrics\n"),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

impl Drop for Server {
    fn drop(&mut self) {
        self.http.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
