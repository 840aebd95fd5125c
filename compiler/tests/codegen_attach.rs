//! End to end inside this test process: script -> probe module (ELF .o)
//! -> runtime loader -> kprobe/kretprobe registration -> hits on a libc
//! function called here -> records in an in-process session -> ptap's formatting.
//! The runtime rlib is linked in; its constructor stays inert here, so the
//! test performs the constructor's steps (thread table, signal handlers).
mod codegen_support;
use codegen_support::*;
use std::sync::atomic::Ordering;

/// The probed function: libc's `labs` (the runtime refuses to probe its own
/// object, which here is this whole test binary). Nothing else in this
/// process calls it.
fn work(x: i64) -> i64 {
    // Called through an opaque pointer: the optimizer knows `labs` and would inline it.
    let f = std::hint::black_box(libc::labs as unsafe extern "C" fn(libc::c_long) -> libc::c_long);
    // SAFETY: labs has no preconditions.
    unsafe { f(x as libc::c_long) as i64 }
}

/// libc's `abs`, through an opaque pointer (see `work`).
fn abs(x: i32) -> i32 {
    let f = std::hint::black_box(libc::abs as unsafe extern "C" fn(i32) -> i32);
    // SAFETY: abs has no preconditions.
    unsafe { f(x) }
}

/// Rust's test threads run signal handlers on a small alternate stack (std
/// sets one up to report stack overflows); the runtime's SIGTRAP path plus
/// an unoptimized handler need more, so give this thread a bigger one.
fn big_altstack() {
    let size = 1 << 20;
    let mem = Box::leak(vec![0u8; size].into_boxed_slice());
    let st = libc::stack_t {
        ss_sp: mem.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: size,
    };
    // SAFETY: a valid stack_t describing leaked memory.
    assert_eq!(unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) }, 0);
}

fn init_runtime() {
    assert!(ptap_rt_core::hit::threads::init());
    ptap_rt_core::lifecycle::install::install();
    ptap_rt_core::hit::wrap::ACTIVE.store(true, Ordering::Release);
}

const SCRIPT: &str = "global n, total\n\
    probe kprobe(libc:labs) { n++; total += arg1 }\n\
    probe kretprobe(libc:labs) { printf(\"%d -> %d\\n\", @entry(arg1), ret) }\n\
    probe jprobe(libc:labs) { if (arg1 == -3) print(\"three\", probefunc(), pp()) }\n\
    probe end { print(n) }";

static INIT: std::sync::Once = std::sync::Once::new();

#[test]
fn compiled_module_probes_a_function_of_this_process() {
    INIT.call_once(init_runtime);
    big_altstack();
    let src = SCRIPT;
    let checked = ptap_lang::frontend("t.pt", src, &ptap_lang::Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render()));
    let bytes = ptap_compiler::emit_object(&checked).unwrap();
    let module = ptap_rt_core::script::load::load(&bytes).unwrap();
    let e = env(src); // the session + globals (and the JIT for `end`)
    let attached = ptap_rt_core::script::attach::attach(module, e.globals.base(), e.session.base())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(attached.count(), 3);
    let got: Vec<i64> = (1..=4).map(|k| work(-k)).collect();
    attached.detach();
    assert_eq!(got, vec![1, 2, 3, 4], "the target's results are unchanged");
    assert_eq!(work(-10), 10);
    assert_eq!(e.long("n"), 4);
    assert_eq!(e.long("total"), -10);
    assert_eq!(e.long("n"), 4, "no hit after detach");
    // `end` runs in ptap: the JIT'd handler over the same globals.
    let (r, _) = e.run(3);
    assert_eq!(r, 0);
    assert_eq!(
        e.output(),
        "-1 -> 1\n-2 -> 2\nthree labs jprobe(libc:labs)\n-3 -> 3\n-4 -> 4\n4\n"
    );
}

/// Threads hitting the same probe update one global with no lost update.
#[test]
fn eight_threads_through_real_probes_count_exactly() {
    INIT.call_once(init_runtime);
    let src = "global hits\nprobe kprobe(libc:abs) { hits++ }";
    let checked = ptap_lang::frontend("t.pt", src, &ptap_lang::Options::default()).unwrap();
    let module =
        ptap_rt_core::script::load::load(&ptap_compiler::emit_object(&checked).unwrap()).unwrap();
    let e = env(src);
    let attached =
        ptap_rt_core::script::attach::attach(module, e.globals.base(), e.session.base()).unwrap();
    const PER_THREAD: i64 = 20_000;
    let t0 = std::time::Instant::now();
    std::thread::scope(|sc| {
        for t in 0..8 {
            sc.spawn(move || {
                big_altstack();
                let mut sum = 0i64;
                for k in 0..PER_THREAD {
                    sum += i64::from(abs((-k - t) as i32));
                }
                assert_eq!(sum, (0..PER_THREAD).map(|k| k + t).sum::<i64>());
            });
        }
    });
    let per_hit = t0.elapsed() / (8 * PER_THREAD as u32);
    attached.detach();
    assert_eq!(e.long("hits"), 8 * PER_THREAD);
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    eprintln!("kprobe + compiled `hits++`: {per_hit:?} wall per hit (8 threads, {build} build)");
}
