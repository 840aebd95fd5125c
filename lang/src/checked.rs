//! The checked script: what the compiler lowers. Every expression has its
//! type, every variable is resolved to a local or global index, builtins are
//! an enum, printf formats are parsed, probe points are resolved.
use crate::ast::{AssignOp, BinOp, IncDec, UnOp};
use crate::builtins::Builtin;
use crate::options::Limits;
use crate::printf::Format;
use crate::sources::Sources;
use crate::span::Span;

pub type GlobalId = usize;
pub type LocalId = usize;
pub type FuncId = usize;

/// The type of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    Long,
    String,
    /// A statistics aggregate (only through `<<<` and `@count` ...).
    Stats,
    /// The result of a function or builtin without a value.
    Void,
    /// `@hist_log(s)` / `@hist_linear(..)`: printable only.
    Hist,
}

impl Type {
    pub fn name(self) -> &'static str {
        match self {
            Type::Long => "long",
            Type::String => "string",
            Type::Stats => "statistics",
            Type::Void => "void",
            Type::Hist => "histogram",
        }
    }
}

/// Locals, keys and parameters are long or string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarType {
    Long,
    String,
}

impl ScalarType {
    pub fn name(self) -> &'static str {
        match self {
            ScalarType::Long => "long",
            ScalarType::String => "string",
        }
    }
}

/// What a global scalar or array element holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    Long,
    String,
    Stats,
}

