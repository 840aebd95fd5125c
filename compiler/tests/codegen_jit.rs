//! Compiled handlers, run with the JIT against an in-process session.
mod codegen_support;
use codegen_support::*;
use ptap_rt_core::abi::PtRegs;
use ptap_rt_core::script::ctx::{
    ABI_SYSCALL, ERR_DIV0, ERR_FAULT, ERR_MAXACTION, ERR_NESTING, ERR_USER,
};

#[test]
fn arithmetic() {
    assert_eq!(begin("print(1 + 2 * 3 - 4)"), "3\n");
    assert_eq!(
        begin("print(-7 / 2, -7 % 2, 7 / -1, 1 << 4, -16 >> 2)"),
        "-3 -1 -7 16 -4\n"
    );
    assert_eq!(
        begin("print(6 & 3, 6 | 3, 6 ^ 3, ~0, !5, !0, -(3))"),
        "2 7 5 -1 0 1 -3\n"
    );
    // i64::MIN / -1 must not trap the target (wraps, as two's complement does).
    assert_eq!(
        begin("x = -9223372036854775807 - 1; print(x / -1, x % -1)"),
        "-9223372036854775808 0\n"
    );
}

#[test]
fn comparisons_and_logic() {
    assert_eq!(
        begin("print(1 < 2, 2 < 1, 2 <= 2, 3 >= 4, 5 == 5, 5 != 5, 1 > 0)"),
        "1 0 1 0 1 0 1\n"
    );
    assert_eq!(
        begin("print(1 && 2, 1 && 0, 0 || 3, 0 || 0, 2 ? 10 : 20, 0 ? 10 : 20)"),
        "1 0 1 0 10 20\n"
    );
}

#[test]
fn short_circuit_skips_the_other_side() {
    assert_eq!(
        begin("x = 0; a = 0 && (x = 1); b = 1 || (x = 2); print(x, a, b)"),
        "0 0 1\n"
    );
}

