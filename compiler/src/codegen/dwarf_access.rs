//! SystemTap's target-variable expressions at a function's entry, from the
//! DWARF types (gimli): `$p->a->b` (members through pointers, or of
//! structs by value), `$arr[3]` (arrays and pointers), `$s$` / `$s$$`
//! (pretty-printed as a string: one level of structs, or all of them),
//! `$$parms`, `$$locals`, `$$vars` (each as `name=0x..`, or
//! pretty-printed with a `$`/`$$` suffix).
//!
//! The result is a small program ([`Op`]) run by the handler: target
//! memory is only read through the fault-safe `user_read` /
//! `user_string` helpers, so a bad pointer is a runtime error (or
//! `<unknown>` inside a pretty-printed value), never a fault in the target.
//!
//! This file reads the expressions and walks their paths;
//! `dwarf_access/scope.rs` finds the variables a point sees and where each
//! one is, `dwarf_access/types.rs` follows them through their types.

use gimli::{constants as dw, AttributeValue, Operation, UnitOffset};

use super::dwarf::{Debug, DwarfError, ARG_REGS, DWARF_REGS, R};
use ptap_lang::Span;

mod scope;
mod types;

use scope::{Scope, VarDie};

/// One step of the handler's computation of a value `v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `v = regs[offset]` (a `PtRegs` offset).
    Reg(usize),
    /// `v = value` (a constant location: `DW_OP_lit`, `DW_OP_const*`).
    Const(i64),
    /// `v = *(v + off)`: `size` bytes read fault-safely, sign- or zero-extended.
    Load { off: i64, size: u8, signed: bool },
    /// `v = v + off` (the address of a member or element).
    Add(i64),
    /// `v = v + index * stride`, the index computed by the script (`$a[i]`).
    AddIndex(i64),
    /// `v` truncated to `size` bytes, sign- or zero-extended.
    Narrow { size: u8, signed: bool },
    /// `v = ` the main executable's load bias in the probed process (the
    /// link-time address of a global is added to it: `@var`).
    ExeBias,
}

/// How a number is shown in a pretty-printed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumFmt {
    Signed,
    Unsigned,
    /// `0x` + hexadecimal (pointers, and every value of `$$parms`).
    Hex,
}

/// A piece of a pretty-printed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    Num(Vec<Op>, NumFmt),
    /// The C string at the address the ops compute, quoted (`NULL` for 0,
    /// `<unknown>` when unreadable).
    Str(Vec<Op>),
}

/// What a `$`-expression compiles to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TVar {
    Long(Vec<Op>),
    Str(Vec<Piece>),
    /// Does not resolve here: using it is this error. `@defined` of it is
    /// 0, unless `entry_ok`: in a return probe, it resolves at the entry
    /// (where the script's `$x` is read).
    Failed {
        what: String,
        span: Span,
        entry_ok: bool,
    },
}

impl TVar {
    /// The register of a plain `$name` kept in a register (assignable in
    /// guru mode).
    pub(crate) fn register(&self) -> Option<usize> {
        match self {
            TVar::Long(ops) => match ops.as_slice() {
                [Op::Reg(r)] | [Op::Reg(r), Op::Narrow { .. }] => Some(*r),
                _ => None,
            },
            TVar::Str(_) | TVar::Failed { .. } => None,
        }
    }
}

/// `$name->a[2]->b$`, split.
#[derive(Debug)]
struct Path<'a> {
    base: &'a str,
    steps: Vec<Step<'a>>,
    /// 0: a number; 1: `$`; 2: `$$`.
    pretty: u8,
}

#[derive(Debug)]
enum Step<'a> {
    Member(&'a str),
    Index(u64),
    /// `[?]`: the index the script computes.
    Dyn,
}

fn parse_path(name: &str) -> Result<Path<'_>, DwarfError> {
    let (body, pretty) = if let Some(b) = name.strip_suffix("$$") {
        (b, 2)
    } else if let Some(b) = name.strip_suffix('$') {
        (b, 1)
    } else {
        (name, 0)
    };
    let end = body.find(['-', '[']).unwrap_or(body.len());
    let (base, mut rest) = body.split_at(end);
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("->") {
            let end = r.find(['-', '[']).unwrap_or(r.len());
            steps.push(Step::Member(&r[..end]));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or(DwarfError::UnclosedBracket)?;
            if &r[..end] == "?" {
                steps.push(Step::Dyn);
            } else {
                let i = r[..end].parse().map_err(|_| DwarfError::BadIndex)?;
                steps.push(Step::Index(i));
            }
            rest = &r[end + 1..];
        } else {
            return Err(DwarfError::BadPath { rest: rest.into() });
        }
    }
    Ok(Path {
        base,
        steps,
        pretty,
    })
}

