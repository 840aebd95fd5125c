//! `ptap --serve ADDR`: the exposition format (checked with promtool), the
//! read-only endpoint, the option's errors, and a real Prometheus server
//! scraping a session and answering queries with the exact counts, the
//! histogram buckets and a non-zero rate().
//!
//! Prometheus and promtool come from Debian's `prometheus` package, which
//! `.ci/run` installs. Where they are missing outside CI, the Prometheus
//! test says so and passes; under CI (`CI` set) it fails.
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = "global setups, works, sizes, mode = \"serve\" \
    probe kprobe(setup) { setups[arg1]++; sizes <<< arg2 } \
    probe kprobe(work) { works++ } \
    probe end { print(@hist_log(sizes)) }";

/// A plain HTTP/1.0 request; (status, body); status 0 when nothing listens.
fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |b| b.1).to_string();
    (status, body)
}

/// A session serving on a port the kernel picks; returns it and its address.
fn start_session(stop: &Path) -> (Child, String) {
    let target = support::target("serve_work");
    let mut child = support::ptap()
        .args(["--serve", "127.0.0.1:0", "-T", "120", "-e", SCRIPT, "-c"])
        .arg(format!("{target} {} 120", stop.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        line.clear();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(rest) = line.trim().strip_prefix("ptap: serving metrics at http://") {
            let addr = rest.trim_end_matches("/metrics").to_string();
            // Keep draining stderr so ptap never blocks on it.
            std::thread::spawn(move || {
                let mut sink = String::new();
                let _ = err.read_to_string(&mut sink);
            });
            return (child, addr);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("ptap did not say where it serves: {line}");
}

/// Poll `f` until it gives Some, for up to `secs`.
fn eventually<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

fn stop_session(mut child: Child, stop: &Path) {
    std::fs::write(stop, "").unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the session did not end after its target did");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_are_served_read_only_in_the_text_format() {
    let dir = support::out_dir().join("serve-text");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let stop = dir.join("stop");
    let (child, addr) = start_session(&stop);
    let body = eventually(60, || {
        let (code, body) = http(&addr, "GET", "/metrics");
        (code == 200 && body.contains("ptap_setups_total{key1=\"3\"} 7")).then_some(body)
    })
    .unwrap_or_else(|| {
        panic!(
            "no exact counts at /metrics:\n{}",
            http(&addr, "GET", "/metrics").1
        )
    });
    assert!(body.contains("ptap_setups_total{key1=\"1\"} 3"), "{body}");
    assert!(body.contains("ptap_setups_total{key1=\"2\"} 5"), "{body}");
    assert!(body.contains("# TYPE ptap_works_total counter"), "{body}");
    assert!(body.contains("# TYPE ptap_sizes histogram"), "{body}");
    assert!(body.contains("ptap_sizes_bucket{le=\"15\"} 3"), "{body}");
    assert!(body.contains("ptap_sizes_bucket{le=\"127\"} 8"), "{body}");
    assert!(body.contains("ptap_sizes_bucket{le=\"1023\"} 15"), "{body}");
    assert!(body.contains("ptap_sizes_count 15"), "{body}");
    assert!(body.contains("ptap_sizes_sum 7530.0"), "{body}");
    assert!(body.contains("ptap_mode_info{value=\"serve\"} 1"), "{body}");
    assert!(body.contains("ptap_map_full_total 0"), "{body}");
    assert!(body.contains("ptap_session_info{host="), "{body}");
    assert_eq!(http(&addr, "GET", "/other").0, 404);
    assert_eq!(http(&addr, "POST", "/metrics").0, 405);
    assert_eq!(http(&addr, "DELETE", "/metrics").0, 405);
    if which("promtool") {
        let f = dir.join("metrics.txt");
        std::fs::write(&f, &body).unwrap();
        let out = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&f).unwrap())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool check metrics: {text}");
    }
    stop_session(child, &stop);
}

#[test]
fn serve_errors_are_one_clear_line() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--serve", "nowhere", "-e", "probe begin { exit() }"],
            "not an address to listen on",
        ),
        (
            &[
                "--serve",
                "127.0.0.1:9464",
                "-p2",
                "-e",
                "probe begin { exit() }",
            ],
            "cannot be combined with -p2",
        ),
        (&["-i", "--serve", "nowhere"], "not an address to listen on"),
    ];
    for (args, want) in cases {
        let out = support::ptap().args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // A port in use.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let out = support::ptap()
        .args(["--serve", &addr, "-e", "probe begin { exit() }"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot listen there"), "{err}");
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Percent-encoding of a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the first result of an instant query, if any.
fn query(prom: &str, q: &str) -> Option<f64> {
    let (code, body) = http(prom, "GET", &format!("/api/v1/query?query={}", encode(q)));
    if code != 200 {
        return None;
    }
    // {"status":"success","data":{"resultType":"vector","result":[{"metric":{..},"value":[T,"V"]}]}}
    let v = body.split("\"value\":[").nth(1)?;
    let v = v.split(',').nth(1)?;
    v.trim_matches(|c| c == '"' || c == ']' || c == '}')
        .parse()
        .ok()
}

#[test]
fn a_real_prometheus_scrapes_exact_counts_buckets_and_a_rate() {
    if !which("prometheus") {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is not installed (.ci/run installs Debian's `prometheus`)"
        );
        eprintln!("SKIPPED: no prometheus here (apt-get install prometheus); CI runs this test");
        return;
    }
    let dir = support::out_dir().join("serve-prometheus");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let stop = dir.join("stop");
    let (session, addr) = start_session(&stop);
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: ptap\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let prom = format!("127.0.0.1:{}", free_port());
    let mut server = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let result = std::panic::catch_unwind(|| {
        let got = eventually(90, || {
            query(&prom, "ptap_setups_total{key1=\"2\"}").filter(|v| *v == 5.0)
        });
        assert_eq!(got, Some(5.0), "Prometheus never had the exact count");
        assert_eq!(query(&prom, "ptap_setups_total{key1=\"1\"}"), Some(3.0));
        assert_eq!(query(&prom, "ptap_setups_total{key1=\"3\"}"), Some(7.0));
        assert_eq!(query(&prom, "ptap_sizes_bucket{le=\"127\"}"), Some(8.0));
        assert_eq!(query(&prom, "ptap_sizes_count"), Some(15.0));
        let rate = eventually(60, || {
            query(&prom, "rate(ptap_works_total[10s])").filter(|v| *v > 0.0)
        });
        assert!(rate.is_some(), "rate(ptap_works_total[10s]) stayed 0");
        assert_eq!(query(&prom, "up{job=\"ptap\"}"), Some(1.0));
    });
    let _ = server.kill();
    let _ = server.wait();
    stop_session(session, &stop);
    if let Err(e) = result {
        let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
        eprintln!("--- prometheus log (last lines)\n{}", tail(&log, 20));
        std::panic::resume_unwind(e);
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The value of the series `name` (labels included, as written) in `body`.
fn series(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `ptap -i --serve ADDR -f json`: the REPL session's globals are served as
/// they come (a counter typed while the target runs, a gauge set by a typed
/// statement, an array declared after the first probe), and the output
/// (-o) holds only JSON lines.
#[test]
fn the_repl_serves_its_globals_as_they_come() {
    let dir = support::out_dir().join("serve-repl");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let stop = dir.join("stop");
    let target = support::target("serve_work");
    let mut child = support::ptap()
        .args(["-i", "-f", "json", "--serve", "127.0.0.1:0", "-o"])
        .arg(dir.join("out.json"))
        .arg("-c")
        .arg(format!("{target} {} 120", stop.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while err.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(rest) = line.trim().strip_prefix("ptap: serving metrics at http://") {
            addr = Some(rest.trim_end_matches("/metrics").to_string());
            break;
        }
        line.clear();
    }
    let addr = addr.unwrap_or_else(|| panic!("ptap did not say where it serves: {line}"));
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut type_in = |text: &str| {
        input.write_all(text.as_bytes()).unwrap();
        input.flush().unwrap();
    };
    let scrape = |want: &dyn Fn(&str) -> bool| {
        eventually(60, || {
            let (code, body) = http(&addr, "GET", "/metrics");
            (code == 200 && want(&body)).then_some(body)
        })
        .unwrap_or_else(|| {
            panic!(
                "the metrics never had what was typed:\n{}",
                http(&addr, "GET", "/metrics").1
            )
        })
    };

    let started = format!("target=\"{target} ");
    let body = scrape(&|b| b.contains(&started));
    assert!(body.contains("script=\"repl\""), "{body}");

    type_in("global works, level, mode = \"repl\"\nprobe kprobe(work) { works++ }\n");
    let body = scrape(&|b| series(b, "ptap_works_total").is_some_and(|v| v > 0.0));
    assert!(body.contains("# TYPE ptap_works_total counter"), "{body}");
    assert!(body.contains("ptap_mode_info{value=\"repl\"} 1"), "{body}");

    // A statement typed at the prompt sets a gauge.
    type_in("level = 42\n");
    let body = scrape(&|b| series(b, "ptap_level") == Some(42.0));
    assert!(body.contains("# TYPE ptap_level gauge"), "{body}");

    // A global declared after the first probe, by key.
    type_in("global late\nprobe kprobe(work) { late[7]++ }\n");
    let body = scrape(&|b| series(b, "ptap_late_total{key1=\"7\"}").is_some_and(|v| v > 0.0));
    assert_eq!(http(&addr, "GET", "/other").0, 404);
    assert_eq!(http(&addr, "POST", "/metrics").0, 405);
    if which("promtool") {
        let f = dir.join("metrics.txt");
        std::fs::write(&f, &body).unwrap();
        let out = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&f).unwrap())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool check metrics: {text}");
    }

    // Detached: the target label follows.
    type_in(":detach\n");
    scrape(&|b| b.contains("target=\"none\""));

    type_in("level\n:list\n:quit\n");
    let status = child.wait().unwrap();
    std::fs::write(&stop, "").unwrap();
    let err = stderr.join().unwrap();
    let out = std::fs::read_to_string(dir.join("out.json")).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.iter().all(|l| l.starts_with("{\"type\":")),
        "the output holds JSON lines only:\n{out}"
    );
    assert!(
        lines.contains(&"{\"type\":\"printf\",\"data\":\"42\\n\"}"),
        "{out}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("{\"type\":\"summary\"")),
        "{out}"
    );
    assert!(
        err.contains("kprobe(work)"),
        "the :list table is on stderr: {err}"
    );
}
