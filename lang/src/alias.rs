//! Probe aliases, as in SystemTap:
//!
//! ```text
//! probe NAME = POINTS { prologue }    # a probe on NAME runs prologue, then its body
//! probe NAME += POINTS { epilogue }   # ... runs its body, then epilogue
//! ```
//!
//! Expansion happens on the parse tree, before checking: a probe that names
//! an alias becomes a probe on the alias's points whose body is the
//! prologue followed by the probe's body (or the body followed by the
//! epilogue); locals are shared, as in SystemTap. A probe with several
//! points is split: its plain points stay together, each alias point gives
//! one probe. Aliases may use other aliases.
use std::collections::HashMap;

use crate::ast::{Block, Item, PointSpec, ProbeDef};
use crate::diag::{self, Diagnostic};

/// Deepest alias-of-alias chain followed (a longer one is a cycle).
const MAX_CHAIN: usize = 16;

/// The spelling that identifies a point: components and their arguments,
/// blanks outside quotes removed.
pub fn key(p: &PointSpec) -> String {
    let mut out = String::new();
    for (i, c) in p.components.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&c.name.name);
        if let Some((a, _)) = &c.arg {
            out.push('(');
            let mut q = false;
            for ch in a.chars() {
                if ch == '"' {
                    q = !q;
                }
                if q || !ch.is_whitespace() {
                    out.push(ch);
                }
            }
            out.push(')');
        }
    }
    out
}

/// Removes alias definitions from `items` and expands their uses.
pub fn expand(items: Vec<Item>) -> (Vec<Item>, Vec<Diagnostic>) {
    let mut errors = Vec::new();
    let mut aliases: HashMap<String, Vec<ProbeDef>> = HashMap::new();
    let mut rest = Vec::new();
    for item in items {
        match item {
            Item::Probe(p) if p.alias.is_some() => {
                let head = p.alias.as_ref().map(|a| key(&a.name)).unwrap_or_default();
                aliases.entry(head).or_default().push(p);
            }
            other => rest.push(other),
        }
    }
    if aliases.is_empty() {
        return (rest, errors);
    }
    let mut out = Vec::new();
    for item in rest {
        match item {
            Item::Probe(p) => expand_one(p, 0, &aliases, &mut out, &mut errors),
            other => out.push(other),
        }
    }
    (out, errors)
}

fn expand_one(
    p: ProbeDef,
    depth: usize,
    aliases: &HashMap<String, Vec<ProbeDef>>,
    out: &mut Vec<Item>,
    errors: &mut Vec<Diagnostic>,
) {
    let (plain, used): (Vec<PointSpec>, Vec<PointSpec>) = p
        .points
        .iter()
        .cloned()
        .partition(|pt| !aliases.contains_key(&key(pt)));
    if used.is_empty() {
        out.push(Item::Probe(p));
        return;
    }
    if depth >= MAX_CHAIN {
        errors.push(
            diag::error(format!(
                "probe alias `{}` expands into itself",
                key(&used[0])
            ))
            .with_labels(vec![diag::primary(used[0].span, "a cycle of aliases")]),
        );
        return;
    }
    if !plain.is_empty() {
        out.push(Item::Probe(ProbeDef {
            points: plain,
            ..p.clone()
        }));
    }
    for pt in used {
        for def in &aliases[&key(&pt)] {
            let epilogue = def.alias.as_ref().is_some_and(|a| a.epilogue);
            let stmts = if epilogue {
                p.body
                    .stmts
                    .iter()
                    .chain(&def.body.stmts)
                    .cloned()
                    .collect()
            } else {
                def.body
                    .stmts
                    .iter()
                    .chain(&p.body.stmts)
                    .cloned()
                    .collect()
            };
            let points = def
                .points
                .iter()
                .map(|d| PointSpec {
                    optional: d.optional || pt.optional,
                    ..d.clone()
                })
                .collect();
            let expanded = ProbeDef {
                points,
                body: Block {
                    stmts,
                    span: p.body.span,
                },
                one_liner: p.one_liner,
                span: p.span,
                alias: None,
            };
            expand_one(expanded, depth + 1, aliases, out, errors);
        }
    }
}