#[test]
fn strings_concat_and_compare() {
    let out = begin(
        r#"s = "ab"; t = s . "cd"; s .= "x"; print(t, s, strlen(t), t == "abcd", s < t, "b" > "a", s != "abx")"#,
    );
    assert_eq!(out, "abcd abx 4 1 0 1 0\n");
    assert_eq!(
        begin(r#"print(substr("hello", 1, 3), isinstr("hello", "ll"), strtol("ff", 16))"#),
        "ell 1 255\n"
    );
}

#[test]
fn strings_truncate_at_maxstringlen() {
    let e = env_with(
        r#"probe begin { s = "abcdefgh"; s = s . s; print(s, strlen(s)) }"#,
        &["MAXSTRINGLEN=10"],
    );
    assert_eq!(e.run(0).0, 0);
    assert_eq!(e.output(), "abcdefghab 10\n");
}

#[test]
fn sprintf_and_sprint() {
    let out = begin(
        r#"s = sprintf("%s-%03d|%x", "id", 7, 255); t = sprint(1, "a", -2); print(s, strlen(s), t)"#,
    );
    assert_eq!(out, "id-007|ff 9 1 a -2\n");
}

#[test]
fn try_catch() {
    let e = env(r#"probe kprobe(work) {
           z = 0; try { x = 1 / z; print("not here") } catch (m) { print("caught:", m) }
           try { error("boom") } catch (m) { print("caught:", m) }
           try { print(user_long(8)) } catch { print("fault") }
           try { try { error("inner") } catch (m) { error(m . "!") } } catch (m) { print(m) }
           print("after") }"#);
    assert_eq!(e.run(0).0, 0);
    assert_eq!(
        e.output(),
        "caught: division by 0\ncaught: boom\nfault\ninner!\nafter\n"
    );
}

#[test]
fn try_catch_sees_errors_of_called_functions() {
    let e = env("function f(x) { return 10 / x }\nprobe begin { try { print(f(0)) } catch (m) { print(m) }; print(f(5)) }");
    assert_eq!(e.run(0).0, 0);
    assert_eq!(e.output(), "division by 0\n2\n");
}

#[test]
fn maxaction_cannot_be_caught() {
    let e = env_with(
        "probe begin { try { while (1) {} } catch { print(\"caught\") } }",
        &["MAXACTION=20"],
    );
    let (r, _) = e.run(0);
    assert_eq!(r, i64::from(ERR_MAXACTION));
    assert_eq!(e.output(), "");
}

#[test]
fn control_flow() {
    assert_eq!(begin("if (1 > 2) print(1) else print(2)"), "2\n");
    assert_eq!(
        begin("i = 0; s = 0; while (i < 10) { i++; if (i % 2) continue; s += i }; print(s)"),
        "30\n"
    );
    assert_eq!(
        begin("s = 0; for (i = 0; i < 100; i++) { if (i == 5) break; s += i }; print(s, i)"),
        "10 5\n"
    );
    assert_eq!(begin("for (i = 0; i < 3; i++) { for (j = 0; j < 3; j++) { if (j == 1) break; print(i, j) } }"), "0 0\n1 0\n2 0\n");
    assert_eq!(begin("print(1); next; print(2)"), "1\n");
}

#[test]
fn functions_and_recursion() {
    let e = env(
        "function fib(n) { if (n < 2) return n; return fib(n - 1) + fib(n - 2) }
         function greet(who:string) { return \"hi \" . who }
         function twice(s:string) { s = s . s; return s }
         probe begin { x = \"a\"; print(fib(9), greet(\"bob\"), twice(x), x) }",
    );
    let (r, ctx) = e.run(0);
    assert_eq!((r, ctx.error), (0, 0));
    assert_eq!(e.output(), "34 hi bob aa a\n");
}

#[test]
fn string_function_without_return_gives_empty_string() {
    let e = env(
        "function f(x) { if (x) return \"yes\" }\nprobe begin { print(f(1), f(0), strlen(f(0))) }",
    );
    assert_eq!(e.run(0).0, 0);
    assert_eq!(e.output(), "yes  0\n");
}

#[test]
fn recursion_is_bounded_by_maxnesting() {
    let src = "function down(n) {\n  if (n < 0) return 0\n  return down(n + 1)\n}\nprobe begin { print(down(0)) }";
    let e = env_with(src, &["MAXNESTING=5", "MAXACTION=100000"]);
    let (r, ctx) = e.run(0);
    assert_eq!(r, i64::from(ERR_NESTING));
    assert_eq!(ctx.error, ERR_NESTING);
    assert_eq!(e.error_at(&ctx), "t.pt:3:10");
    assert_eq!(
        ctx.nesting, 0,
        "every level restored its depth while unwinding"
    );
    assert_eq!(e.output(), "");
}

#[test]
fn printf_records() {
    let out = begin(r#"printf("%s=%5d|%-4x|%c%%\n", "n", 42, 255, 65)"#);
    assert_eq!(out, "n=   42|ff  |A%\n");
}

#[test]
fn printf_record_contents() {
    let e = env(r#"probe begin { printf("%d %s\n", -1, "xy") }"#);
    e.run(0);
    let mut recs = Vec::new();
    e.session
        .drain(|_, p| recs.push(ptap_rt_core::script::record::decode(p).unwrap()));
    use ptap_rt_core::script::record::Value;
    assert_eq!(
        recs,
        vec![(0, vec![Value::Long(-1), Value::Str("xy".into())])]
    );
    assert_eq!(e.jit.compiled.meta.formats, vec!["%d %s\n".to_string()]);
}

#[test]
fn division_by_zero_reports_line_and_column() {
    let e = env("probe begin {\n  x = 0\n  print(1)\n  y = 10 / x\n  print(2)\n}");
    let (r, ctx) = e.run(0);
    assert_eq!(r, i64::from(ERR_DIV0));
    assert_eq!(ctx.error, ERR_DIV0);
    assert_eq!(e.error_at(&ctx), "t.pt:4:7");
    assert_eq!(
        e.jit.compiled.meta.locations[ctx.error_loc as usize].token,
        "10 / x"
    );
    assert_eq!(e.output(), "1\n", "the handler stops at the error");
}

#[test]
fn error_record_is_formatted_by_ptap() {
    let e = env("global g\nprobe begin {\n  g = 5 % (g - g)\n}");
    let mut ctx = e.ctx(std::ptr::null_mut());
    // SAFETY: ctx points to the env's live session and globals.
    let code = unsafe { ptap_rt_core::script::run_handler(e.jit.handler(0).unwrap(), &mut ctx) };
    assert_eq!(code, ERR_DIV0);
    assert_eq!(
        e.output(),
        "ERROR: division by 0 near `5 % (g - g)` at t.pt:3:7 in probe begin\n"
    );
    assert_eq!(
        e.globals
            .header()
            .errors
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn maxaction_exhaustion_aborts() {
    let e = env_with(
        "probe begin { i = 0; while (1) { i++ } }",
        &["MAXACTION=50"],
    );
    let (r, ctx) = e.run(0);
    assert_eq!(r, i64::from(ERR_MAXACTION));
    assert_eq!(e.error_at(&ctx), "t.pt:1:22", "the loop statement");
    assert!(ctx.actions < 0);
}

#[test]
fn maxaction_counts_statements_exactly() {
    // 3 statements: fits in 3, not in 2.
    let src = "probe begin { a = 1; b = 2; c = 3 }";
    assert_eq!(env_with(src, &["MAXACTION=3"]).run(0).0, 0);
    assert_eq!(
        env_with(src, &["MAXACTION=2"]).run(0).0,
        i64::from(ERR_MAXACTION)
    );
}

#[test]
fn error_builtin() {
    let e = env(r#"probe begin { error("bad " . "thing"); print(1) }"#);
    let mut ctx = e.ctx(std::ptr::null_mut());
    // SAFETY: live env.
    let code = unsafe { ptap_rt_core::script::run_handler(e.jit.handler(0).unwrap(), &mut ctx) };
    assert_eq!(code, ERR_USER);
    assert_eq!(
        e.output(),
        "ERROR: bad thing near `error(\"bad \" . \"thing\")` at t.pt:1:15 in probe begin\n"
    );
}

#[test]
fn globals_persist_across_hits() {
    let e = env(
        "global n = 10, s = \"x\"\nprobe begin { n++; n += 5; n *= 2; s = s . \"y\"; print(n, s) }",
    );
    // globals start at their initial values: ptap writes them; here we do it by hand
    let meta = &e.jit.compiled.meta;
    e.globals
        .long(meta.globals[0].offset)
        .store(10, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: string slot of capacity maxstringlen + 1.
    unsafe {
        e.globals
            .store_str(meta.globals[1].offset, 129, c"x".as_ptr() as *const u8)
    };
    e.run(0);
    e.run(0);
    assert_eq!(e.output(), "32 xy\n76 xyy\n");
    assert_eq!(e.long("n"), 76);
}

#[test]
fn context_args_and_ret() {
    let e = env(
        "probe kprobe(work) { print(arg1, arg2, arg3, arg4, arg5, arg6) }
         probe kprobe(sys_read) { print(arg4) }
         probe kretprobe(work) { print(ret, register(\"rbx\")) }",
    );
    let mut regs = PtRegs {
        di: 1,
        si: 2,
        dx: 3,
        cx: 4,
        r8: 5,
        r9: 6,
        r10: 40,
        ax: 99,
        bx: 7,
        ..PtRegs::default()
    };
    e.run_with(0, &mut regs);
    e.run_with(1, &mut regs);
    e.run_with(2, &mut regs);
    assert_eq!(e.output(), "1 2 3 4 5 6\n40\n99 7\n");
}

#[test]
fn mixed_abi_probe_reads_ctx_abi() {
    let e = env("probe kprobe(work), kprobe(sys_read) { print(arg4) }");
    let mut regs = PtRegs {
        cx: 4,
        r10: 40,
        ..PtRegs::default()
    };
    e.run_with(0, &mut regs);
    let mut ctx = e.ctx(&mut regs);
    ctx.abi = ABI_SYSCALL;
    // SAFETY: live env and regs.
    unsafe { e.jit.handler(0).unwrap()(&mut ctx) };
    assert_eq!(e.output(), "4\n40\n");
}

#[test]
fn entry_values_in_kretprobe() {
    let e = env("probe kretprobe(work) { print(ret - @entry(arg1)) }");
    let entry = e.jit.entry_handler(0).expect("an @entry handler");
    let mut saved = [0i64; 1];
    let mut regs = PtRegs {
        di: 30,
        ..PtRegs::default()
    };
    let mut ctx = e.ctx(&mut regs);
    ctx.entry = saved.as_mut_ptr();
    // SAFETY: live env; entry points to one i64.
    unsafe { entry(&mut ctx) };
    assert_eq!(saved[0], 30);
    let mut regs = PtRegs {
        ax: 100,
        ..PtRegs::default()
    };
    let mut ctx = e.ctx(&mut regs);
    ctx.entry = saved.as_mut_ptr();
    // SAFETY: as above.
    unsafe { e.jit.handler(0).unwrap()(&mut ctx) };
    assert_eq!(e.output(), "70\n");
}

#[test]
fn user_memory_reads_are_fault_safe() {
    let value: i64 = -123456789;
    let text = c"from the target";
    let e = env("probe kprobe(work) { print(user_long(arg1), user_int(arg1), user_string(arg2)); print(user_long(arg3)) }");
    let mut regs = PtRegs {
        di: &value as *const i64 as u64,
        si: text.as_ptr() as u64,
        dx: 16, // unmapped
        ..PtRegs::default()
    };
    let (r, ctx) = e.run_with(0, &mut regs);
    assert_eq!(r, i64::from(ERR_FAULT));
    assert_eq!(ctx.error_arg, 16);
    assert_eq!(e.error_at(&ctx), "t.pt:1:87");
    assert_eq!(
        e.output(),
        format!("-123456789 {} from the target\n", value as i32)
    );
}

#[test]
fn context_helpers() {
    let out = begin("print(pid() == tid() || pid() > 0, target(), strlen(execname()) > 0, pp())");
    assert_eq!(
        out, "1 4242 1 \n",
        "pp() is empty: the test gives no point text"
    );
}

#[test]
fn unsupported_constructs_are_clear_errors() {
    let err = compile("probe kprobe(work) { print($count) }")
        .err()
        .unwrap();
    assert_eq!(
        err,
        "cannot compile `$count`: target variables need the target executable (-c CMD) with debug information"
    );
    let err = compile("probe begin { s = \"abc\"; if (s =~ \"a{5,2}\") print(1) }")
        .err()
        .unwrap();
    assert_eq!(
        err,
        "cannot compile the regular expression `a{5,2}`: bad repetition bounds (0..100)"
    );
}

#[test]
fn eight_threads_count_exactly() {
    let e = env("global n\nprobe kprobe(work) { n++ }");
    let h = e.jit.handler(0).unwrap();
    let (g, s) = (e.globals.base() as usize, e.session.base() as usize);
    std::thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(move || {
                let mut regs = PtRegs::default();
                for _ in 0..1_000_000 {
                    let mut ctx = ptap_rt_core::script::ctx::ProbeCtx::new(
                        &mut regs,
                        g as *mut u8,
                        s as *mut u8,
                        1000,
                    );
                    // SAFETY: the env outlives the scope.
                    unsafe { h(&mut ctx) };
                }
            });
        }
    });
    assert_eq!(e.long("n"), 8_000_000);
}

#[test]
fn ir_text_names_every_function() {
    let opts = ptap_lang::Options::default();
    let s = ptap_lang::frontend(
        "t.pt",
        "function f(x) { return x * 2 }\nprobe begin { print(f(3)) }",
        &opts,
    )
    .unwrap();
    let ir = ptap_compiler::ir_text(&s).unwrap();
    assert!(ir.contains("; ptap_fn_f\n"), "{ir}");
    assert!(ir.contains("; ptap_probe_0\n"), "{ir}");
    assert!(ir.contains("imul"), "{ir}");
}

#[test]
fn guru_mode_writes_registers_and_memory() {
    let mut target: i64 = 0x1111_1111_1111_1111;
    let e = env_with(
        "probe kprobe(work) { set_register(\"rax\", 42); set_user_int(arg1, -1); set_user_char(arg1 + 7, 0x22); set_user_long(8, 0) }",
        &["-g"],
    );
    let mut regs = PtRegs {
        di: &mut target as *mut i64 as u64,
        ..PtRegs::default()
    };
    let (r, ctx) = e.run_with(0, &mut regs);
    assert_eq!(regs.ax, 42);
    assert_eq!(target as u64, 0x2211_1111_ffff_ffff);
    assert_eq!(
        (r, ctx.error_arg),
        (i64::from(ERR_FAULT), 8),
        "writing address 8 fails cleanly"
    );
}

#[test]
fn probefunc_syscall_name_and_usymname() {
    let e = env(
        "probe kprobe(sys_read), kprobe(sys_write) { print(probefunc(), syscall_name()) }\n\
         probe kprobe(work) { print(usymname(arg1), usymname(16)) }",
    );
    let (read, write) = (b"read", b"write");
    let table = [
        ptap_rt_core::script::ctx::SyscallName {
            nr: 0,
            name: read.as_ptr(),
            len: 4,
        },
        ptap_rt_core::script::ctx::SyscallName {
            nr: 1,
            name: write.as_ptr(),
            len: 5,
        },
    ];
    let func = b"sys_read";
    let mut regs = PtRegs {
        orig_ax: 1,
        ..PtRegs::default()
    };
    let mut ctx = e.ctx(&mut regs);
    (ctx.func, ctx.func_len) = (func.as_ptr(), 8);
    (ctx.syscalls, ctx.nsyscalls) = (table.as_ptr(), 2);
    // SAFETY: live env, regs and tables.
    assert_eq!(unsafe { e.jit.handler(0).unwrap()(&mut ctx) }, 0);
    // usymname reads the runtime's symbol index of this process.
    ptap_rt_core::proc::symbols::get_or_build();
    let mut regs = PtRegs {
        di: libc::getpid as *const () as u64,
        ..PtRegs::default()
    };
    e.run_with(1, &mut regs);
    assert_eq!(e.output(), "sys_read write\ngetpid 0x10\n");
}

#[test]
fn statistics_aggregates() {
    let out = begin_with_globals(
        "global s",
        "for (i = 1; i <= 10; i++) s <<< i; print(@count(s), @sum(s), @min(s), @max(s), @avg(s)); \
         s <<< -5; print(@min(s), @max(s)); delete s; print(@count(s), @sum(s))",
    );
    assert_eq!(out, "10 55 1 10 5\n-5 10\n0 0\n");
}

#[test]
fn empty_aggregate_min_is_an_error() {
    let e = env("global s\nprobe begin { print(@count(s)); print(@min(s)) }");
    let (r, ctx) = e.run(0);
    assert_eq!(r, i64::from(ptap_rt_core::script::ctx::ERR_EMPTY_AGG));
    assert_eq!(e.error_at(&ctx), "t.pt:2:39");
    assert_eq!(e.output(), "0\n");
}

#[test]
fn aggregates_from_eight_threads_lose_nothing() {
    let e = env("global s\nprobe kprobe(work) { s <<< arg1 }");
    let h = e.jit.handler(0).unwrap();
    let (g, ses) = (e.globals.base() as usize, e.session.base() as usize);
    std::thread::scope(|sc| {
        for t in 0..8u64 {
            sc.spawn(move || {
                for k in 0..100_000u64 {
                    let mut regs = PtRegs {
                        di: t * 100_000 + k,
                        ..PtRegs::default()
                    };
                    let mut ctx = ptap_rt_core::script::ctx::ProbeCtx::new(
                        &mut regs,
                        g as *mut u8,
                        ses as *mut u8,
                        1000,
                    );
                    // SAFETY: the env outlives the scope.
                    unsafe { h(&mut ctx) };
                }
            });
        }
    });
    let off = e.jit.compiled.meta.globals[0].offset;
    let n = 800_000i64;
    assert_eq!(e.globals.read_stats(off), (n, n * (n - 1) / 2, 0, n - 1));
    assert_eq!(
        ptap_compiler::codegen::host::unread_globals(&e.jit.compiled.meta, &e.globals),
        format!(
            "s @count={n} @min=0 @max={} @sum={} @avg={}\n",
            n - 1,
            n * (n - 1) / 2,
            (n - 1) / 2
        )
    );
}

#[test]
fn next_inside_a_loop_ends_the_handler() {
    assert_eq!(
        begin("for (i = 0; i < 5; i++) { if (i == 2) next; print(i) }; print(\"unreachable\")"),
        "0\n1\n"
    );
}

#[test]
fn arrays_basic_operations() {
    let out = begin_with_globals(
        "global a, s, t[4]",
        r#"a[1] = 10; a[2] += 5; a[2]++; a[3]--; ++a[1]
           s["x", 1] = "hello"; s["x", 1] .= "!"; s["y", 2] = "bye"
           print(a[1], a[2], a[3], a[9], 1 in a, 9 in a, ["x", 1] in s, s["x", 1], s["z", 0] == "")
           delete a[1]; print(1 in a, a[1])
           delete a; print(2 in a)
           t[1] = 1; t[2] = 2; t[3] = 3; t[4] = 4
           print(t[4])"#,
    );
    assert_eq!(out, "11 6 -1 0 1 0 1 hello! 1\n0 0\n0\n4\n");
}

#[test]
fn array_overflow_is_an_error() {
    let e = env(
        "global t[2]\nprobe begin { t[1] = 1; t[2] = 2; print(\"ok\"); t[3] = 3; print(\"no\") }",
    );
    let mut ctx = e.ctx(std::ptr::null_mut());
    // SAFETY: live env.
    let code = unsafe { ptap_rt_core::script::run_handler(e.jit.handler(0).unwrap(), &mut ctx) };
    assert_eq!(code, ptap_rt_core::script::ctx::ERR_OVERFLOW);
    assert_eq!(
        e.output(),
        "ok\nERROR: Array overflow, check size limit (2) near `t[3] = 3` at t.pt:2:48 in probe begin\n"
    );
}

#[test]
fn foreach_sorted_limited_and_tuple_keys() {
    let out = begin_with_globals(
        "global a, b",
        r#"a[3] = 30; a[1] = 10; a[2] = 30; a[4] = 5
           foreach (k in a) n++
           print(n)
           foreach (k in a-) printf("%d ", k); print("")
           foreach (v = k in a+ limit 3) printf("%d=%d ", k, v); print("")
           foreach (k+ in a) { if (k == 2) continue; if (k == 4) break; printf("[%d]", k) }; print("")
           b["x", 2] = 1; b["a", 9] = 1; b["x", 1] = 3
           foreach ([s, i] in b-) printf("%s,%d ", s, i); print("")"#,
    );
    // Sorting by value breaks ties by the keys (deterministic).
    assert_eq!(out, "4\n2 3 1 4 \n4=5 1=10 2=30 \n[1][3]\nx,1 a,9 x,2 \n");
}

#[test]
fn array_aggregates_and_report() {
    let e = env("global lat, count\nprobe begin { for (i = 1; i <= 4; i++) { lat[i % 2] <<< i; count[\"k\" . sprint(i % 2)]++ }; print(@count(lat[0]), @sum(lat[1]), @max(lat[0]), @avg(lat[1])) }");
    assert_eq!(e.run(0).0, 0);
    assert_eq!(e.output(), "2 4 4 2\n");
    assert_eq!(
        ptap_compiler::codegen::host::unread_globals(&e.jit.compiled.meta, &e.globals),
        "count[\"k0\"]=2\ncount[\"k1\"]=2\n"
    );
}

#[test]
fn histograms_log_and_linear() {
    use ptap_compiler::output::{format_histogram, HistShape};
    let e = env(
        "global s\nprobe begin { for (i = -3; i < 10; i++) s <<< i; s <<< 1000; print(@hist_log(s)); print(@hist_linear(s, 0, 10, 2)); delete s; s <<< 4; print(@hist_log(s)) }",
    );
    assert_eq!(e.run(0).0, 0);
    // Log buckets: 64 +/- the number of significant bits.
    let mut log = vec![0i64; 128];
    for (b, n) in [
        (62, 2),
        (63, 1),
        (64, 1),
        (65, 1),
        (66, 2),
        (67, 4),
        (68, 2),
        (74, 1),
    ] {
        log[b] = n; // -3,-2 | -1 | 0 | 1 | 2,3 | 4..7 | 8,9 | 1000
    }
    // Linear 0..10 step 2: underflow, 0,2,4,6,8,10, overflow.
    let lin = vec![3, 2, 2, 2, 2, 2, 0, 1];
    let mut after = vec![0i64; 128];
    after[67] = 1;
    let want = format_histogram(HistShape::Log, &log)
        + &format_histogram(HistShape::Linear { lo: 0, step: 2 }, &lin)
        + &format_histogram(HistShape::Log, &after);
    assert_eq!(e.output(), want);
    assert!(want.contains("   -2 |@@ "), "{want}");
    assert!(want.contains(" >10 |"), "{want}");
}

#[test]
fn regular_expressions() {
    let out = begin(
        r#"foreach_word = "bash"
           print(foreach_word =~ "^ba(sh|r)$", "bar" =~ "^ba(sh|r)$", "bark" =~ "^ba(sh|r)$", "xyz" !~ "y", "xyz" !~ "q")
           print("/tmp/a.log" =~ "\\.log$", "/tmp/alog" =~ "a\\.log", "12:34" =~ "^[0-9]{2}:[0-9]{2}$", "" =~ "^$")"#,
    );
    assert_eq!(out, "1 1 0 0 1\n1 0 1 1\n");
}

#[test]
fn histograms_of_array_elements() {
    use ptap_compiler::output::{format_histogram, HistShape};
    let e = env(
        "global per\nprobe begin { for (i = 0; i < 6; i++) per[i % 2] <<< i; print(@hist_log(per[1])); print(@hist_linear(per[0], 0, 4, 2)); print(@hist_log(per[7])); delete per[1]; per[1] <<< 0; print(@hist_log(per[1])) }",
    );
    assert_eq!(e.run(0).0, 0);
    let mut odd = vec![0i64; 128];
    (odd[65], odd[66], odd[67]) = (1, 1, 1); // 1 | 3 | 5
    let even = vec![0, 1, 1, 1, 0]; // 0 | 2 | 4 (<0, 0, 2, 4, >4)
    let mut zero = vec![0i64; 128];
    zero[64] = 1;
    let want = format_histogram(HistShape::Log, &odd)
        + &format_histogram(HistShape::Linear { lo: 0, step: 2 }, &even)
        + &format_histogram(HistShape::Log, &[])
        + &format_histogram(HistShape::Log, &zero);
    assert_eq!(e.output(), want);
}
