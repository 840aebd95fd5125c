//! Probe modules: the ELF relocatable object, its metadata, and the
//! runtime's loader (map, relocate against the helper table, run).
mod codegen_support;
use codegen_support::*;
use object::{Object, ObjectSection, ObjectSymbol};
use ptap_rt_core::abi::PtRegs;
use ptap_rt_core::script::load::{load, read_meta, LoadError};

fn checked(src: &str) -> ptap_lang::CheckedScript {
    ptap_lang::frontend("t.pt", src, &ptap_lang::Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render()))
}

const SCRIPT: &str = "global n, last\n\
    function fib(k) { if (k < 2) return k; return fib(k - 1) + fib(k - 2) }\n\
    probe kprobe(work) { n++; last = \"w\" . execname(); printf(\"%s %d %d\\n\", \"arg\", arg1, fib(arg1)) }\n\
    probe end { print(n, last == \"\") ; x = 1 / (n - n) }";

#[test]
fn object_has_handlers_helpers_and_metadata() {
    let bytes = ptap_compiler::emit_object(&checked(SCRIPT)).unwrap();
    let obj = object::File::parse(&*bytes).unwrap();
    assert_eq!(obj.kind(), object::ObjectKind::Relocatable);
    let defined: Vec<&str> = obj
        .symbols()
        .filter(|s| s.is_definition())
        .filter_map(|s| s.name().ok())
        .collect();
    let undefined: Vec<&str> = obj
        .symbols()
        .filter(|s| s.is_undefined())
        .filter_map(|s| s.name().ok())
        .collect();
    for want in ["ptap_probe_0", "ptap_probe_1", "ptap_fn_fib"] {
        assert!(defined.contains(&want), "{want} missing from {defined:?}");
    }
    for want in ["ptap_h_printf", "ptap_h_execname", "ptap_h_gstr_store"] {
        assert!(
            undefined.contains(&want),
            "{want} missing from {undefined:?}"
        );
    }
    let meta = obj.section_by_name(".ptap_meta").expect("metadata section");
    let meta = ptap_rt_core::script::meta::Meta::decode(
        std::str::from_utf8(meta.data().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(meta.probes.len(), 2);
    assert_eq!(meta.probes[0].points[0].text, "kprobe(work)");
    assert_eq!(
        meta.formats,
        vec!["%s %d %d\n".to_string(), "%d %d\n".to_string()]
    );
    assert_eq!(read_meta(&bytes).unwrap(), meta);
}

#[test]
fn loaded_module_runs_like_the_jit() {
    let bytes = ptap_compiler::emit_object(&checked(SCRIPT)).unwrap();
    let m = load(&bytes).unwrap();
    let e = env(SCRIPT);
    assert_eq!(
        m.meta, e.jit.compiled.meta,
        "object and JIT compile to the same metadata"
    );
    for k in [3, 10] {
        let mut regs = PtRegs {
            di: k,
            ..PtRegs::default()
        };
        let mut ctx = e.ctx(&mut regs);
        // SAFETY: live env and regs.
        assert_eq!(unsafe { m.handler(0).unwrap()(&mut ctx) }, 0);
    }
    let mut ctx = e.ctx(std::ptr::null_mut());
    ctx.probe = 1;
    // SAFETY: live env.
    let code = unsafe { ptap_rt_core::script::run_handler(m.handler(1).unwrap(), &mut ctx) };
    assert_eq!(code, ptap_rt_core::script::ctx::ERR_DIV0);
    assert_eq!(
        e.output(),
        "arg 3 2\narg 10 55\n2 0\nERROR: division by 0 near `1 / (n - n)` at t.pt:4:40 in probe end\n"
    );
    assert_eq!(e.long("n"), 2);
}

#[test]
fn loader_rejects_bad_input() {
    assert!(matches!(load(b"not an elf"), Err(LoadError::Parse(_))));
    // A valid ELF object without metadata: the compiler's own object minus the section name.
    let mut bytes = ptap_compiler::emit_object(&checked("probe begin { print(1) }")).unwrap();
    let at = bytes.windows(10).position(|w| w == b".ptap_meta").unwrap();
    bytes[at + 1] = b'X';
    assert_eq!(load(&bytes).err(), Some(LoadError::NoMetadata));
}
