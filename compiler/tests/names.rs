//! Demangled names in what the target prints: backtraces and usymname()
//! (the spec file tests/spec/names.spec covers point resolution).
mod support;
use std::path::Path;
use std::time::Duration;
use support::*;

fn script(prog: &str, cmd: &str) -> Output {
    let mut c = ptap();
    c.arg("-e").arg(prog).arg("-c").arg(cmd);
    run_cmd(c, Duration::from_secs(120))
}

#[test]
fn cxx_backtrace_shows_demangled_names() {
    let out = script(
        r#"probe kprobe("ns::Class::method") { print_ubacktrace() exit() }"#,
        &format!("{} 3", target("cxx_names")),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.contains(" : ns::Class::method+0x0/0x"));
    let first = first.unwrap_or_else(|| panic!("no backtrace: {out:?}"));
    assert!(lines[first + 1].contains(" : main+0x"), "{out:?}");
    assert!(!out.stdout.contains("_ZN2ns"), "{out:?}");
}

#[test]
fn rust_backtrace_and_usymname_show_demangled_names() {
    let out = script(
        r#"probe kprobe(compute) { print(usymname(register("rip"))) print_ubacktrace() exit() }"#,
        &format!("{} 3", target("rs_names")),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("rs_names::rs1::compute\n"), "{out:?}");
    assert!(
        out.stdout.contains(" : rs_names::rs1::compute+0x0/0x"),
        "{out:?}"
    );
    assert!(out.stdout.contains(" : rs_names::main+0x"), "{out:?}");
}

#[test]
fn debug_info_found_by_build_id() {
    // A stripped copy of the target whose debug info is only under
    // PTAP_DEBUG_ROOT/.build-id/xx/yyyy.debug (as /usr/lib/debug is laid out
    // by Debian's -dbgsym packages).
    let split = compile("rettypes.debuglink");
    let dir = out_dir().join("buildid");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("rettypes");
    let st = std::process::Command::new("objcopy")
        .arg("--remove-section=.gnu_debuglink")
        .arg(&split)
        .arg(&bin)
        .status()
        .unwrap();
    assert!(st.success());
    let notes = std::process::Command::new("readelf")
        .arg("-n")
        .arg(&bin)
        .output()
        .unwrap();
    let notes = String::from_utf8_lossy(&notes.stdout);
    let id = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("no build id")
        .trim()
        .to_string();
    let under = dir.join("root/.build-id").join(&id[..2]);
    std::fs::create_dir_all(&under).unwrap();
    std::fs::copy(
        split.with_extension("debuglink.debug"),
        under.join(format!("{}.debug", &id[2..])),
    )
    .unwrap();
    let run = |root: &Path| {
        let mut c = ptap();
        c.env("PTAP_DEBUG_ROOT", root)
            .arg("-e")
            .arg("probe kretprobe(neg) { print($return) }")
            .arg("-c")
            .arg(format!("{} 2", bin.display()));
        run_cmd(c, Duration::from_secs(120))
    };
    let out = run(&dir.join("root"));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("-1\n-2\n"), "{out:?}");
    let out = run(&dir.join("elsewhere"));
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("no debug information for function `neg`"),
        "{out:?}"
    );
}

fn listing(args: &[&str]) -> Output {
    let mut c = ptap();
    c.args(args);
    run_cmd(c, Duration::from_secs(120))
}

#[test]
fn list_points_of_a_program() {
    let bin = target("rettypes");
    // The executable named like a library: only its functions.
    let out = listing(&["-l", "kprobe(rettypes:n*)", &bin]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        "kprobe(name_of)\nkprobe(neg)\nkprobe(nothing)\n"
    );
    // -c CMD: the same program, found like execvp finds it.
    let out = listing(&["-l", "kretprobe(ne?)", "-c", &format!("{bin} 3")]);
    assert_eq!(out.stdout, "kretprobe(neg)\n", "{out:?}");
    // A library, qualified by its name.
    let out = listing(&["-l", "libc:mallo?", &bin]);
    assert_eq!(out.stdout, "kprobe(libc.so.6:malloc)\n", "{out:?}");
}

#[test]
fn list_points_with_variables_and_types() {
    let bin = target("rettypes");
    let out = listing(&["-L", "kretprobe(rettypes:n*)", &bin]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        "kretprobe(name_of) $x:int $return:const char*\n\
         kretprobe(neg) $x:int $return:int\n\
         kretprobe(nothing) $x:int\n"
    );
    let out = listing(&["-L", "kprobe(where)", &bin]);
    assert_eq!(out.stdout, "kprobe(where) $x:int\n", "{out:?}");
    // C++: each overload with its parameters; -v adds the signature and symbol.
    let cxx = target("cxx_names");
    let out = listing(&["-L", "\"ns::Class::*\"", &cxx]);
    assert_eq!(
        out.stdout,
        "kprobe(\"ns::Class::method\") $this:struct Class* const $x:int\n\
         kprobe(\"ns::Class::method\") $this:struct Class* const $x:long int $y:int\n",
        "{out:?}"
    );
    let out = listing(&["-v", "-l", "tmax", &cxx]);
    assert!(
        out.stdout
            .contains("kprobe(\"tmax<int>\")  # tmax<int>(int, int) [_Z4tmaxIiET_S0_S0_] at 0x"),
        "{out:?}"
    );
    // Rust, with and without debug info.
    let out = listing(&["-L", "rs1::compute", &target("rs_names")]);
    assert_eq!(
        out.stdout, "kprobe(\"rs_names::rs1::compute\") $x:u64\n",
        "{out:?}"
    );
    let out = listing(&["-L", "rs1::compute", &target("rs_names.nodebug")]);
    assert_eq!(
        out.stdout, "kprobe(\"rs_names::rs1::compute\")\n",
        "{out:?}"
    );
}

