//! The public C headers (runtime/include/ptap/kprobes.h, syscalls.h) and
//! their Rust mirrors (runtime/src/abi.rs, `hit::sigsys::probes`) describe
//! the same structures: the sizes, alignments and field offsets the Rust side
//! has are written into a C file as `_Static_assert`s against the headers,
//! and `cc` must accept it.

use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::path::Path;
use std::process::Command;

use ptap_rt_core::abi::{
    Jprobe, Kprobe, Kretprobe, KretprobeInstance, PtRegs, KPROBE_FLAG_DISABLED, KPROBE_FLAG_GONE,
    KPROBE_FLAG_QUIET,
};
use ptap_rt_core::hit::sigsys::probes::{SyscallProbe, SYSCALL_PROBE_DISABLED};

/// `_Static_assert`s: (C expression, the Rust value it must equal).
fn asserts() -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = Vec::new();
    macro_rules! layout {
        ($rust:ty, $c:literal, [$($rf:ident => $cf:literal),* $(,)?]) => {
            v.push((format!("sizeof(struct {})", $c), size_of::<$rust>() as u64));
            v.push((format!("_Alignof(struct {})", $c), align_of::<$rust>() as u64));
            $(v.push((
                format!("offsetof(struct {}, {})", $c, $cf),
                offset_of!($rust, $rf) as u64,
            ));)*
        };
    }
    layout!(PtRegs, "pt_regs", [
        r15 => "r15", r14 => "r14", r13 => "r13", r12 => "r12", bp => "bp", bx => "bx",
        r11 => "r11", r10 => "r10", r9 => "r9", r8 => "r8", ax => "ax", cx => "cx",
        dx => "dx", si => "si", di => "di", orig_ax => "orig_ax", ip => "ip", cs => "cs",
        flags => "flags", sp => "sp", ss => "ss",
    ]);
    layout!(Kprobe, "kprobe", [
        addr => "addr", symbol_name => "symbol_name", offset => "offset",
        pre_handler => "pre_handler", post_handler => "post_handler",
        fault_handler => "fault_handler", nmissed => "nmissed", flags => "flags",
        private => "__ptap_private",
    ]);
    layout!(Jprobe, "jprobe", [kp => "kp", entry => "entry"]);
    layout!(Kretprobe, "kretprobe", [
        kp => "kp", handler => "handler", entry_handler => "entry_handler",
        data_size => "data_size", maxactive => "maxactive", nmissed => "nmissed",
        private => "__ptap_private",
    ]);
    layout!(KretprobeInstance, "kretprobe_instance", [
        rp => "rp", ret_addr => "ret_addr", task => "task",
    ]);
    // data[] follows the fixed part.
    v.push((
        "offsetof(struct kretprobe_instance, data)".into(),
        size_of::<KretprobeInstance>() as u64,
    ));
    layout!(SyscallProbe, "syscall_probe", [
        nrs => "nrs", n => "n", entry => "entry", ret => "ret", nmissed => "nmissed",
        flags => "flags", data => "data", private => "__ptap_private",
    ]);
    v.push(("KPROBE_FLAG_GONE".into(), KPROBE_FLAG_GONE.into()));
    v.push(("KPROBE_FLAG_DISABLED".into(), KPROBE_FLAG_DISABLED.into()));
    v.push(("KPROBE_FLAG_QUIET".into(), KPROBE_FLAG_QUIET.into()));
    v.push((
        "SYSCALL_PROBE_DISABLED".into(),
        SYSCALL_PROBE_DISABLED.into(),
    ));
    v
}

fn c_source(asserts: &[(String, u64)]) -> String {
    let mut s = String::from(
        "#include <stddef.h>\n#include <ptap/kprobes.h>\n#include <ptap/syscalls.h>\n\n",
    );
    for (expr, val) in asserts {
        writeln!(
            s,
            "_Static_assert({expr} == {val}, \"{expr} is {val} in the runtime's Rust\");"
        )
        .unwrap();
    }
    s
}

/// Compile `src` with the runtime's include directory; the compiler's
/// messages on failure.
fn cc_accepts(src: &str, tag: &str) -> Result<(), String> {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let file = std::env::temp_dir().join(format!("ptap-c-layout-{}-{tag}.c", std::process::id()));
    std::fs::write(&file, src).unwrap();
    let out = Command::new("cc")
        .args(["-std=c11", "-fsyntax-only", "-Werror", "-I"])
        .arg(&include)
        .arg(&file)
        .output();
    let _ = std::fs::remove_file(&file);
    let out = out.map_err(|e| format!("cannot run cc (needed by the tests): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn kprobes_h_and_syscalls_h_match_the_rust_structures() {
    let a = asserts();
    assert!(a.len() > 60, "{} assertions", a.len());
    if let Err(e) = cc_accepts(&c_source(&a), "ok") {
        panic!("the C headers and runtime/src/abi.rs differ:\n{e}");
    }
}

/// The check can fail: one wrong offset is reported by cc.
#[test]
fn a_wrong_offset_is_caught() {
    let mut a = asserts();
    let i = a
        .iter()
        .position(|(e, _)| e == "offsetof(struct kprobe, nmissed)")
        .unwrap();
    a[i].1 += 8;
    let e = cc_accepts(&c_source(&a), "bad").unwrap_err();
    assert!(e.contains("offsetof(struct kprobe, nmissed)"), "{e}");
}