impl ValueType {
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Long => "long",
            ValueType::String => "string",
            ValueType::Stats => "statistics",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Const {
    Long(i64),
    Str(String),
}

#[derive(Debug, Clone)]
pub struct CheckedScript {
    pub sources: Sources,
    pub globals: Vec<Global>,
    /// Script functions and the stdlib functions they (transitively) use.
    pub functions: Vec<Function>,
    pub probes: Vec<Probe>,
    pub limits: Limits,
    pub guru: bool,
    /// Warnings of pass 2 (rendered against `sources`), e.g. SystemTap's
    /// "never-assigned local variable".
    pub warnings: Vec<crate::diag::Diagnostic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalShape {
    Scalar(ValueType),
    Array {
        keys: Vec<ScalarType>,
        value: ValueType,
    },
}

#[derive(Debug, Clone)]
pub struct Global {
    pub name: String,
    pub span: Span,
    pub shape: GlobalShape,
    pub init: Option<Const>,
    /// Declared capacity (`global a[4096]`); arrays default to MAXMAPENTRIES.
    pub capacity: Option<u64>,
    /// Read somewhere (a read is anything but `x++`, `x += v`, `s <<< v`, `x = v`).
    pub read: bool,
    pub written: bool,
}

#[derive(Debug, Clone)]
pub struct Local {
    pub name: String,
    pub ty: ScalarType,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    /// The first `params` locals are the parameters, in order.
    pub params: usize,
    pub locals: Vec<Local>,
    pub ret: Type,
    pub body: Vec<Stmt>,
    pub span: Span,
    pub from_stdlib: bool,
    /// Called (transitively) from a probe. An unused function is still
    /// checked, but types nobody determines default to long (SystemTap
    /// elides such functions).
    pub used: bool,
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub points: Vec<ProbePoint>,
    pub locals: Vec<Local>,
    pub body: Vec<Stmt>,
    /// Expressions to evaluate at function entry for `@entry(e)` (kretprobe):
    /// `ExprKind::Entry(i)` reads `entry_exprs[i]`'s saved value.
    pub entry_exprs: Vec<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePoint {
    /// Canonical spelling, e.g. `kretprobe(sys_open).maxactive(20)?`.
    pub text: String,
    pub kind: PointKind,
    pub optional: bool,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerUnit {
    S,
    Ms,
    Us,
    Ns,
    /// N times a second.
    Hz,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointKind {
    Begin,
    End,
    Timer {
        unit: TimerUnit,
        n: u64,
    },
    Kprobe {
        target: Target,
    },
    Jprobe {
        target: Target,
    },
    Kretprobe {
        target: Target,
        maxactive: Option<u64>,
    },
    /// `process.begin`, `process("PATH").begin`: once in each process of
    /// the session (whose program is PATH), when the runtime has armed the
    /// probes there.
    ProcessBegin {
        module: Option<Module>,
    },
    /// `process.end`, `process("PATH").end`: when such a process exits
    /// (`exit()` or a return from `main`).
    ProcessEnd {
        module: Option<Module>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Module {
    /// `libc`, `libc.so.6`, ...
    Name(String),
    /// A quoted path.
    Path(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `sym`, `sym+off`, `lib:sym`, `lib:sym+off`.
    Symbol {
        module: Option<Module>,
        name: String,
        offset: u64,
    },
    /// `lib:str*`, `mall?c`: every matching function.
    Pattern {
        module: Option<Module>,
        pattern: String,
    },
    /// `0xADDR`: a link-time address of the main executable.
    Address(u64),
    /// `file.c:42`, `func@file.c:42`, `func@file.c`: source lines of the
    /// main executable, found in its DWARF line table by the compiler
    /// (every address where code of the line starts, inlined copies too).
    Line {
        module: Option<Module>,
        func: Option<String>,
        file: String,
        line: Option<u32>,
    },
    /// `sys_NAME`: system call(s) (name, x86-64 number).
    Syscall {
        name: String,
        calls: Vec<(String, u32)>,
    },
}

/// Which argument convention `arg1..6` use in a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgAbi {
    /// rdi rsi rdx rcx r8 r9
    SysV,
    /// rdi rsi rdx r10 r8 r9
    Syscall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextValue {
    /// The return value (kretprobe).
    Ret,
    /// `argN`, N in 1..=6.
    Arg(u8),
}

#[derive(Debug, Clone)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// Key number (0-based).
    Key(usize),
    Value,
    /// An aggregate of a statistics array's values (`in a @sum-`).
    Agg(StatOp),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub by: SortBy,
    pub descending: bool,
}

#[derive(Debug, Clone)]
pub struct Foreach {
    pub array: GlobalId,
    pub keys: Vec<LocalId>,
    pub value: Option<LocalId>,
    pub sort: Option<Sort>,
    pub limit: Option<Expr>,
    /// `in a[*, k]`: per key, the value it must equal (`None`: any); empty
    /// when the whole array is walked.
    pub slice: Vec<Option<Expr>>,
    /// The loop of `delete a[*, k]` (it deletes what it visits).
    pub deletes: bool,
    pub body: Stmt,
}

/// Where `<<<` adds a value / what `@count` etc. read.
#[derive(Debug, Clone)]
pub enum AggTarget {
    Global(GlobalId),
    Element { global: GlobalId, keys: Vec<Expr> },
}

#[derive(Debug, Clone)]
pub enum DeleteTarget {
    /// A whole array, or a scalar global reset to 0/"".
    Global(GlobalId),
    Element {
        global: GlobalId,
        keys: Vec<Expr>,
    },
    /// A local reset to 0/"".
    Local(LocalId),
}

#[derive(Debug, Clone)]
pub enum StmtKind {
    Expr(Expr),
    Block(Vec<Stmt>),
    If {
        cond: Expr,
        then: Box<Stmt>,
        els: Option<Box<Stmt>>,
    },
    While {
        cond: Expr,
        body: Box<Stmt>,
    },
    For {
        init: Option<Expr>,
        cond: Option<Expr>,
        step: Option<Expr>,
        body: Box<Stmt>,
    },
    Foreach(Box<Foreach>),
    Break,
    Continue,
    Next,
    Return(Option<Expr>),
    Delete(DeleteTarget),
    Try {
        body: Vec<Stmt>,
        var: Option<LocalId>,
        catch: Vec<Stmt>,
    },
    Aggregate {
        target: AggTarget,
        value: Expr,
    },
}

/// Something assignable.
#[derive(Debug, Clone)]
pub enum LValue {
    Local(LocalId),
    Global(GlobalId),
    Element {
        global: GlobalId,
        keys: Vec<Expr>,
    },
    /// `$name = v` (guru mode).
    TargetVar(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatOp {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    /// `@variance(s)`: the sample variance, rounded toward zero.
    Variance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistKind {
    Log,
    Linear {
        lo: i64,
        hi: i64,
        step: i64,
    },
    /// Not a histogram: the storage `@variance` needs after a statistics
    /// value (the 128-bit sum of the squares, two words). The checker never
    /// puts it in an [`ExprKind::Hist`]; the compiler lays it out with the
    /// histograms so arrays, `delete` and `<<<` handle it the same way.
    SumSquares,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatFn {
    /// Prints.
    Printf,
    /// Returns the string.
    Sprintf,
}

#[derive(Debug, Clone)]
pub struct Expr {
    pub kind: ExprKind,
    pub ty: Type,
    pub span: Span,
    /// Inference slot while checking (resolved into `ty` at the end).
    pub(crate) slot: Option<u32>,
}

#[derive(Debug, Clone)]
pub enum ExprKind {
    Long(i64),
    Str(String),
    Local(LocalId),
    Global(GlobalId),
    Element {
        global: GlobalId,
        keys: Vec<Expr>,
    },
    Context(ContextValue),
    /// `$name` (DWARF; value is long).
    TargetVar(String),
    /// `@entry(e)`: the value saved at entry, index into `Probe::entry_exprs`.
    Entry(usize),
    Unary {
        op: UnOp,
        operand: Box<Expr>,
    },
    /// Operand types are `lhs.ty`/`rhs.ty` (comparisons work on long or string).
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `s =~ "re"` (`negate` for `!~`); the pattern is a literal.
    Regex {
        negate: bool,
        subject: Box<Expr>,
        pattern: String,
    },
    Ternary {
        cond: Box<Expr>,
        then: Box<Expr>,
        els: Box<Expr>,
    },
    Assign {
        target: LValue,
        op: AssignOp,
        value: Box<Expr>,
    },
    IncDec {
        target: LValue,
        op: IncDec,
        prefix: bool,
    },
    In {
        global: GlobalId,
        keys: Vec<Expr>,
    },
    Call {
        func: FuncId,
        args: Vec<Expr>,
    },
    Builtin {
        func: Builtin,
        args: Vec<Expr>,
    },
    Format {
        func: FormatFn,
        format: Format,
        args: Vec<Expr>,
    },
    Stat {
        op: StatOp,
        target: AggTarget,
    },
    Hist {
        kind: HistKind,
        target: AggTarget,
    },
}

/// Is the target variable `$name` (without its `$`) a string? `$s$`,
/// `$p->a$$` and `$$parms` (`name` `$parms`) are pretty-printed values.
pub fn target_var_is_string(name: &str) -> bool {
    name.starts_with('$') || name.ends_with('$')
}
