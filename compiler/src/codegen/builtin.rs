//! Builtin functions: context values, target memory, strings, guru-mode
//! writes — mostly one helper call each (`ptap_rt_core::script::helper_table`).

use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_module::Module;
use ptap_arch::regs::offset as regoff;
use ptap_lang::builtins::Builtin;
use ptap_lang::checked::{Expr, ExprKind};
use ptap_lang::Span;
use ptap_rt_core::script::helper_table::Helper;

use super::expr::unsupported;
use super::format::value_format;
use super::func::{flags, FunctionTranslator, R};

impl<M: Module> FunctionTranslator<'_, '_, '_, M> {
    pub(crate) fn translate_builtin(
        &mut self,
        func: Builtin,
        args: &[Expr],
        span: Span,
    ) -> R<Value> {
        use Builtin as B;
        let c = self.ctx;
        match func {
            B::Pid => Ok(self.call_long(Helper::Pid, &[c])),
            B::Tid => Ok(self.call_long(Helper::Tid, &[c])),
            B::Ppid => Ok(self.call_long(Helper::Ppid, &[c])),
            B::Uid => Ok(self.call_long(Helper::Uid, &[c])),
            B::Cpu => Ok(self.call_long(Helper::Cpu, &[c])),
            B::Target => Ok(self.call_long(Helper::Target, &[c])),
            B::Nsecs => Ok(self.call_long(Helper::Nsecs, &[c])),
            B::GettimeofdayUs => Ok(self.call_long(Helper::GettimeofdayUs, &[c])),
            B::Execname => Ok(self.string_helper(Helper::Execname, &[])),
            B::Pp => Ok(self.string_helper(Helper::Pp, &[])),
            B::Probefunc => Ok(self.string_helper(Helper::Probefunc, &[])),
            B::SyscallName => Ok(self.string_helper(Helper::SyscallName, &[])),
            B::Usymname => {
                let a = self.translate_expr(&args[0])?;
                let (dst, cap) = (self.str_buf(), self.cap());
                self.call_helper(Helper::Usymname, &[c, a, dst, cap]);
                Ok(dst)
            }
            B::Register => self.translate_register(args, span),
            B::UserLong => self.translate_user_read(args, 8, span),
            B::UserInt => self.translate_user_read(args, 4, span),
            B::UserChar => self.translate_user_read(args, 1, span),
            B::UserString => self.translate_user_string(args, None, span),
            B::UserStringN => self.translate_user_string(args, Some(&args[1]), span),
            B::Exit => {
                self.call_helper(Helper::Exit, &[c]);
                Ok(self.iconst(0))
            }
            B::Abort => {
                self.call_helper(Helper::Abort, &[c]);
                Ok(self.iconst(0))
            }
            B::GetCycles => Ok(self.call_long(Helper::Cycles, &[c])),
            B::CmdlineStr | B::CmdlineArg | B::Pexecname => {
                let (which, n) = match func {
                    B::CmdlineStr => (self.iconst(0), self.iconst(0)),
                    B::CmdlineArg => {
                        let n = self.translate_expr(&args[0])?;
                        (self.iconst(1), n)
                    }
                    _ => (self.iconst(2), self.iconst(0)),
                };
                let (dst, cap) = (self.str_buf(), self.cap());
                self.call_helper(Helper::ProcText, &[c, which, n, dst, cap]);
                self.check_helper(span);
                Ok(dst)
            }
            B::Gid | B::Euid | B::Egid => {
                let which = self.iconst(match func {
                    B::Gid => 0,
                    B::Euid => 1,
                    _ => 2,
                });
                let v = self.call_long(Helper::Ids, &[c, which]);
                self.check_helper(span);
                Ok(v)
            }
            B::Error => {
                let m = self.translate_expr(&args[0])?;
                self.call_helper(Helper::Error, &[c, m]);
                self.check_helper(span);
                Ok(self.iconst(0))
            }
            B::Warn => {
                let m = self.translate_expr(&args[0])?;
                self.call_helper(Helper::Warn, &[c, m]);
                Ok(self.iconst(0))
            }
            B::Strlen => {
                let v = self.translate_args(args)?;
                Ok(self.call_long(Helper::StrLen, &v))
            }
            B::Isinstr => {
                let v = self.translate_args(args)?;
                Ok(self.call_long(Helper::Isinstr, &v))
            }
            B::Strtol => {
                let v = self.translate_args(args)?;
                Ok(self.call_long(Helper::Strtol, &[c, v[0], v[1]]))
            }
            B::Substr => {
                let v = self.translate_args(args)?;
                let (dst, cap) = (self.str_buf(), self.cap());
                self.call_helper(Helper::Substr, &[dst, v[0], v[1], v[2], cap]);
                Ok(dst)
            }
            B::Matched => {
                let n = self.translate_expr(&args[0])?;
                let (dst, cap) = (self.str_buf(), self.cap());
                self.call_helper(Helper::Matched, &[c, dst, n, cap]);
                self.check_helper(span);
                Ok(dst)
            }
            B::Print => self.translate_print(args, span),
            B::Sprint => {
                let f = value_format(args, "")?;
                self.translate_sprintf(&f, args, span)
            }
            B::SetRegister => self.translate_set_register(args, span),
            B::SetUserLong => self.translate_user_write(args, 8, span),
            B::SetUserInt => self.translate_user_write(args, 4, span),
            B::SetUserChar => self.translate_user_write(args, 1, span),
            B::PrintUbacktrace => {
                self.call_helper(Helper::PrintUbacktrace, &[c]);
                Ok(self.iconst(0))
            }
            B::Ubacktrace => Ok(self.string_helper(Helper::Ubacktrace, &[])),
            B::SprintUbacktrace => Ok(self.string_helper(Helper::SprintUbacktrace, &[])),
            B::Ucallers => {
                let n = self.translate_expr(&args[0])?;
                let (dst, cap) = (self.str_buf(), self.cap());
                self.call_helper(Helper::Ucallers, &[c, n, dst, cap]);
                Ok(dst)
            }
            B::SprintUstack => {
                let s = self.translate_expr(&args[0])?;
                let (dst, cap) = (self.str_buf(), self.cap());
                self.call_helper(Helper::SprintUstack, &[c, s, dst, cap]);
                Ok(dst)
            }
            B::PrintUstack => {
                let s = self.translate_expr(&args[0])?;
                self.call_helper(Helper::PrintUstack, &[c, s]);
                Ok(self.iconst(0))
            }
            B::Cast => self.translate_cast(args, span),
            B::TargetIndex => self.translate_target_index(args, span),
            B::TzGmtoff => Ok(self.iconst(-i64::from(local_zone().0))),
            B::TzName => self.translate_string(&local_zone().1),
            B::Defined => {
                let d = args.first().is_some_and(|a| self.defined(a));
                Ok(self.iconst(i64::from(d)))
            }
        }
    }

    /// A helper `(ctx, dst, cap)` that fills a fresh string buffer.
    pub(crate) fn string_helper(&mut self, h: Helper, _: &[Value]) -> Value {
        let (c, dst, cap) = (self.ctx, self.str_buf(), self.cap());
        self.call_helper(h, &[c, dst, cap]);
        dst
    }

    /// `register("rax")`.
    pub(crate) fn translate_register(&mut self, args: &[Expr], span: Span) -> R<Value> {
        let off = register_offset(&args[0], span)?;
        Ok(self.reg(off))
    }

    /// `set_register("rax", v)` (guru mode): the handler's register frame is
    /// what the target resumes with.
    pub(crate) fn translate_set_register(&mut self, args: &[Expr], span: Span) -> R<Value> {
        let off = register_offset(&args[0], span)?;
        let v = self.translate_expr(&args[1])?;
        let r = self.regs();
        self.b.ins().store(flags(), v, r, off as i32);
        Ok(self.iconst(0))
    }

    /// `set_user_long/int/char(addr, v)` (guru mode): a fault-safe write.
    pub(crate) fn translate_user_write(
        &mut self,
        args: &[Expr],
        size: i64,
        span: Span,
    ) -> R<Value> {
        let a = self.translate_expr(&args[0])?;
        let v = self.translate_expr(&args[1])?;
        let (c, s) = (self.ctx, self.iconst(size));
        self.call_helper(Helper::UserWrite, &[c, a, s, v]);
        self.check_helper(span);
        Ok(self.iconst(0))
    }

    pub(crate) fn translate_user_read(&mut self, args: &[Expr], size: i64, span: Span) -> R<Value> {
        let a = self.translate_expr(&args[0])?;
        let (c, s) = (self.ctx, self.iconst(size));
        let v = self.call_long(Helper::UserRead, &[c, a, s]);
        self.check_helper(span);
        Ok(v)
    }

    pub(crate) fn translate_user_string(
        &mut self,
        args: &[Expr],
        n: Option<&Expr>,
        span: Span,
    ) -> R<Value> {
        let a = self.translate_expr(&args[0])?;
        let max = match n {
            Some(e) => self.translate_expr(e)?,
            None => self.iconst(self.shared.cap - 1),
        };
        let (c, dst, cap) = (self.ctx, self.str_buf(), self.cap());
        self.call_helper(Helper::UserString, &[c, dst, a, max, cap]);
        self.check_helper(span);
        Ok(dst)
    }
}

