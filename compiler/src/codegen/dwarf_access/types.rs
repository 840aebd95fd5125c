//! Following a target variable through its DWARF type: the `->member`
//! and `[index]` steps, members, sizes and array bounds, and the
//! pretty-printed `$var$` / `$var$$` forms.

use super::*;

impl Debug {
    /// One `->member` or `[index]` step.
    pub(super) fn step(
        &self,
        u: &U<'_>,
        place: Place,
        ty: Option<UnitOffset>,
        step: &Step<'_>,
        shown: &str,
    ) -> Result<(Place, Option<UnitOffset>), DwarfError> {
        let t = self.ty(u, ty);
        // The object a pointer points to.
        let pointee = |place: &Place| Place::Mem(place.value(8, false), 0);
        // A member of the struct at `off` (the pointee's, or the value's).
        let member = |off: UnitOffset, m: &str| {
            self.member(u, off, m)?.ok_or_else(|| DwarfError::NoMember {
                shown: shown.into(),
                ty: self.type_name(u, ty, 0),
                member: m.into(),
            })
        };
        match (step, t) {
            (Step::Member(m), Ty::Ptr { to }) => {
                let Ty::Struct { off, .. } = self.ty(u, to) else {
                    return Err(DwarfError::NotStructPointer {
                        shown: shown.into(),
                    });
                };
                let (moff, mty) = member(off, m)?;
                Ok((shift(pointee(&place), moff), mty))
            }
            (Step::Member(m), Ty::Struct { off, .. }) => {
                let (moff, mty) = member(off, m)?;
                match place {
                    Place::Mem(..) => Ok((shift(place, moff), mty)),
                    Place::Value(_) => Err(DwarfError::StructInRegisters {
                        shown: shown.into(),
                    }),
                }
            }
            (Step::Member(m), _) => Err(DwarfError::NotStruct {
                shown: shown.into(),
                ty: self.type_name(u, ty, 0),
                member: (*m).into(),
            }),
            (Step::Index(i), Ty::Ptr { to }) => {
                let stride = self.size_of(u, to).ok_or_else(|| DwarfError::PointeeSize {
                    shown: shown.into(),
                })?;
                Ok((shift(pointee(&place), (*i * stride) as i64), to))
            }
            (Step::Index(i), Ty::Array { elem, count }) => {
                if count.is_some_and(|c| *i >= c) {
                    return Err(DwarfError::IndexOut {
                        index: *i,
                        shown: shown.into(),
                        count: count.unwrap_or(0),
                    });
                }
                let stride = self
                    .size_of(u, elem)
                    .ok_or_else(|| DwarfError::ElementSize {
                        shown: shown.into(),
                    })?;
                match place {
                    Place::Mem(..) => Ok((shift(place, (*i * stride) as i64), elem)),
                    Place::Value(_) => Err(DwarfError::InRegisters {
                        shown: shown.into(),
                    }),
                }
            }
            (Step::Dyn, Ty::Ptr { to }) => {
                let stride = self.size_of(u, to).ok_or_else(|| DwarfError::PointeeSize {
                    shown: shown.into(),
                })?;
                let mut ops = place.value(8, false);
                ops.push(Op::AddIndex(stride as i64));
                Ok((Place::Mem(ops, 0), to))
            }
            (Step::Dyn, Ty::Array { elem, .. }) => {
                let stride = self
                    .size_of(u, elem)
                    .ok_or_else(|| DwarfError::ElementSize {
                        shown: shown.into(),
                    })?;
                match place {
                    Place::Mem(mut ops, off) => {
                        ops.push(Op::Add(off));
                        ops.push(Op::AddIndex(stride as i64));
                        Ok((Place::Mem(ops, 0), elem))
                    }
                    Place::Value(_) => Err(DwarfError::InRegisters {
                        shown: shown.into(),
                    }),
                }
            }
            (Step::Index(_) | Step::Dyn, _) => Err(DwarfError::NotIndexable {
                shown: shown.into(),
                ty: self.type_name(u, ty, 0),
            }),
        }
    }

