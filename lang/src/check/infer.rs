//! Type inference: a union-find over type slots (one per local, global
//! value, array key, parameter and return value). A slot learns its type
//! from its first use; that place is kept so a conflict can point at both.
use super::errors::CheckError;
use crate::checked::{Expr, Type};
use crate::span::Span;

/// A type during inference: known, or a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    K(Type),
    V(u32),
}

#[derive(Default)]
pub struct Infer {
    parent: Vec<u32>,
    known: Vec<Option<(Type, Span)>>,
    what: Vec<String>,
}

impl Infer {
    pub fn slot(&mut self, what: impl Into<String>) -> u32 {
        let id = self.parent.len() as u32;
        self.parent.push(id);
        self.known.push(None);
        self.what.push(what.into());
        id
    }

    pub fn find(&mut self, mut s: u32) -> u32 {
        while self.parent[s as usize] != s {
            let gp = self.parent[self.parent[s as usize] as usize];
            self.parent[s as usize] = gp;
            s = gp;
        }
        s
    }

    pub fn what(&self, s: u32) -> &str {
        &self.what[s as usize]
    }

    /// The type a slot is known to have, with where it was learnt.
    pub fn known(&mut self, s: u32) -> Option<(Type, Span)> {
        let r = self.find(s);
        self.known[r as usize]
    }

    pub fn resolve(&mut self, t: Ty) -> Option<Type> {
        match t {
            Ty::K(t) => Some(t),
            Ty::V(s) => self.known(s).map(|k| k.0),
        }
    }

    /// Makes `a` and `b` the same type; `span` is the place that demands it.
    pub fn unify(&mut self, a: Ty, b: Ty, span: Span) -> Result<(), CheckError> {
        match (a, b) {
            (Ty::K(x), Ty::K(y)) if x == y => Ok(()),
            (Ty::K(x), Ty::K(y)) => Err(CheckError::TypeMismatch {
                span,
                expected: y,
                found: x,
            }),
            (Ty::V(s), Ty::K(t)) | (Ty::K(t), Ty::V(s)) => self.bind(s, t, span),
            (Ty::V(x), Ty::V(y)) => {
                let (rx, ry) = (self.find(x), self.find(y));
                if rx == ry {
                    return Ok(());
                }
                match (self.known[rx as usize], self.known[ry as usize]) {
                    (Some((tx, ox)), Some((ty, oy))) if tx != ty => Err(CheckError::SlotConflict {
                        span,
                        a: (self.what[x as usize].clone(), tx, ox),
                        b: (self.what[y as usize].clone(), ty, oy),
                    }),
                    (None, Some(_)) => {
                        self.parent[rx as usize] = ry;
                        Ok(())
                    }
                    _ => {
                        self.parent[ry as usize] = rx;
                        Ok(())
                    }
                }
            }
        }
    }

    fn bind(&mut self, s: u32, t: Type, span: Span) -> Result<(), CheckError> {
        let r = self.find(s);
        match self.known[r as usize] {
            None => {
                self.known[r as usize] = Some((t, span));
                Ok(())
            }
            Some((k, _)) if k == t => Ok(()),
            Some((k, origin)) => Err(CheckError::TypeConflict {
                span,
                what: self.what[s as usize].clone(),
                used_as: t,
                inferred: k,
                origin,
            }),
        }
    }
}

/// An expression's inference type.
pub fn ty_of(e: &Expr) -> Ty {
    match e.slot {
        Some(s) => Ty::V(s),
        None => Ty::K(e.ty),
    }
}

/// Builds an expression with an inference type.
pub fn mk(kind: crate::checked::ExprKind, ty: Ty, span: Span) -> Expr {
    match ty {
        Ty::K(t) => Expr {
            kind,
            ty: t,
            span,
            slot: None,
        },
        Ty::V(s) => Expr {
            kind,
            ty: Type::Long,
            span,
            slot: Some(s),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unify_binds_and_conflicts() {
        let mut inf = Infer::default();
        let a = inf.slot("local `a`");
        let b = inf.slot("local `b`");
        let sp = Span::default();
        inf.unify(Ty::V(a), Ty::V(b), sp).unwrap();
        inf.unify(Ty::V(a), Ty::K(Type::Long), sp).unwrap();
        assert_eq!(inf.resolve(Ty::V(b)), Some(Type::Long));
        let e = inf.unify(Ty::V(b), Ty::K(Type::String), sp).unwrap_err();
        assert!(matches!(
            e,
            CheckError::TypeConflict {
                inferred: Type::Long,
                used_as: Type::String,
                ..
            }
        ));
    }
}
