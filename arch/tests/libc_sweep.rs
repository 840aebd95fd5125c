//! Sweep a real library: decode every exported function of this machine's libc and
//! prepare an out-of-line slot at every instruction boundary (as if every instruction
//! were probed), checking that nothing panics, that relocation succeeds wherever the
//! classification says it should, and that the refusals are the expected kinds.
//! Run with `--nocapture` to see the tallies.

use std::collections::BTreeMap;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use ptap_arch::decode::{check_boundary, decode_function, Class};
use ptap_arch::optprobe::{check_region, JMP_LEN};
use ptap_arch::trampoline::{optprobe_trampoline, Handler, VectorSave};
use ptap_arch::xol::{prepare, Kind};

const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

#[test]
fn every_libc_function_decodes_and_relocates() {
    let Ok(data) = std::fs::read(LIBC) else {
        eprintln!("{LIBC} not found; skipping");
        return;
    };
    let file = object::File::parse(&*data).unwrap();
    let mut seen = std::collections::HashSet::new();
    let (mut funcs, mut decoded, mut insns, mut slots, mut emulated) = (0, 0, 0, 0, 0);
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut undecodable = vec![];
    let (mut opt_ok, mut opt_no) = (0, BTreeMap::<&str, usize>::new());
    for sym in file.dynamic_symbols() {
        if sym.kind() != SymbolKind::Text || sym.size() == 0 || !seen.insert(sym.address()) {
            continue;
        }
        let Some(idx) = sym.section_index() else {
            continue;
        };
        let section = file.section_by_index(idx).unwrap();
        let Ok(Some(code)) = section.data_range(sym.address(), sym.size()) else {
            continue;
        };
        funcs += 1;
        let start = sym.address();
        let f = match decode_function(code, start) {
            Ok(f) => f,
            Err(e) => {
                undecodable.push(format!("{} ({e})", sym.name().unwrap_or("?")));
                continue;
            }
        };
        decoded += 1;
        for (k, i) in f.insns.iter().enumerate() {
            insns += 1;
            let off = (i.addr - start) as usize;
            if k % 7 == 0 {
                // boundaries agree with the sweep (sampled: check_boundary is O(n))
                assert_eq!(check_boundary(code, start, i.addr).unwrap().len, i.len);
            }
            let slot = i.addr + 0x1000_0000;
            match prepare(&code[off..], i.addr, slot) {
                Ok(p) => {
                    assert_eq!(p.insn_len, i.len);
                    match p.kind {
                        Kind::Slot => {
                            slots += 1;
                            assert!(p.body_len > 0 && p.slot_len > p.body_len);
                        }
                        Kind::Emulate(_) => emulated += 1,
                    }
                    assert!(!matches!(i.class, Class::Refused(_)));
                }
                Err(e) => {
                    assert!(
                        matches!(i.class, Class::Refused(_)),
                        "{:#x}: {:?} but prepare failed: {e}",
                        i.addr,
                        i.class
                    );
                    *refused.entry(e.to_string()).or_default() += 1;
                }
            }
        }
        match check_region(&f, start, JMP_LEN) {
            Ok(region) => {
                opt_ok += 1;
                // the trampoline for it builds (relocation of the region included)
                let h = Handler {
                    func: 0x7000_0000_0000,
                    data: 0,
                };
                let tramp = start + 0x1000_0000;
                let t = optprobe_trampoline(tramp, code, &region, h, VectorSave::Xmm, false);
                assert!(t.is_ok(), "{:#x}: {:?}", start, t.err());
            }
            Err(r) => {
                let kind = match r {
                    ptap_arch::optprobe::Refusal::IndirectJump { .. } => "indirect jump",
                    ptap_arch::optprobe::Refusal::CallInRegion { .. } => "call in region",
                    ptap_arch::optprobe::Refusal::BranchIntoRegion { .. } => "branch into region",
                    ptap_arch::optprobe::Refusal::CrossesFunctionEnd { .. } => "function too short",
                    ptap_arch::optprobe::Refusal::NotRelocatable { .. } => "not relocatable",
                    _ => "other",
                };
                *opt_no.entry(kind).or_default() += 1;
            }
        }
    }
    eprintln!("libc: {funcs} functions, {decoded} decoded, {insns} instructions");
    eprintln!(
        "  slots {slots}, emulated {emulated}, refused {:?}",
        refused
    );
    eprintln!("  undecodable: {:?}", undecodable);
    eprintln!("  optprobe at entry: {opt_ok} ok, refused {:?}", opt_no);
    assert!(funcs > 1000, "libc has thousands of functions");
    assert!(
        decoded * 100 >= funcs * 99,
        "{} of {funcs} functions failed to decode",
        funcs - decoded
    );
    assert!(slots + emulated >= insns * 99 / 100);
}

/// Registration-time cost, for the goal "10,000 probes armed in ≤ 100 ms": decode every
/// libc function and prepare a slot at each entry. Not a timed test
/// (`cargo test --release -p ptap-arch --test libc_sweep -- --ignored --nocapture`).
#[test]
#[ignore]
fn registration_cost() {
    let Ok(data) = std::fs::read(LIBC) else {
        return;
    };
    let file = object::File::parse(&*data).unwrap();
    let mut funcs = vec![];
    for sym in file.dynamic_symbols() {
        if sym.kind() != SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
        if let Ok(Some(code)) = section.data_range(sym.address(), sym.size()) {
            funcs.push((sym.address(), code));
        }
    }
    let t = std::time::Instant::now();
    let mut n = 0;
    for (start, code) in &funcs {
        let f = decode_function(code, *start).unwrap();
        let p = prepare(code, *start, start + 0x1000_0000);
        let _ = check_region(&f, *start, JMP_LEN);
        n += p.is_ok() as usize;
    }
    let dt = t.elapsed();
    eprintln!(
        "{} functions: decode_function + prepare + check_region at entry: {:?} total, {:.1} us each",
        funcs.len(),
        dt,
        dt.as_secs_f64() * 1e6 / funcs.len() as f64
    );
    assert!(n > 0);
}