/// Where an object is while a path is walked: its value (computed by
/// the ops), or memory at the ops' address plus an offset.
#[derive(Debug, Clone)]
enum Place {
    Value(Vec<Op>),
    Mem(Vec<Op>, i64),
}

impl Place {
    /// The ops that compute the object's value, which is a pointer or a
    /// scalar of `size` bytes.
    fn value(&self, size: u8, signed: bool) -> Vec<Op> {
        match self {
            Place::Value(ops) => ops.clone(),
            Place::Mem(ops, off) => {
                let mut o = ops.clone();
                o.push(Op::Load {
                    off: *off,
                    size,
                    signed,
                });
                o
            }
        }
    }
}

/// A type, with typedefs and qualifiers removed.
enum Ty {
    Void,
    /// An integer, enum, bool or char of `size` bytes.
    Int {
        size: u8,
        signed: bool,
    },
    Float,
    /// A pointer to `to` (None: `void *`).
    Ptr {
        to: Option<UnitOffset>,
    },
    /// struct, class or union.
    Struct {
        off: UnitOffset,
        size: u64,
    },
    Array {
        elem: Option<UnitOffset>,
        count: Option<u64>,
    },
    Other,
}

/// Elements shown of an array in a pretty-printed value.
const MAX_ELEMS: u64 = 16;
/// Members shown of a struct in a pretty-printed value.
const MAX_MEMBERS: usize = 32;

type U<'a> = gimli::UnitRef<'a, R>;

impl Debug {
    /// The code of the `$`-expression `name` (without its leading `$`)
    /// at the entry of function `func`.
    pub(crate) fn entry_access(&self, func: &str, name: &str) -> Result<TVar, DwarfError> {
        let (unit, pc, vars) = self.function_vars(func)?;
        let scope = Scope {
            pc,
            entry: true,
            frame: None,
        };
        self.access(&unit, &scope, &vars, func, name)
    }

    /// `$return->member`, `$return[2]`, `$return$` in a kretprobe of
    /// `func`: the path from the return value (`rax`) typed by the
    /// function's DWARF return type.
    pub(crate) fn return_access(&self, func: &str, name: &str) -> Result<TVar, DwarfError> {
        let path = parse_path(name)?;
        let mut units = self.dwarf.units();
        while let Some(h) = units.next()? {
            let unit = self.dwarf.unit(h)?;
            let u = unit.unit_ref(&self.dwarf);
            let mut found = None;
            let mut cursor = unit.entries();
            while let Some((_, e)) = cursor.next_dfs()? {
                if self.entry_of(&u, e, func)?.is_some() {
                    found = Some(self.type_of(&u, e)?);
                    break;
                }
            }
            let Some(ty) = found else {
                continue;
            };
            if ty.is_none() {
                return Err(DwarfError::ReturnsVoid { func: func.into() });
            }
            let place = Place::Value(vec![Op::Reg(ptap_arch::regs::offset::AX)]);
            return self.walk(&u, place, ty, &path, "$return".into());
        }
        Err(DwarfError::NoFunction { func: func.into() })
    }

    /// The code of `name` at the address `pc` (a source-line or `0xADDR`
    /// point): the variables of the innermost function or inlined copy
    /// there, in the lexical blocks that hold `pc`.
    pub(crate) fn access_at(&self, pc: u64, name: &str) -> Result<TVar, DwarfError> {
        let (unit, scope, vars, func) = self.scope_vars(pc)?;
        self.access(&unit, &scope, &vars, &func, name)
    }

    /// (name, C type) of the variables in scope at `pc`, for `ptap -L`.
    pub fn vars_at(&self, pc: u64) -> Result<Vec<(String, String)>, DwarfError> {
        let (unit, _, vars, _) = self.scope_vars(pc)?;
        let u = unit.unit_ref(&self.dwarf);
        let mut out = Vec::new();
        for v in &vars {
            let e = u.entry(v.off)?;
            out.push((v.name.clone(), self.type_name(&u, self.type_of(&u, &e)?, 0)));
        }
        Ok(out)
    }

