//! `ptap --serve ADDR`: the session's globals for Prometheus, at
//! `GET /metrics`, while the session runs.
//!
//! A thread of ptap answers; each scrape takes a [`Snapshot`] of the shared
//! globals (plain atomic loads, so the probes' hit path never waits for a
//! scrape) and encodes it. The endpoint only reads: any other path is 404,
//! any other method 405.
use anyhow::{anyhow, Context};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use ptap_compiler::metrics::{Plan, Snapshot};
use ptap_rt_core::script::globals::Globals;
use ptap_rt_core::script::meta::Meta;

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
pub fn check_addr(addr: &str) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    match addr.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        _ => Err(anyhow!(
            "--serve `{addr}`: not an address to listen on; give HOST:PORT, e.g. 127.0.0.1:9464"
        )),
    }
}

/// What a scrape reads: the plan, the globals' layout and the target's
/// description. A REPL session changes it as globals and targets come
/// ([`start_shared`]); a script's stays as it started.
pub struct View {
    pub plan: Plan,
    pub meta: Meta,
    pub target: String,
}

/// Listen on `spec.addr` and serve snapshots of `g` (laid out by `meta`).
pub fn start(spec: &ServeSpec, meta: &Meta, g: Globals, target: String) -> anyhow::Result<Server> {
    let view = View {
        plan: spec.plan.clone(),
        meta: meta.clone(),
        target,
    };
    start_shared(&spec.addr, Arc::new(RwLock::new(view)), g)
}

/// Listen on `addr` and serve snapshots of `g` as `view` says at the time
/// of each scrape (the lock is ptap's own: no probe handler takes it).
pub fn start_shared(addr: &str, view: Arc<RwLock<View>>, g: Globals) -> anyhow::Result<Server> {
    let http = tiny_http::Server::http(addr).map_err(|e| {
        anyhow!("--serve {addr}: cannot listen there: {e} (is the port in use? pick another one)")
    })?;
    let addr = http
        .server_addr()
        .to_ip()
        .map_or(addr.to_string(), |a| a.to_string());
    let http = Arc::new(http);
    let host = hostname();
    let server = Arc::clone(&http);
    let thread = std::thread::Builder::new()
        .name("ptap-serve".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let resp = match view.read() {
                    Ok(v) => answer(&req, &v.plan, &v.meta, &g, &host, &v.target),
                    Err(_) => tiny_http::Response::from_string("the session is broken\n")
                        .with_status_code(tiny_http::StatusCode(500)),
                };
                let _ = req.respond(resp);
            }
        })
        .context("--serve: cannot start the server thread")?;
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
