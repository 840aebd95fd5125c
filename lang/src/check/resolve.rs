//! Name resolution: globals, locals, functions (script, builtin, stdlib).
use super::infer::Ty;
use super::{CheckError, Checker, FuncInfo, GlobalInfo, LocalInfo, Scope, Shape};
use crate::ast::{self, Literal, StmtKind, TypeName};
use crate::checked::{Const, Type};
use crate::diag::ToDiagnostic;
use crate::span::Span;
use crate::{builtins, stdlib};

/// Names a script cannot declare: probe context values.
pub fn is_reserved(name: &str) -> bool {
    matches!(
        name,
        "ret" | "arg1" | "arg2" | "arg3" | "arg4" | "arg5" | "arg6"
    )
}

fn type_of(t: TypeName) -> Type {
    match t {
        TypeName::Long => Type::Long,
        TypeName::String => Type::String,
    }
}

impl Checker<'_> {
    pub(super) fn declare_global(&mut self, g: ast::GlobalDecl) {
        let name = g.name.name.clone();
        if is_reserved(&name) {
            self.err(CheckError::Reserved {
                span: g.name.span,
                name,
            });
            return;
        }
        if let Some(&first) = self.global_names.get(&name) {
            let first = self.globals[first].span;
            self.err(CheckError::Duplicate {
                span: g.name.span,
                what: "global",
                name,
                first,
            });
            return;
        }
        let value = self.infer.slot(format!("global `{name}`"));
        let mut info = GlobalInfo {
            name: name.clone(),
            span: g.name.span,
            shape: None,
            value,
            keys: Vec::new(),
            init: None,
            capacity: None,
            read: false,
            written: false,
        };
        if let Some((cap, span)) = g.capacity {
            if cap == 0 {
                self.err(CheckError::BadCapacity { span });
            }
            info.shape = Some((Shape::Array(None), span));
            info.capacity = Some(cap);
        }
        if let Some((lit, span)) = g.init {
            if let Some((Shape::Array(_), origin)) = info.shape {
                self.err(CheckError::ShapeConflict {
                    span,
                    name: name.clone(),
                    used: "a scalar (initializer)",
                    earlier: "an array (capacity)",
                    origin,
                });
            }
            let (c, t) = match lit {
                Literal::Num(n) => (Const::Long(n), Type::Long),
                Literal::Str(s) => (Const::Str(s), Type::String),
            };
            let r = self.infer.unify(Ty::V(value), Ty::K(t), span);
            self.report(r);
            info.init = Some(c);
            info.shape = Some((Shape::Scalar, span));
        }
        self.global_names.insert(name, self.globals.len());
        self.globals.push(info);
    }

    pub(super) fn declare_function(&mut self, f: ast::FunctionDef, from_stdlib: bool) {
        let name = f.name.name.clone();
        if builtins::lookup(&name).is_some() || builtins::FORMAT_FUNCTIONS.contains(&name.as_str())
        {
            self.err(CheckError::Reserved {
                span: f.name.span,
                name,
            });
            return;
        }
        if let Some(&first) = self.func_names.get(&name) {
            let first = self.funcs[first].def.name.span;
            self.err(CheckError::Duplicate {
                span: f.name.span,
                what: "function",
                name,
                first,
            });
            return;
        }
        let mut params = Vec::new();
        for p in &f.params {
            if is_reserved(&p.name.name) {
                self.err(CheckError::Reserved {
                    span: p.name.span,
                    name: p.name.name.clone(),
                });
            }
            let slot = self
                .infer
                .slot(format!("parameter `{}` of `{name}`", p.name.name));
            if let Some((t, span)) = p.ty {
                let r = self.infer.unify(Ty::V(slot), Ty::K(type_of(t)), span);
                self.report(r);
            }
            params.push(slot);
        }
        let ret = if f.ret.is_some() || has_value_return(&f.body.stmts) {
            let slot = self.infer.slot(format!("the return value of `{name}`"));
            if let Some((t, span)) = f.ret {
                let r = self.infer.unify(Ty::V(slot), Ty::K(type_of(t)), span);
                self.report(r);
            }
            Some(slot)
        } else {
            None
        };
        self.func_names.insert(name, self.funcs.len());
        self.funcs.push(FuncInfo {
            def: f,
            params,
            ret,
            from_stdlib,
            needs: Vec::new(),
            calls: Vec::new(),
            checked: None,
            local_slots: Vec::new(),
        });
    }

    /// A script or stdlib function by name (loading stdlib code on demand).
    pub(super) fn function(&mut self, name: &str) -> Option<usize> {
        if let Some(&id) = self.func_names.get(name) {
            return Some(id);
        }
        let file = stdlib::file_defining(name)?;
        if !self.stdlib_asts.contains_key(&file) {
            let (fname, text) = stdlib::FILES[file];
            let fid = self.sources.add(fname, text);
            match crate::parser::parse_file(text, fid) {
                Ok(script) => {
                    let mut kept = Vec::new();
                    for item in script.items {
                        match item {
                            ast::Item::Global(g) => self.declare_global(g),
                            other => kept.push(other),
                        }
                    }
                    self.stdlib_asts.insert(file, ast::Script { items: kept });
                }
                Err(errs) => {
                    for e in errs {
                        self.errors.push(e.to_diagnostic());
                    }
                    self.stdlib_asts.insert(file, ast::Script { items: vec![] });
                    return None;
                }
            }
        }
        let def = self
            .stdlib_asts
            .get(&file)?
            .items
            .iter()
            .find_map(|i| match i {
                ast::Item::Function(f) if f.name.name == name => Some(f.clone()),
                _ => None,
            })?;
        self.declare_function(def, true);
        self.func_names.get(name).copied()
    }

    /// Every callable name, for "did you mean".
    pub(super) fn callable_names(&self) -> Vec<String> {
        let mut names: Vec<String> = builtins::BUILTINS
            .iter()
            .map(|b| b.name.to_string())
            .collect();
        names.extend(builtins::FORMAT_FUNCTIONS.iter().map(|s| s.to_string()));
        names.extend(self.func_names.keys().cloned());
        names.extend(stdlib::function_names());
        names
    }

    pub(super) fn global(&self, name: &str) -> Option<usize> {
        self.global_names.get(name).copied()
    }

    /// The local `name`, created on first mention.
    pub(super) fn local(&mut self, scope: &mut Scope, name: &str, span: Span) -> usize {
        if let Some(&id) = scope.names.get(name) {
            return id;
        }
        let slot = self.infer.slot(format!("local `{name}`"));
        let id = scope.locals.len();
        scope.locals.push(LocalInfo {
            name: name.to_string(),
            slot,
            span,
        });
        scope.names.insert(name.to_string(), id);
        id
    }

    /// Sets or checks a global's shape.
    pub(super) fn use_shape(&mut self, g: usize, want: Shape, span: Span) -> bool {
        let name = self.globals[g].name.clone();
        let desc = |s: Shape| match s {
            Shape::Scalar => "a scalar",
            Shape::Array(_) => "an array",
        };
        match self.globals[g].shape {
            None => {
                self.globals[g].shape = Some((want, span));
                if let Shape::Array(Some(n)) = want {
                    self.make_keys(g, n);
                }
                true
            }
            Some((Shape::Array(None), origin)) => match want {
                Shape::Array(Some(n)) => {
                    self.globals[g].shape = Some((want, span));
                    self.make_keys(g, n);
                    true
                }
                Shape::Array(None) => true,
                Shape::Scalar => {
                    self.err(CheckError::ShapeConflict {
                        span,
                        name,
                        used: "a scalar",
                        earlier: "an array",
                        origin,
                    });
                    false
                }
            },
            Some((have, origin)) => match (have, want) {
                (Shape::Scalar, Shape::Scalar) => true,
                (Shape::Array(Some(_)), Shape::Array(None)) => true,
                (Shape::Array(Some(a)), Shape::Array(Some(b))) if a == b => true,
                (Shape::Array(Some(a)), Shape::Array(Some(b))) => {
                    self.err(CheckError::ArityMismatch {
                        span,
                        name,
                        expected: a,
                        found: b,
                        origin,
                    });
                    false
                }
                _ => {
                    self.err(CheckError::ShapeConflict {
                        span,
                        name,
                        used: desc(want),
                        earlier: desc(have),
                        origin,
                    });
                    false
                }
            },
        }
    }

    fn make_keys(&mut self, g: usize, n: usize) {
        let name = self.globals[g].name.clone();
        self.globals[g].keys = (0..n)
            .map(|i| self.infer.slot(format!("key {} of `{name}`", i + 1)))
            .collect();
    }
}

/// Whether a body has `return EXPR` somewhere.
pub fn has_value_return(stmts: &[ast::Stmt]) -> bool {
    stmts.iter().any(stmt_returns_value)
}

fn stmt_returns_value(s: &ast::Stmt) -> bool {
    match &s.kind {
        StmtKind::Return(Some(_)) => true,
        StmtKind::Block(b) => has_value_return(&b.stmts),
        StmtKind::If { then, els, .. } => {
            stmt_returns_value(then) || els.as_deref().is_some_and(stmt_returns_value)
        }
        StmtKind::While { body, .. } | StmtKind::For { body, .. } => stmt_returns_value(body),
        StmtKind::Foreach(f) => stmt_returns_value(&f.body),
        StmtKind::Try { body, catch, .. } => {
            has_value_return(&body.stmts) || has_value_return(&catch.stmts)
        }
        _ => false,
    }
}
