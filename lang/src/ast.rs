//! The parse tree. Every node carries its [`Span`]. Expressions and statements
//! also carry their nesting depth, which the parser caps (see
//! [`MAX_DEPTH`]) so that no later recursive pass can overflow the stack.
//!
//! A node's `depth` packs two counts (see [`Depth`]): its real nesting level
//! (an operand inside an operator, a call argument, a statement inside a
//! block), capped at [`MAX_DEPTH`], and its height, capped at [`MAX_HEIGHT`].
//! One more link of a flat chain (the left operand of `a + b + c`, the
//! `else if` of an if-chain, the last arm of `a ? b : c ? d : e`) adds to
//! the height only, so long flat chains are not "nesting".
use crate::span::Span;

/// Deepest expression/statement nesting the parser accepts.
pub const MAX_DEPTH: u32 = 200;
/// Tallest tree the parser accepts (flat chains; every recursive pass must
/// fit this many frames of each kind in the main thread's stack).
pub const MAX_HEIGHT: u32 = 800;

/// The packed `depth` of a node: `(level << 16) | height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    pub level: u32,
    pub height: u32,
}

impl Depth {
    pub const LEAF: Depth = Depth {
        level: 1,
        height: 1,
    };
    pub fn unpack(d: u32) -> Depth {
        Depth {
            level: d >> 16,
            height: d & 0xffff,
        }
    }
    pub fn pack(self) -> u32 {
        (self.level.min(0xffff) << 16) | self.height.min(0xffff)
    }
    /// The depth of a node whose nested children and chain children have
    /// the given packed depths.
    fn of(nested: impl IntoIterator<Item = u32>, chain: impl IntoIterator<Item = u32>) -> Depth {
        let mut d = Depth::LEAF;
        for n in nested {
            let n = Depth::unpack(n);
            d.level = d.level.max(n.level + 1);
            d.height = d.height.max(n.height + 1);
        }
        for c in chain {
            let c = Depth::unpack(c);
            d.level = d.level.max(c.level);
            d.height = d.height.max(c.height + 1);
        }
        d
    }
}

/// One parsed file.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Global(GlobalDecl),
    Probe(ProbeDef),
    Function(FunctionDef),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Num(i64),
    Str(String),
}

/// `global name[CAP] = INIT`
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalDecl {
    pub name: Ident,
    pub capacity: Option<(u64, Span)>,
    pub init: Option<(Literal, Span)>,
    pub span: Span,
}

/// `probe POINT, POINT { body }` or `probe POINT < body >`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeDef {
    pub points: Vec<PointSpec>,
    pub body: Block,
    pub one_liner: bool,
    pub span: Span,
    /// `probe NAME = POINTS { prologue }` (`epilogue: false`) or
    /// `probe NAME += POINTS { epilogue }`: a probe alias, not a probe.
    pub alias: Option<AliasHead>,
}

/// The name part of a probe alias definition.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasHead {
    pub name: PointSpec,
    pub epilogue: bool,
}

/// A probe point as written: `kretprobe(T).maxactive(N)?`.
#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    pub components: Vec<PointComponent>,
    pub optional: bool,
    pub span: Span,
}

/// `name` or `name(ARG)`; the argument is kept as raw text and parsed by
/// [`crate::points`].
#[derive(Debug, Clone, PartialEq)]
pub struct PointComponent {
    pub name: Ident,
    pub arg: Option<(String, Span)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeName {
    Long,
    String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: Option<(TypeName, Span)>,
}

/// `function name[:type](params) { body }`
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionDef {
    pub name: Ident,
    pub ret: Option<(TypeName, Span)>,
    pub params: Vec<Param>,
    pub body: Block,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
    pub depth: u32,
}

/// A `+` (ascending) or `-` (descending) sort mark in `foreach`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortMark {
    Asc,
    Desc,
}

/// A foreach variable with its optional sort mark.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopVar {
    pub name: Ident,
    pub sort: Option<(SortMark, Span)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Foreach {
    /// `v = ...`: the value variable.
    pub value: Option<LoopVar>,
    pub keys: Vec<LoopVar>,
    /// Keys written as `[k1, k2]`.
    pub bracketed: bool,
    pub array: Ident,
    /// `in arr-`: sort by value.
    pub array_sort: Option<(SortMark, Span)>,
    /// `in arr[*, k]`: only the entries whose keys match (`*`: any).
    pub slice: Option<Vec<Expr>>,
    /// `in arr @sum-`: the aggregate a statistics array is sorted by.
    pub array_agg: Option<Ident>,
    pub limit: Option<Expr>,
    pub body: Box<Stmt>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StmtKind {
    Expr(Expr),
    Block(Block),
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
    Foreach(Foreach),
    Break,
    Continue,
    Next,
    Return(Option<Expr>),
    Delete(Expr),
    Try {
        body: Block,
        var: Option<Ident>,
        catch: Block,
    },
    /// `target <<< value`
    Aggregate {
        target: Expr,
        value: Expr,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Plus,
    Not,
    BitNot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Shl,
    Shr,
    BitAnd,
    BitOr,
    BitXor,
    And,
    Or,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Ne,
    Concat,
    Match,
    NotMatch,
}

impl BinOp {
    pub fn text(self) -> &'static str {
        use BinOp::*;
        match self {
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Mod => "%",
            Shl => "<<",
            Shr => ">>",
            BitAnd => "&",
            BitOr => "|",
            BitXor => "^",
            And => "&&",
            Or => "||",
            Lt => "<",
            Gt => ">",
            Le => "<=",
            Ge => ">=",
            Eq => "==",
            Ne => "!=",
            Concat => ".",
            Match => "=~",
            NotMatch => "!~",
        }
    }
}

impl UnOp {
    pub fn text(self) -> &'static str {
        match self {
            UnOp::Neg => "-",
            UnOp::Plus => "+",
            UnOp::Not => "!",
            UnOp::BitNot => "~",
        }
    }
}