#[test]
fn list_system_call_points() {
    let out = listing(&["-l", "sys_openat*"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "kprobe(sys_openat)\nkprobe(sys_openat2)\n");
    let out = listing(&["-L", "kretprobe(sys_open)"]);
    assert_eq!(
        out.stdout,
        "kretprobe(sys_open) ret:long # calls open(2) openat(257) openat2(437) creat(85)\n"
    );
    // Arguments by name and C type, from the kernel's tracepoint formats
    // when tracefs is readable.
    let out = listing(&["-L", "sys_openat"]);
    let tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|r| {
            std::path::Path::new(r)
                .join("events/syscalls/sys_enter_openat")
                .is_dir()
        });
    let expect = if tracefs {
        "kprobe(sys_openat) dfd=arg1:int filename=arg2:const char* flags=arg3:int mode=arg4:umode_t # calls openat(257)\n"
    } else {
        "kprobe(sys_openat) # calls openat(257)\n"
    };
    assert_eq!(out.stdout, expect, "{out:?}");
}

#[test]
fn list_source_lines() {
    // An inlined function: one point per copy, marked.
    let bin = target("inlines");
    let out = listing(&["-l", "square@inlines.c", &bin]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("kprobe(\"square@inlines.c\")  # 0x")
                && l.ends_with(" in square (inlined)")),
        "{out:?}"
    );
    // By its name, the same copies (the function has no symbol).
    let out = listing(&["-L", "kprobe(square)", &bin]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 2, "{out:?}");
    assert!(
        out.stdout
            .lines()
            .all(|l| l.starts_with("kprobe(square) $v:int $r:int  # 0x")),
        "{out:?}"
    );
    // -L: the variables in scope at a line (-O0: on the frame).
    let out = listing(&["-L", "kprobe(\"structs.c:40\")", &target("structs.O0")]);
    assert_eq!(
        out.stdout,
        "kprobe(\"structs.c:40\") $i:int $argc:int $argv:char** $n:int $second:struct pt $first:struct pt $sum:long int\n",
        "{out:?}"
    );
    let out = listing(&["-l", "structs.c:31", &target("structs")]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("no code at line 31 of `structs.c`"),
        "{out:?}"
    );
}

#[test]
fn listing_errors() {
    let bin = target("cxx_names");
    let out = listing(&["-l", "kprobe(compute)", &bin]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.starts_with(
        "ptap: kprobe(compute) is ambiguous: 2 functions end with `::compute` (ns::compute, other::compute)"
    ), "{out:?}");
    let out = listing(&["-l", "kprobe(no_such_fn)", &bin]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stderr, "ptap: kprobe(no_such_fn) matches no function\n");
    let out = listing(&["-l", "kprobe(main)"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out
        .stderr
        .contains("what program? give -c CMD, -x PID or its path"));
}

/// The debug file Debian's libc6-dbg installs for this machine's libc, if any.
fn libc_debug_file() -> Option<std::path::PathBuf> {
    let notes = std::process::Command::new("readelf")
        .args(["-n", "/lib/x86_64-linux-gnu/libc.so.6"])
        .output()
        .ok()?;
    let notes = String::from_utf8_lossy(&notes.stdout).into_owned();
    let id = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))?
        .trim()
        .to_string();
    let p = Path::new("/usr/lib/debug/.build-id")
        .join(&id[..2])
        .join(format!("{}.debug", &id[2..]));
    p.is_file().then_some(p)
}

#[test]
fn libc_variables_from_the_debian_debug_package() {
    if libc_debug_file().is_none() {
        eprintln!("skipped: no libc6-dbg debug file for this libc (apt-get install libc6-dbg)");
        return;
    }
    // Debian's echo (coreutils) writes "hello\n" with one write(2).
    let out = script(
        r#"probe kprobe(libc:write) { printf("write(%d, %d)\n", $fd, $nbytes) } probe kretprobe(libc:write) { printf("-> %d\n", $return) }"#,
        "/bin/echo hello",
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    // echo's own "hello" shares the stdout and may come between the two
    // records (ptap prints the first as soon as it drains it).
    let ours: Vec<&str> = out.stdout.lines().filter(|l| *l != "hello").collect();
    assert!(
        ours.windows(2).any(|w| w == ["write(1, 6)", "-> 6"]),
        "{out:?}"
    );
}
