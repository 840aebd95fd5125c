//! No input may panic: random token soup and mutated golden scripts go
//! through parse + check; each must give a result or diagnostics. (The
//! cargo-fuzz target in fuzz/ does the same with coverage guidance.)
use std::path::Path;

use ptap_lang::Options;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const VOCAB: &[&str] = &[
    "probe",
    "global",
    "function",
    "if",
    "else",
    "while",
    "for",
    "foreach",
    "in",
    "limit",
    "break",
    "continue",
    "next",
    "return",
    "delete",
    "try",
    "catch",
    "begin",
    "end",
    "timer",
    ".",
    "ms",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "<",
    ">",
    "<<<",
    "=",
    "+=",
    ".=",
    "++",
    "--",
    "-",
    "+",
    "*",
    "?",
    ":",
    ";",
    ",",
    "!",
    "~",
    "&&",
    "||",
    "==",
    "=~",
    "x",
    "y",
    "a",
    "ret",
    "arg1",
    "$1",
    "@1",
    "$var",
    "@entry",
    "@count",
    "@hist_linear",
    "print",
    "printf",
    "\"%d %s\"",
    "\"\\q\"",
    "0x",
    "1",
    "-9223372036854775808",
    "99999999999999999999",
    "kprobe",
    "kretprobe",
    "jprobe",
    "sys_open",
    "sys_nope",
    "libc:",
    "malloc",
    "+4",
    "maxactive",
    "errno_str",
    "user_string",
    "register",
    "\"rax\"",
    "/*",
    "#",
    "\n",
    "`",
    "é",
    "long",
    "string",
];

fn check(text: &str) {
    let opts = Options {
        guru: text.len().is_multiple_of(2),
        args: vec!["1".into(), "x".into()],
        defines: vec![],
    };
    let result = std::panic::catch_unwind(|| {
        let _ = ptap_lang::render_p1("fuzz.pt", text);
        let _ = ptap_lang::render_p2("fuzz.pt", text, &opts);
    });
    assert!(result.is_ok(), "panic on input:\n{text:?}");
}

/// Runs `f` on a thread with the stack ptap's front end gets (ptap parses
/// and checks on its main thread: 8 MiB). Trees as tall as the parser
/// accepts (flat chains of up to `MAX_HEIGHT` links) need that much in
/// debug builds; the test harness's threads have 2 MiB.
fn on_main_sized_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("the test thread panicked");
}

#[test]
fn random_token_soup_never_panics() {
    on_main_sized_stack(random_token_soup);
}

#[test]
fn mutated_golden_scripts_never_panic() {
    on_main_sized_stack(mutated_golden_scripts);
}

#[test]
fn pathological_inputs() {
    on_main_sized_stack(pathological);
}

fn random_token_soup() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let n = 1 + rng.below(40);
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(VOCAB[rng.below(VOCAB.len())]);
            s.push(' ');
        }
        check(&s);
    }
}

fn mutated_golden_scripts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lang");
    let mut scripts = Vec::new();
    for dir in ["ok", "err"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "pt") {
                scripts.push(std::fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    let mut rng = Rng(42);
    for _ in 0..2000 {
        let base = &scripts[rng.below(scripts.len())];
        let mut bytes: Vec<char> = base.chars().collect();
        for _ in 0..1 + rng.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => {
                    bytes.remove(at);
                }
                1 => {
                    let tok: Vec<char> = VOCAB[rng.below(VOCAB.len())].chars().collect();
                    for (i, c) in tok.into_iter().enumerate() {
                        bytes.insert((at + i).min(bytes.len()), c);
                    }
                }
                2 => {
                    let end = (at + rng.below(20)).min(bytes.len());
                    bytes.drain(at..end);
                }
                _ => {
                    let end = (at + rng.below(30)).min(bytes.len());
                    let chunk: Vec<char> = bytes[at..end].to_vec();
                    let to = rng.below(bytes.len());
                    for (i, c) in chunk.into_iter().enumerate() {
                        bytes.insert(to + i, c);
                    }
                }
            }
        }
        check(&bytes.into_iter().collect::<String>());
    }
}

fn pathological() {
    check(&"(".repeat(100_000));
    check(&format!("probe begin {{ x = {}1 }}", "-".repeat(50_000)));
    check(&format!("probe begin {{ {} }}", "if (1) ".repeat(5_000)));
    check(&format!("probe begin {{ x = 1{} }}", " + 1".repeat(5_000)));
    check(&format!("probe begin {{ {}", "{".repeat(5_000)));
    check(&"probe begin < ".repeat(1000));
    check("\u{0}\u{1}\u{ffff}");
    check("probe kprobe(\"\"\"\":) {}");
    check("probe begin { print(@hist_linear(s, -9223372036854775808, 9223372036854775807, 1)) } global s");
}