/// `=` or a compound assignment (`+=` is `Some(BinOp::Add)`, `.=` is `Some(Concat)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignOp(pub Option<BinOp>);

impl AssignOp {
    pub fn text(self) -> String {
        match self.0 {
            None => "=".to_string(),
            Some(op) => format!("{}=", op.text()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncDec {
    Inc,
    Dec,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
    pub depth: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Num(i64),
    /// `*` as an array key: any key (`delete a[*, k]`, `foreach (... in a[*, k])`).
    Wildcard,
    Str(String),
    /// A plain name: local, global, or a context value (`ret`, `arg1`).
    Name(Ident),
    /// `arr[k1, k2]`
    Index {
        array: Ident,
        keys: Vec<Expr>,
    },
    Call {
        name: Ident,
        args: Vec<Expr>,
    },
    /// `@name(args)`: `@entry`, `@count`, `@hist_log`, ...
    AtCall {
        name: Ident,
        args: Vec<Expr>,
    },
    /// `$name`
    TargetVar(Ident),
    /// `$N` (`as_string == false`) or `@N`.
    ScriptArg {
        n: u32,
        as_string: bool,
    },
    Unary {
        op: UnOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Ternary {
        cond: Box<Expr>,
        then: Box<Expr>,
        els: Box<Expr>,
    },
    Assign {
        op: AssignOp,
        target: Box<Expr>,
        value: Box<Expr>,
    },
    IncDec {
        op: IncDec,
        prefix: bool,
        target: Box<Expr>,
    },
    /// `k in arr`, `[k1, k2] in arr`
    In {
        keys: Vec<Expr>,
        array: Ident,
    },
}

impl ExprKind {
    /// This node's depth (see [`Depth`]).
    pub fn depth(&self) -> Depth {
        let list = |v: &[Expr]| v.iter().map(|e| e.depth).collect::<Vec<_>>();
        let (nested, chain): (Vec<u32>, Vec<u32>) = match self {
            ExprKind::Num(_)
            | ExprKind::Wildcard
            | ExprKind::Str(_)
            | ExprKind::Name(_)
            | ExprKind::TargetVar(_)
            | ExprKind::ScriptArg { .. } => (vec![], vec![]),
            ExprKind::Index { keys, .. } | ExprKind::In { keys, .. } => (list(keys), vec![]),
            ExprKind::Call { args, .. } | ExprKind::AtCall { args, .. } => (list(args), vec![]),
            ExprKind::Unary { operand, .. } => (vec![operand.depth], vec![]),
            ExprKind::Binary { lhs, rhs, .. } => (vec![rhs.depth], vec![lhs.depth]),
            ExprKind::Ternary { cond, then, els } => {
                (vec![cond.depth, then.depth], vec![els.depth])
            }
            ExprKind::Assign { target, value, .. } => (vec![target.depth, value.depth], vec![]),
            ExprKind::IncDec { target, .. } => (vec![target.depth], vec![]),
        };
        Depth::of(nested, chain)
    }
}

impl StmtKind {
    /// This node's depth (statements and expressions, see [`Depth`]).
    pub fn depth(&self) -> Depth {
        let e = |e: &Option<Expr>| e.as_ref().map(|e| e.depth);
        let block = |b: &Block| b.stmts.iter().map(|s| s.depth).collect::<Vec<_>>();
        let (nested, chain): (Vec<u32>, Vec<u32>) = match self {
            StmtKind::Expr(x) | StmtKind::Delete(x) => (vec![x.depth], vec![]),
            StmtKind::Block(b) => (block(b), vec![]),
            StmtKind::If { cond, then, els } => match els {
                Some(s) if matches!(s.kind, StmtKind::If { .. }) => {
                    (vec![cond.depth, then.depth], vec![s.depth])
                }
                _ => (
                    [
                        Some(cond.depth),
                        Some(then.depth),
                        els.as_ref().map(|s| s.depth),
                    ]
                    .into_iter()
                    .flatten()
                    .collect(),
                    vec![],
                ),
            },
            StmtKind::While { cond, body } => (vec![cond.depth, body.depth], vec![]),
            StmtKind::For {
                init,
                cond,
                step,
                body,
            } => (
                [e(init), e(cond), e(step), Some(body.depth)]
                    .into_iter()
                    .flatten()
                    .collect(),
                vec![],
            ),
            StmtKind::Foreach(f) => (
                [e(&f.limit), Some(f.body.depth)]
                    .into_iter()
                    .flatten()
                    .collect(),
                vec![],
            ),
            StmtKind::Break | StmtKind::Continue | StmtKind::Next => (vec![], vec![]),
            StmtKind::Return(x) => (e(x).into_iter().collect(), vec![]),
            StmtKind::Try { body, catch, .. } => {
                let mut v = block(body);
                v.extend(block(catch));
                (v, vec![])
            }
            StmtKind::Aggregate { target, value } => (vec![target.depth, value.depth], vec![]),
        };
        Depth::of(nested, chain)
    }
}
