//! `-f json`: every line ptap prints for a session parses as JSON and has
//! the documented shape (docs/output.md): printf text, histograms with
//! their buckets, maps and globals at the end, run-time errors, and the
//! summary, which is always last.
mod support;

use serde_json::Value;

fn session(args: &[&str]) -> (Vec<Value>, Option<i32>) {
    let out = support::ptap().args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    (lines, out.status.code())
}

#[test]
fn every_record_is_one_json_object() {
    let hot = support::target("hot");
    let out = support::out_dir().join("json-session.out");
    let (_, code) = session(&[
        "-f",
        "json",
        "-o",
        out.to_str().unwrap(),
        "-e",
        "global c, s, by, last probe kprobe(work) { c++; s <<< arg1; by[arg1 % 2, \"k\"]++ } \
         probe end { printf(\"%d calls\\n\", c); print(@hist_linear(s, 0, 10, 5)); last = 7 }",
        "-c",
        &format!("{hot} 12"),
    ]);
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let of = |t: &'static str| lines.iter().filter(move |v| v["type"] == t);
    assert_eq!(of("printf").next().unwrap()["data"], "12 calls\n");
    let hist = of("hist").next().expect("a hist line");
    // work(0..11): 0-4 in [0,4], 5-9 in [5,9], 10 and 11 in [10,14].
    let buckets = hist["data"].as_array().unwrap();
    let counts: Vec<(i64, i64, i64)> = buckets
        .iter()
        .map(|b| {
            (
                b["min"].as_i64().unwrap(),
                b["max"].as_i64().unwrap(),
                b["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, vec![(0, 4, 5), (5, 9, 5), (10, 14, 2)], "{hist}");
    let map = of("map")
        .find(|v| v["name"] == "by")
        .expect("the unread array");
    let mut entries: Vec<String> = map["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}={}", e["key"], e["value"]))
        .collect();
    entries.sort();
    assert_eq!(entries, vec!["[0,\"k\"]=6", "[1,\"k\"]=6"]);
    let last = of("global")
        .find(|v| v["name"] == "last")
        .expect("a global");
    assert_eq!(last["value"], 7);
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary", "the summary is last");
    assert_eq!(summary["errors"], 0);
}

#[test]
fn run_time_errors_and_the_summary_are_json_too() {
    let hot = support::target("hot");
    let (lines, code) = session(&[
        "-f",
        "json",
        "-D",
        "MAXERRORS=10",
        "-e",
        "probe kprobe(work) { x = user_long(8) }",
        "-c",
        &format!("{hot} 3"),
    ]);
    assert_eq!(code, Some(1), "errors give exit status 1");
    let errors: Vec<&Value> = lines.iter().filter(|v| v["type"] == "error").collect();
    assert_eq!(errors.len(), 3, "{lines:?}");
    assert!(errors[0]["msg"]
        .as_str()
        .unwrap()
        .starts_with("ERROR: user memory read fault at 0x8"));
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["errors"], 3);
}
