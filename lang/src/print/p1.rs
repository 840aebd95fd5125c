//! `-p1`: the parse tree, written back as source with every operator
//! application in parentheses (so precedence is visible), one statement per
//! line, bodies indented by two spaces.
use std::fmt::Write;

use crate::ast::*;
use crate::sources::Sources;

pub fn script(s: &Script, _sources: &Sources) -> String {
    let mut out = String::new();
    for item in &s.items {
        match item {
            Item::Global(g) => {
                let _ = write!(out, "global {}", g.name.name);
                if let Some((cap, _)) = g.capacity {
                    let _ = write!(out, "[{cap}]");
                }
                if let Some((lit, _)) = &g.init {
                    let _ = write!(out, " = {}", literal(lit));
                }
                out.push('\n');
            }
            Item::Function(f) => {
                let _ = write!(out, "function {}", f.name.name);
                if let Some((t, _)) = f.ret {
                    let _ = write!(out, ":{}", type_name(t));
                }
                let params: Vec<String> = f
                    .params
                    .iter()
                    .map(|p| match p.ty {
                        Some((t, _)) => format!("{}:{}", p.name.name, type_name(t)),
                        None => p.name.name.clone(),
                    })
                    .collect();
                let _ = writeln!(out, "({})", params.join(", "));
                block(&mut out, &f.body, 0);
            }
            Item::Probe(p) => {
                let points: Vec<String> = p.points.iter().map(point).collect();
                match &p.alias {
                    Some(a) => {
                        let op = if a.epilogue { "+=" } else { "=" };
                        let _ = write!(out, "probe {} {op} {}", point(&a.name), points.join(", "));
                    }
                    None => {
                        let _ = write!(out, "probe {}", points.join(", "));
                    }
                }
                if p.one_liner {
                    out.push_str(" /* one-liner */");
                }
                out.push('\n');
                block(&mut out, &p.body, 0);
            }
        }
    }
    out
}

fn type_name(t: TypeName) -> &'static str {
    match t {
        TypeName::Long => "long",
        TypeName::String => "string",
    }
}

fn literal(l: &Literal) -> String {
    match l {
        Literal::Num(n) => n.to_string(),
        Literal::Str(s) => quote(s),
    }
}

/// A string literal as it could be written in a script.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn point(p: &PointSpec) -> String {
    let comps: Vec<String> = p
        .components
        .iter()
        .map(|c| match &c.arg {
            Some((a, _)) => format!("{}({})", c.name.name, a.trim()),
            None => c.name.name.clone(),
        })
        .collect();
    format!("{}{}", comps.join("."), if p.optional { "?" } else { "" })
}

/// `(e)` unless the printed expression already is parenthesized.
pub fn paren(e: &str) -> String {
    if e.starts_with('(') {
        e.to_string()
    } else {
        format!("({e})")
    }
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push_str("  ");
    }
}

fn block(out: &mut String, b: &Block, depth: usize) {
    indent(out, depth);
    out.push_str("{\n");
    for s in &b.stmts {
        stmt(out, s, depth + 1);
    }
    indent(out, depth);
    out.push_str("}\n");
}

/// A statement nested under a header line (if/while/...).
fn nested(out: &mut String, s: &Stmt, depth: usize) {
    match &s.kind {
        StmtKind::Block(b) => block(out, b, depth),
        _ => stmt(out, s, depth + 1),
    }
}

fn sort(m: &Option<(SortMark, crate::span::Span)>) -> &'static str {
    match m {
        Some((SortMark::Asc, _)) => "+",
        Some((SortMark::Desc, _)) => "-",
        None => "",
    }
}