    /// A member of a struct/union/class: (byte offset, type), looked up
    /// through anonymous members and base classes.
    pub(super) fn member(
        &self,
        u: &U<'_>,
        st: UnitOffset,
        name: &str,
    ) -> Result<Option<(i64, Option<UnitOffset>)>, DwarfError> {
        for (mname, moff, mty, anon) in self.members(u, st)? {
            if mname.as_deref() == Some(name) {
                return Ok(Some((moff, mty)));
            }
            if anon {
                if let Ty::Struct { off, .. } = self.ty(u, mty) {
                    if let Some((o, t)) = self.member(u, off, name)? {
                        return Ok(Some((moff + o, t)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// (name, offset, type, anonymous or base class) of each member.
    #[allow(clippy::type_complexity)]
    pub(super) fn members(
        &self,
        u: &U<'_>,
        st: UnitOffset,
    ) -> Result<Vec<(Option<String>, i64, Option<UnitOffset>, bool)>, DwarfError> {
        let mut out = Vec::new();
        let mut tree = u.entries_tree(Some(st))?;
        let root = tree.root()?;
        let mut children = root.children();
        while let Some(child) = children.next()? {
            let e = child.entry();
            let base = e.tag() == dw::DW_TAG_inheritance;
            if e.tag() != dw::DW_TAG_member && !base {
                continue;
            }
            // Static members have no offset in the object.
            if e.attr_value(dw::DW_AT_external)?.is_some()
                || e.attr_value(dw::DW_AT_declaration)?.is_some()
            {
                continue;
            }
            if e.attr_value(dw::DW_AT_bit_size)?.is_some() {
                // Bit fields are left out (not addressable by bytes).
                continue;
            }
            let off = match e.attr_value(dw::DW_AT_data_member_location)? {
                None => 0,
                Some(AttributeValue::Exprloc(expr)) => {
                    let mut ops = expr.operations(u.unit.encoding());
                    match ops.next()? {
                        Some(Operation::PlusConstant { value }) => value as i64,
                        _ => continue,
                    }
                }
                Some(v) => match v.udata_value() {
                    Some(n) => n as i64,
                    None => continue,
                },
            };
            let name = self.name(u, e)?;
            let anon = base || name.is_none();
            out.push((name, off, self.type_of(u, e)?, anon));
        }
        Ok(out)
    }

    /// A type without typedefs and qualifiers.
    pub(super) fn ty(&self, u: &U<'_>, mut off: Option<UnitOffset>) -> Ty {
        for _ in 0..16 {
            let Some(o) = off else {
                return Ty::Void;
            };
            let Ok(t) = u.entry(o) else {
                return Ty::Other;
            };
            let size = t
                .attr_value(dw::DW_AT_byte_size)
                .ok()
                .flatten()
                .and_then(|v| v.udata_value());
            let inner = self.type_of(u, &t).ok().flatten();
            match t.tag() {
                dw::DW_TAG_typedef
                | dw::DW_TAG_const_type
                | dw::DW_TAG_volatile_type
                | dw::DW_TAG_restrict_type
                | dw::DW_TAG_atomic_type => off = inner,
                dw::DW_TAG_pointer_type
                | dw::DW_TAG_reference_type
                | dw::DW_TAG_rvalue_reference_type => return Ty::Ptr { to: inner },
                dw::DW_TAG_base_type => {
                    let enc = t.attr_value(dw::DW_AT_encoding).ok().flatten();
                    return match (enc, size) {
                        (Some(AttributeValue::Encoding(dw::DW_ATE_float)), _) => Ty::Float,
                        (Some(AttributeValue::Encoding(e)), Some(n @ (1 | 2 | 4 | 8))) => Ty::Int {
                            size: n as u8,
                            signed: matches!(e, dw::DW_ATE_signed | dw::DW_ATE_signed_char),
                        },
                        _ => Ty::Other,
                    };
                }
                dw::DW_TAG_enumeration_type => {
                    return match size {
                        Some(n @ (1 | 2 | 4 | 8)) => Ty::Int {
                            size: n as u8,
                            signed: true,
                        },
                        _ => Ty::Other,
                    }
                }
                dw::DW_TAG_structure_type | dw::DW_TAG_class_type | dw::DW_TAG_union_type => {
                    return Ty::Struct {
                        off: o,
                        size: size.unwrap_or(0),
                    }
                }
                dw::DW_TAG_array_type => {
                    return Ty::Array {
                        elem: inner,
                        count: self.array_count(u, o),
                    }
                }
                _ => return Ty::Other,
            }
        }
        Ty::Other
    }

    /// The element count of a one-dimensional array type.
    pub(super) fn array_count(&self, u: &U<'_>, off: UnitOffset) -> Option<u64> {
        let mut tree = u.entries_tree(Some(off)).ok()?;
        let root = tree.root().ok()?;
        let mut children = root.children();
        while let Ok(Some(child)) = children.next() {
            let e = child.entry();
            if e.tag() != dw::DW_TAG_subrange_type {
                continue;
            }
            if let Some(c) = e.attr_value(dw::DW_AT_count).ok().flatten() {
                return c.udata_value();
            }
            if let Some(b) = e.attr_value(dw::DW_AT_upper_bound).ok().flatten() {
                return b.udata_value().map(|n| n + 1);
            }
            return None;
        }
        None
    }

    pub(super) fn size_of(&self, u: &U<'_>, off: Option<UnitOffset>) -> Option<u64> {
        match self.ty(u, off) {
            Ty::Int { size, .. } => Some(u64::from(size)),
            Ty::Ptr { .. } => Some(8),
            Ty::Struct { size, .. } => Some(size),
            Ty::Array { elem, count } => Some(self.size_of(u, elem)? * count?),
            Ty::Float => u
                .entry(off?)
                .ok()?
                .attr_value(dw::DW_AT_byte_size)
                .ok()
                .flatten()?
                .udata_value(),
            _ => None,
        }
    }

    /// `$$parms`' style: numbers and pointers in hexadecimal, a struct as
    /// `{...}`.
    pub(super) fn hex(
        &self,
        u: &U<'_>,
        ty: Option<UnitOffset>,
        place: &Place,
        out: &mut Vec<Piece>,
    ) {
        match self.ty(u, ty) {
            Ty::Int { size, signed } => {
                out.push(Piece::Num(place_scalar(place, size, signed), NumFmt::Hex))
            }
            Ty::Ptr { .. } => out.push(Piece::Num(place.value(8, false), NumFmt::Hex)),
            Ty::Struct { .. } => out.push(Piece::Text("{...}".into())),
            Ty::Array { .. } => out.push(Piece::Text("[...]".into())),
            _ => out.push(Piece::Text("?".into())),
        }
    }

    /// SystemTap's pretty printing: `{.a=1, .b=0x7f.., .name="x", .s={...}}`
    /// (`$`: nested structs as `{...}`; `$$`: expanded), arrays as
    /// `[1, 2, 3]`, char arrays and `char *` as quoted strings.
    pub(super) fn pretty(
        &self,
        u: &U<'_>,
        ty: Option<UnitOffset>,
        place: &Place,
        level: u8,
        depth: u32,
        out: &mut Vec<Piece>,
    ) {
        let text = |out: &mut Vec<Piece>, s: &str| out.push(Piece::Text(s.to_string()));
        match self.ty(u, ty) {
            Ty::Int { size, signed } => out.push(Piece::Num(
                place_scalar(place, size, signed),
                if signed {
                    NumFmt::Signed
                } else {
                    NumFmt::Unsigned
                },
            )),
            Ty::Ptr { to } => {
                let v = place.value(8, false);
                match self.ty(u, to) {
                    Ty::Int { size: 1, .. } => out.push(Piece::Str(v)),
                    // `$p$` of a pointer to a struct shows the struct (as
                    // SystemTap does), its pointer members as addresses.
                    Ty::Struct { .. } if depth == 0 => {
                        self.pretty(u, to, &Place::Mem(v, 0), level, depth, out)
                    }
                    _ => out.push(Piece::Num(v, NumFmt::Hex)),
                }
            }
            Ty::Struct { off, .. } => {
                let Place::Mem(ops, base) = place else {
                    return text(out, "{...}");
                };
                if (depth > 0 && level < 2) || depth > 6 {
                    return text(out, "{...}");
                }
                let Ok(members) = self.members(u, off) else {
                    return text(out, "{?}");
                };
                text(out, "{");
                for (i, (name, moff, mty, _)) in members.iter().enumerate() {
                    if i == MAX_MEMBERS {
                        text(out, ", ...");
                        break;
                    }
                    let sep = if i == 0 { "" } else { ", " };
                    match name {
                        Some(n) => text(out, &format!("{sep}.{n}=")),
                        None => text(out, sep),
                    }
                    let p = Place::Mem(ops.clone(), base + moff);
                    self.pretty(u, *mty, &p, level, depth + 1, out);
                }
                text(out, "}");
            }
            Ty::Array { elem, count } => {
                let Place::Mem(ops, base) = place else {
                    return text(out, "[...]");
                };
                if matches!(self.ty(u, elem), Ty::Int { size: 1, .. }) {
                    let mut o = ops.clone();
                    o.push(Op::Add(*base));
                    return out.push(Piece::Str(o));
                }
                let (Some(stride), Some(count)) = (self.size_of(u, elem), count) else {
                    return text(out, "[...]");
                };
                text(out, "[");
                for i in 0..count.min(MAX_ELEMS) {
                    if i > 0 {
                        text(out, ", ");
                    }
                    let p = Place::Mem(ops.clone(), base + (i * stride) as i64);
                    self.pretty(u, elem, &p, level, depth + 1, out);
                }
                if count > MAX_ELEMS {
                    text(out, ", ...");
                }
                text(out, "]");
            }
            _ => text(out, "?"),
        }
    }
}

/// A scalar's value ops (narrowed when it is in a register).
fn place_scalar(place: &Place, size: u8, signed: bool) -> Vec<Op> {
    match place {
        Place::Value(ops) => {
            let mut o = ops.clone();
            if size < 8 {
                o.push(Op::Narrow { size, signed });
            }
            o
        }
        p => p.value(size, signed),
    }
}

fn shift(place: Place, by: i64) -> Place {
    match place {
        Place::Mem(ops, off) => Place::Mem(ops, off + by),
        v => v,
    }
}
