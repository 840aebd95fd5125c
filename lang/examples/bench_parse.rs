//! Benchmark (prints figures; not a timed test): parse + check of a generated
//! 5,000-line script. Goal: under 100 ms in a release build.
//!
//!     cargo run --release -p ptap-lang --example bench_parse [LINES]
use std::fmt::Write;
use std::time::{Duration, Instant};

use ptap_lang::{FileId, Options, Sources};

/// A script of about `lines` lines using most of the language.
fn generate(lines: usize) -> String {
    let mut s = String::from("global counts, names, lat, total = 0, hist[4096]\n");
    let mut n = 1;
    let mut i = 0;
    while n < lines {
        let _ = write!(
            s,
            "\
function helper{i}(a, b:string) {{
  x = a * {i} + strlen(b)
  if (x > 100 && b != \"\") return sprintf(\"%s-%d\", b, x)
  for (j = 0; j < 3; j++) x += j
  return b . sprint(x)
}}
probe kprobe(func{i}), kprobe(libc:mall{i}*) {{
  counts[tid(), execname()]++
  names[pid()] = helper{i}(arg1, execname())
  if arg2 < 0 print(arg2)
  total += arg3
  hist[{i}] = arg1 % 7
}}
probe kretprobe(func{i}) {{
  lat <<< nsecs() - @entry(nsecs())
  if (ret < 0) printf(\"%s: %d %s\\n\", probefunc(), ret, errno_str(ret))
}}
probe kretprobe(sys_open) < if ret<{i} print(ret, \"{i}\") >
probe end {{
  foreach ([t, e] in counts- limit 10) printf(\"%d %s %d\\n\", t, e, counts[t, e])
  try {{ print(@count(lat), @avg(lat)) }} catch (m) {{ print(m) }}
}}
"
        );
        n = s.matches('\n').count();
        i += 1;
    }
    s
}

fn main() {
    let lines: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let text = generate(lines);
    let real_lines = text.lines().count();
    let opts = Options::default();
    let runs = 20;
    let (mut parse_t, mut check_t, mut total_t) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        let mut sources = Sources::new();
        let file: FileId = sources.add("bench.pt", text.as_str());
        let script = ptap_lang::parse(&sources, file).expect("the generated script parses");
        let t1 = Instant::now();
        let checked = match ptap_lang::check(sources, script, &opts) {
            Ok(c) => c,
            Err(f) => panic!("the generated script must check:\n{}", f.render()),
        };
        let t2 = Instant::now();
        assert!(!checked.probes.is_empty());
        parse_t.push(t1 - t0);
        check_t.push(t2 - t1);
        total_t.push(t2 - t0);
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        (v[0], v[v.len() / 2])
    };
    let (pmin, pmed) = med(&mut parse_t);
    let (cmin, cmed) = med(&mut check_t);
    let (tmin, tmed) = med(&mut total_t);
    println!(
        "script: {real_lines} lines, {} bytes; {runs} runs",
        text.len()
    );
    println!("parse:         min {:>8.2?}  median {:>8.2?}", pmin, pmed);
    println!("check:         min {:>8.2?}  median {:>8.2?}", cmin, cmed);
    println!(
        "parse + check: min {:>8.2?}  median {:>8.2?}  (goal < 100 ms)",
        tmin, tmed
    );
}