    fn access(
        &self,
        unit: &gimli::Unit<R>,
        scope: &Scope,
        vars: &[VarDie],
        func: &str,
        name: &str,
    ) -> Result<TVar, DwarfError> {
        let path = parse_path(name)?;
        let u = unit.unit_ref(&self.dwarf);
        if let Some(kind) = path.base.strip_prefix('$') {
            let chosen: Vec<&VarDie> = match kind {
                "parms" => vars.iter().filter(|v| v.param.is_some()).collect(),
                "locals" => vars.iter().filter(|v| v.param.is_none()).collect(),
                _ => vars.iter().collect(),
            };
            let mut pieces = Vec::new();
            for (i, v) in chosen.iter().enumerate() {
                let sep = if i == 0 { "" } else { " " };
                pieces.push(Piece::Text(format!("{sep}{}=", v.name)));
                let ty = self.type_of(&u, &u.entry(v.off)?)?;
                match self.place(&u, v, scope) {
                    Ok(place) if path.pretty == 0 => self.hex(&u, ty, &place, &mut pieces),
                    Ok(place) => self.pretty(&u, ty, &place, path.pretty, 0, &mut pieces),
                    Err(_) => pieces.push(Piece::Text("?".into())),
                }
            }
            return Ok(TVar::Str(merge(pieces)));
        }
        let var =
            vars.iter()
                .find(|v| v.name == path.base)
                .ok_or_else(|| DwarfError::NoVariable {
                    func: func.into(),
                    name: path.base.into(),
                })?;
        let die = u.entry(var.off)?;
        let ty = self.type_of(&u, &die)?;
        let place = self.place(&u, var, scope)?;
        self.walk(&u, place, ty, &path, format!("${}", path.base))
    }

    /// `@cast(ptr, "type")->a->b`: the steps from the object of type `ty`
    /// at the address the handler computes (the ops start from it).
    pub(crate) fn cast_access(&self, ty: &str, chain: &str) -> Result<TVar, DwarfError> {
        let text = format!("x{chain}");
        let path = parse_path(&text)?;
        let (unit, off) = self.find_type(ty)?;
        let u = unit.unit_ref(&self.dwarf);
        self.walk(
            &u,
            Place::Mem(Vec::new(), 0),
            Some(off),
            &path,
            format!("@cast(..., \"{ty}\")"),
        )
    }

    /// SystemTap's `@var("name@file.c")->chain`: a global or file-static
    /// variable of the executable (one defined at a compilation unit's top
    /// level, at a fixed link-time address), `file` a suffix of its
    /// compilation unit's name. The handler adds the load bias.
    pub(crate) fn var_access(&self, spec: &str, chain: &str) -> Result<TVar, DwarfError> {
        let (name, file) = match spec.split_once('@') {
            Some((n, f)) => (n.trim(), Some(f.trim())),
            None => (spec.trim(), None),
        };
        if name.is_empty() {
            return Err(DwarfError::NoVarName);
        }
        let text = format!("x{chain}");
        let path = parse_path(&text)?;
        let mut units = self.dwarf.units();
        let mut declared_only = false;
        while let Some(h) = units.next()? {
            let unit = self.dwarf.unit(h)?;
            let u = unit.unit_ref(&self.dwarf);
            let mut tree = unit.entries_tree(None)?;
            let root = tree.root()?;
            if let Some(f) = file {
                let cu = self.name(&u, root.entry())?.unwrap_or_default();
                let suffix_ok = cu == f || cu.ends_with(&format!("/{f}"));
                if !suffix_ok {
                    continue;
                }
            }
            let mut kids = root.children();
            while let Some(k) = kids.next()? {
                let e = k.entry();
                if e.tag() != dw::DW_TAG_variable || self.name(&u, e)?.as_deref() != Some(name) {
                    continue;
                }
                let Some(loc) = e.attr_value(dw::DW_AT_location)? else {
                    declared_only = true;
                    continue;
                };
                let gimli::AttributeValue::Exprloc(expr) = loc else {
                    return Err(DwarfError::LocationList { name: name.into() });
                };
                let mut ops = expr.operations(u.unit.encoding());
                let addr = match (ops.next()?, ops.next()?) {
                    (Some(Operation::Address { address }), None) => address,
                    _ => return Err(DwarfError::NotFixedAddress { name: name.into() }),
                };
                let ty = self.type_of(&u, e)?;
                let place = Place::Mem(vec![Op::ExeBias, Op::Add(addr as i64)], 0);
                return self.walk(&u, place, ty, &path, format!("@var(\"{spec}\")"));
            }
        }
        let name = name.into();
        Err(match (declared_only, file) {
            (true, _) => DwarfError::ExternOnly { name },
            (false, Some(f)) => DwarfError::NoGlobalInFile {
                name,
                file: f.into(),
            },
            (false, None) => DwarfError::NoGlobal { name },
        })
    }