fn stmt(out: &mut String, s: &Stmt, depth: usize) {
    match &s.kind {
        StmtKind::Block(b) => return block(out, b, depth),
        StmtKind::If { cond, then, els } => {
            indent(out, depth);
            let _ = writeln!(out, "if {}", paren(&expr(cond)));
            nested(out, then, depth);
            if let Some(e) = els {
                indent(out, depth);
                out.push_str("else\n");
                nested(out, e, depth);
            }
            return;
        }
        StmtKind::While { cond, body } => {
            indent(out, depth);
            let _ = writeln!(out, "while {}", paren(&expr(cond)));
            return nested(out, body, depth);
        }
        StmtKind::For {
            init,
            cond,
            step,
            body,
        } => {
            indent(out, depth);
            let o = |e: &Option<Expr>| e.as_ref().map(expr).unwrap_or_default();
            let _ = writeln!(out, "for ({}; {}; {})", o(init), o(cond), o(step));
            return nested(out, body, depth);
        }
        StmtKind::Foreach(f) => {
            indent(out, depth);
            let keys: Vec<String> = f
                .keys
                .iter()
                .map(|k| format!("{}{}", k.name.name, sort(&k.sort)))
                .collect();
            let keys = if f.bracketed {
                format!("[{}]", keys.join(", "))
            } else {
                keys.join(", ")
            };
            let value = f
                .value
                .as_ref()
                .map(|v| format!("{}{} = ", v.name.name, sort(&v.sort)))
                .unwrap_or_default();
            let limit = f
                .limit
                .as_ref()
                .map(|l| format!(" limit {}", expr(l)))
                .unwrap_or_default();
            let slice = f
                .slice
                .as_ref()
                .map(|k| format!("[{}]", list(k)))
                .unwrap_or_default();
            let agg = f
                .array_agg
                .as_ref()
                .map(|a| format!(" @{}", a.name))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "foreach ({value}{keys} in {}{slice}{agg}{}{limit})",
                f.array.name,
                sort(&f.array_sort)
            );
            return nested(out, &f.body, depth);
        }
        StmtKind::Try { body, var, catch } => {
            indent(out, depth);
            out.push_str("try\n");
            block(out, body, depth);
            indent(out, depth);
            match var {
                Some(v) => {
                    let _ = writeln!(out, "catch ({})", v.name);
                }
                None => out.push_str("catch\n"),
            }
            return block(out, catch, depth);
        }
        _ => {}
    }
    indent(out, depth);
    match &s.kind {
        StmtKind::Expr(e) => out.push_str(&expr(e)),
        StmtKind::Break => out.push_str("break"),
        StmtKind::Continue => out.push_str("continue"),
        StmtKind::Next => out.push_str("next"),
        StmtKind::Return(None) => out.push_str("return"),
        StmtKind::Return(Some(e)) => {
            let _ = write!(out, "return {}", expr(e));
        }
        StmtKind::Delete(e) => {
            let _ = write!(out, "delete {}", expr(e));
        }
        StmtKind::Aggregate { target, value } => {
            let _ = write!(out, "{} <<< {}", expr(target), expr(value));
        }
        _ => {}
    }
    out.push('\n');
}

fn list(es: &[Expr]) -> String {
    es.iter().map(expr).collect::<Vec<_>>().join(", ")
}

/// An expression with every operator application parenthesized.
pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Num(n) => n.to_string(),
        ExprKind::Wildcard => "*".to_string(),
        ExprKind::Str(s) => quote(s),
        ExprKind::Name(id) => id.name.clone(),
        ExprKind::Index { array, keys } => format!("{}[{}]", array.name, list(keys)),
        ExprKind::Call { name, args } => format!("{}({})", name.name, list(args)),
        ExprKind::AtCall { name, args } => format!("@{}({})", name.name, list(args)),
        ExprKind::TargetVar(id) => format!("${}", id.name),
        ExprKind::ScriptArg { n: 0, as_string } => {
            format!("{}#", if *as_string { '@' } else { '$' })
        }
        ExprKind::ScriptArg { n, as_string } => {
            format!("{}{n}", if *as_string { '@' } else { '$' })
        }
        ExprKind::Unary { op, operand } => format!("({}{})", op.text(), expr(operand)),
        ExprKind::Binary { op, lhs, rhs } => format!("({} {} {})", expr(lhs), op.text(), expr(rhs)),
        ExprKind::Ternary { cond, then, els } => {
            format!("({} ? {} : {})", expr(cond), expr(then), expr(els))
        }
        ExprKind::Assign { op, target, value } => {
            format!("({} {} {})", expr(target), op.text(), expr(value))
        }
        ExprKind::IncDec { op, prefix, target } => {
            let o = if *op == IncDec::Inc { "++" } else { "--" };
            if *prefix {
                format!("({o}{})", expr(target))
            } else {
                format!("({}{o})", expr(target))
            }
        }
        ExprKind::In { keys, array } => {
            if keys.len() == 1 {
                format!("({} in {})", expr(&keys[0]), array.name)
            } else {
                format!("([{}] in {})", list(keys), array.name)
            }
        }
    }
}