/// The `PtRegs` offset a register name (a string literal) designates.
fn register_offset(name: &Expr, span: Span) -> R<usize> {
    let ExprKind::Str(name) = &name.kind else {
        return unsupported("a register name that is not a string literal", span);
    };
    Ok(match name.as_str() {
        "rax" | "ax" => regoff::AX,
        "rbx" | "bx" => regoff::BX,
        "rcx" | "cx" => regoff::CX,
        "rdx" | "dx" => regoff::DX,
        "rsi" | "si" => regoff::SI,
        "rdi" | "di" => regoff::DI,
        "rbp" | "bp" => regoff::BP,
        "rsp" | "sp" => regoff::SP,
        "r8" => regoff::R8,
        "r9" => regoff::R9,
        "r10" => regoff::R10,
        "r11" => regoff::R11,
        "r12" => regoff::R12,
        "r13" => regoff::R13,
        "r14" => regoff::R14,
        "r15" => regoff::R15,
        "rip" | "ip" => regoff::IP,
        "eflags" | "flags" => regoff::FLAGS,
        "orig_ax" | "orig_rax" => regoff::ORIG_AX,
        "cs" => regoff::CS,
        "ss" => regoff::SS,
        _ => return unsupported(&format!("register `{name}`"), span),
    })
}

/// The local time zone now: (offset east of UTC in seconds, abbreviation),
/// (0, "UTC") when it cannot be read; `TZ` chooses it as it does for libc. SystemTap's staprun passes the same
/// two values once, when the script starts; ptap reads them when it
/// compiles the script.
fn local_zone() -> (i32, String) {
    let zone = match std::env::var("TZ") {
        Ok(s) if !s.is_empty() => tz::TimeZone::from_posix_tz(&s),
        _ => tz::TimeZone::local(),
    };
    zone.ok()
        .and_then(|z| {
            let t = z.find_current_local_time_type().ok()?;
            Some((t.ut_offset(), t.time_zone_designation().to_string()))
        })
        .unwrap_or((0, "UTC".to_string()))
}
