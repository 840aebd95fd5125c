//! Handlers are compiled for a fixed x86-64 ISA, whatever the host CPU has: the
//! jump-path trampolines save only what such code can change (docs/optprobes.md).

use ptap_compiler::codegen::{host_isa, ISA_FLAGS};

#[test]
fn handlers_use_no_avx_whatever_the_host_has() {
    let isa = host_isa().expect("isa");
    let flags = isa.isa_flags();
    let on = |name: &str| {
        flags
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.as_bool())
            .unwrap_or_else(|| panic!("no ISA flag {name}"))
    };
    for f in ISA_FLAGS {
        assert!(on(f), "{f} is enabled");
    }
    for v in flags.iter().filter(|v| v.as_bool().is_some()) {
        let allowed = ISA_FLAGS.contains(&v.name) || v.name == "has_cmpxchg16b";
        if !allowed {
            assert_eq!(v.as_bool(), Some(false), "{} must be off", v.name);
        }
    }
    assert!(!on("has_avx") && !on("has_avx2") && !on("has_avx512f"));
}