    /// A type by its C name: `struct pt`, `union u`, `class C`, `enum e`,
    /// or a bare name (a typedef, struct or base type); a definition (not a
    /// declaration) is preferred.
    fn find_type(&self, name: &str) -> Result<(gimli::Unit<R>, UnitOffset), DwarfError> {
        let name = name.trim();
        let (tags, bare): (&[gimli::DwTag], &str) = if let Some(n) = name.strip_prefix("struct ") {
            (&[dw::DW_TAG_structure_type], n)
        } else if let Some(n) = name.strip_prefix("union ") {
            (&[dw::DW_TAG_union_type], n)
        } else if let Some(n) = name.strip_prefix("class ") {
            (&[dw::DW_TAG_class_type, dw::DW_TAG_structure_type], n)
        } else if let Some(n) = name.strip_prefix("enum ") {
            (&[dw::DW_TAG_enumeration_type], n)
        } else {
            (
                &[
                    dw::DW_TAG_typedef,
                    dw::DW_TAG_structure_type,
                    dw::DW_TAG_class_type,
                    dw::DW_TAG_union_type,
                    dw::DW_TAG_base_type,
                ],
                name,
            )
        };
        let bare = bare.trim();
        let mut units = self.dwarf.units();
        while let Some(h) = units.next()? {
            let unit = self.dwarf.unit(h)?;
            let u = unit.unit_ref(&self.dwarf);
            let mut found = None;
            let mut cursor = unit.entries();
            while let Some((_, e)) = cursor.next_dfs()? {
                if !tags.contains(&e.tag()) || self.name(&u, e)?.as_deref() != Some(bare) {
                    continue;
                }
                if e.attr_value(dw::DW_AT_declaration)?.is_none() {
                    found = Some(e.offset());
                    break;
                }
            }
            if let Some(off) = found {
                return Ok((unit, off));
            }
        }
        Err(DwarfError::NoTypeNamed { name: name.into() })
    }

    /// The steps of a path from a variable (or cast object), then its
    /// value, address or pretty-printed string.
    fn walk(
        &self,
        u: &U<'_>,
        mut place: Place,
        mut ty: Option<UnitOffset>,
        path: &Path<'_>,
        mut shown: String,
    ) -> Result<TVar, DwarfError> {
        let u = *u;
        for step in &path.steps {
            (place, ty) = self.step(&u, place, ty, step, &shown)?;
            match step {
                Step::Member(m) => shown = format!("{shown}->{m}"),
                Step::Index(i) => shown = format!("{shown}[{i}]"),
                Step::Dyn => shown = format!("{shown}[...]"),
            }
        }
        if path.pretty > 0 {
            let mut pieces = Vec::new();
            self.pretty(&u, ty, &place, path.pretty, 0, &mut pieces);
            return Ok(TVar::Str(merge(pieces)));
        }
        match (self.ty(&u, ty), &place) {
            (Ty::Int { size, signed }, Place::Value(ops)) => {
                let mut o = ops.clone();
                if size < 8 {
                    o.push(Op::Narrow { size, signed });
                }
                Ok(TVar::Long(o))
            }
            (Ty::Int { size, signed }, p) => Ok(TVar::Long(p.value(size, signed))),
            (Ty::Ptr { .. }, p) => Ok(TVar::Long(p.value(8, false))),
            (Ty::Array { .. }, Place::Mem(ops, off)) => {
                let mut o = ops.clone();
                o.push(Op::Add(*off));
                Ok(TVar::Long(o))
            }
            (Ty::Struct { .. }, _) => Err(DwarfError::IsStruct { shown }),
            (Ty::Float, _) => Err(DwarfError::Float),
            (Ty::Void, _) => Err(DwarfError::Untyped { shown }),
            _ => Err(DwarfError::NotNumber { shown }),
        }
    }
}

/// Adjacent texts joined.
fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for p in pieces {
        if let (Piece::Text(t), Some(Piece::Text(last))) = (&p, out.last_mut()) {
            last.push_str(t);
            continue;
        }
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split() {
        let p = parse_path("p->a[3]->b$$").unwrap();
        assert_eq!(p.base, "p");
        assert_eq!(p.pretty, 2);
        assert!(matches!(
            p.steps.as_slice(),
            [Step::Member("a"), Step::Index(3), Step::Member("b")]
        ));
        let p = parse_path("$parms$").unwrap();
        assert_eq!((p.base, p.pretty, p.steps.len()), ("$parms", 1, 0));
    }
}
