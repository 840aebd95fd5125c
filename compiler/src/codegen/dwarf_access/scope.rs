//! The variables a target-variable expression can name and where each one
//! is: a function's parameters and locals at its entry, or the variables
//! in scope at an address (the innermost function or inlined copy holding
//! it, and its lexical blocks); a variable's place from its DWARF location
//! expression, with the frame base (`DW_AT_frame_base`, the CFA of
//! `.eh_frame`) for variables on the stack.

use super::*;

/// Where variables are read: the address, whether it is a function's
/// entry (parameters still in their argument registers), and the frame
/// base there (register, offset) for `DW_OP_fbreg` locations.
pub(super) struct Scope {
    pub(super) pc: u64,
    pub(super) entry: bool,
    pub(super) frame: Option<Result<(usize, i64), DwarfError>>,
}

/// A variable of the probed function (a direct parameter or a local).
pub(super) struct VarDie {
    pub(super) name: String,
    /// Index among the parameters.
    pub(super) param: Option<usize>,
    pub(super) off: UnitOffset,
}

impl Debug {
    /// The unit, entry address and variables of the function `func`.
    pub(super) fn function_vars(
        &self,
        func: &str,
    ) -> Result<(gimli::Unit<R>, u64, Vec<VarDie>), DwarfError> {
        let mut units = self.dwarf.units();
        while let Some(h) = units.next()? {
            let unit = self.dwarf.unit(h)?;
            let u = unit.unit_ref(&self.dwarf);
            let mut cursor = unit.entries();
            let mut depth = 0isize;
            // Inside the function: (its depth, entry pc).
            let mut inside: Option<(isize, u64)> = None;
            // Depth of an inlined call being skipped (its variables are the callee's).
            let mut inlined: Option<isize> = None;
            let mut vars = Vec::new();
            let mut nparam = 0;
            while let Some((delta, e)) = cursor.next_dfs()? {
                depth += delta;
                if let Some((d, pc)) = inside {
                    if depth <= d {
                        drop(cursor);
                        return Ok((unit, pc, vars));
                    }
                    if inlined.is_some_and(|k| depth <= k) {
                        inlined = None;
                    }
                    if inlined.is_some() {
                        continue;
                    }
                    match e.tag() {
                        dw::DW_TAG_inlined_subroutine | dw::DW_TAG_subprogram => {
                            inlined = Some(depth);
                        }
                        dw::DW_TAG_formal_parameter | dw::DW_TAG_variable => {
                            let param = (e.tag() == dw::DW_TAG_formal_parameter && depth == d + 1)
                                .then(|| {
                                    nparam += 1;
                                    nparam - 1
                                });
                            if let Some(name) = self.name(&u, e)? {
                                if !vars.iter().any(|v: &VarDie| v.name == name) {
                                    vars.push(VarDie {
                                        name,
                                        param,
                                        off: e.offset(),
                                    });
                                }
                            }
                        }
                        _ => {}
                    }
                    continue;
                }
                if let Some(pc) = self.entry_of(&u, e, func)? {
                    inside = Some((depth, pc));
                }
            }
            if let Some((_, pc)) = inside {
                return Ok((unit, pc, vars));
            }
        }
        Err(DwarfError::NoFunction { func: func.into() })
    }

    /// The variables in scope at `pc`: (unit, scope, variables, the
    /// function's name). The innermost function or inlined copy holding
    /// `pc` gives its parameters; locals come from it and from its lexical
    /// blocks that hold `pc`.
    pub(super) fn scope_vars(
        &self,
        pc: u64,
    ) -> Result<(gimli::Unit<R>, Scope, Vec<VarDie>, String), DwarfError> {
        let mut units = self.dwarf.units();
        while let Some(h) = units.next()? {
            let unit = self.dwarf.unit(h)?;
            let u = unit.unit_ref(&self.dwarf);
            // The innermost function-like scope holding pc, and its subprogram.
            let mut inner: Option<UnitOffset> = None;
            let mut subprogram: Option<UnitOffset> = None;
            // (depth, holds pc) of the enclosing scopes.
            let mut stack: Vec<(isize, bool)> = Vec::new();
            let mut depth = 0isize;
            let mut cursor = unit.entries();
            while let Some((delta, e)) = cursor.next_dfs()? {
                depth += delta;
                while stack.last().is_some_and(|&(d, _)| d >= depth) {
                    stack.pop();
                }
                let tag = e.tag();
                if !matches!(
                    tag,
                    dw::DW_TAG_subprogram
                        | dw::DW_TAG_inlined_subroutine
                        | dw::DW_TAG_lexical_block
                ) {
                    continue;
                }
                let outer = stack.last().is_none_or(|&(_, h)| h);
                let holds = outer && self.holds(&u, e, pc)?;
                stack.push((depth, holds));
                if holds && tag != dw::DW_TAG_lexical_block {
                    inner = Some(e.offset());
                    if tag == dw::DW_TAG_subprogram {
                        subprogram = Some(e.offset());
                    }
                }
            }
            let (Some(f), Some(sp)) = (inner, subprogram) else {
                continue;
            };
            let fe = u.entry(f)?;
            let name = self.name(&u, &fe)?.unwrap_or_else(|| format!("{pc:#x}"));
            let mut vars = Vec::new();
            let mut nparam = 0;
            let mut tree = u.entries_tree(Some(f))?;
            let root = tree.root()?;
            self.collect_vars(&u, root, pc, true, &mut nparam, &mut vars)?;
            let entry = f == sp && self.low_pc(&u, &fe)? == Some(pc);
            let spe = u.entry(sp)?;
            let frame = Some(self.frame_base(&u, &spe, pc));
            return Ok((unit, Scope { pc, entry, frame }, vars, name));
        }
        Err(DwarfError::NoFunctionAt { pc })
    }

    /// Parameters (`top`: direct children) and variables of a scope and of
    /// its lexical blocks holding `pc` (inner declarations first).
    fn collect_vars(
        &self,
        u: &U<'_>,
        node: gimli::EntriesTreeNode<'_, '_, '_, R>,
        pc: u64,
        top: bool,
        nparam: &mut usize,
        vars: &mut Vec<VarDie>,
    ) -> Result<(), DwarfError> {
        let mut children = node.children();
        let mut mine = Vec::new();
        while let Some(child) = children.next()? {
            let e = child.entry();
            match e.tag() {
                dw::DW_TAG_formal_parameter | dw::DW_TAG_variable => {
                    let param = (top && e.tag() == dw::DW_TAG_formal_parameter).then(|| {
                        *nparam += 1;
                        *nparam - 1
                    });
                    if let Some(name) = self.name(u, e)? {
                        mine.push(VarDie {
                            name,
                            param,
                            off: e.offset(),
                        });
                    }
                }
                dw::DW_TAG_lexical_block if self.holds(u, e, pc)? => {
                    self.collect_vars(u, child, pc, false, nparam, vars)?;
                }
                _ => {}
            }
        }
        for v in mine {
            if !vars.iter().any(|w| w.name == v.name) {
                vars.push(v);
            }
        }
        Ok(())
    }

    fn holds(
        &self,
        u: &U<'_>,
        e: &gimli::DebuggingInformationEntry<'_, '_, R>,
        pc: u64,
    ) -> Result<bool, DwarfError> {
        let mut it = u.die_ranges(e)?;
        while let Some(r) = it.next()? {
            if r.begin <= pc && pc < r.end {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The entry address of `e` when it is the subprogram of `func` (by
    /// name, or at the address of the symbol `func`).
    pub(in crate::codegen) fn entry_of(
        &self,
        u: &U<'_>,
        e: &gimli::DebuggingInformationEntry<'_, '_, R>,
        func: &str,
    ) -> Result<Option<u64>, DwarfError> {
        if e.tag() != dw::DW_TAG_subprogram {
            return Ok(None);
        }
        let Some(pc) = self.low_pc(u, e)? else {
            return Ok(None);
        };
        Ok(self.is_function_at(u, e, func, pc)?.then_some(pc))
    }

    pub(super) fn low_pc(
        &self,
        u: &U<'_>,
        e: &gimli::DebuggingInformationEntry<'_, '_, R>,
    ) -> Result<Option<u64>, DwarfError> {
        match e.attr_value(dw::DW_AT_low_pc)? {
            Some(v) => Ok(u.attr_address(v)?),
            None => Ok(None),
        }
    }

    /// The frame base of a subprogram at `pc` as (register, offset):
    /// `DW_OP_call_frame_cfa` (GCC) through the CFA rule of `.eh_frame`,
    /// or a register (clang's `DW_OP_reg6`).
    fn frame_base(
        &self,
        u: &U<'_>,
        sp: &gimli::DebuggingInformationEntry<'_, '_, R>,
        pc: u64,
    ) -> Result<(usize, i64), DwarfError> {
        let Some(AttributeValue::Exprloc(expr)) = sp.attr_value(dw::DW_AT_frame_base)? else {
            return Err(DwarfError::NoFrameBase);
        };
        let mut ops = expr.operations(u.unit.encoding());
        match ops.next()? {
            Some(Operation::Register { register }) => DWARF_REGS
                .get(register.0 as usize)
                .map(|&r| (r, 0))
                .ok_or(DwarfError::FrameBaseRegister),
            Some(Operation::CallFrameCFA) => self.cfa(pc),
            _ => Err(DwarfError::FrameBase),
        }
    }

    /// The CFA at `pc` as (register, offset), from `.eh_frame`.
    fn cfa(&self, pc: u64) -> Result<(usize, i64), DwarfError> {
        use gimli::UnwindSection;
        let Some((data, eh_addr, text)) = self.eh_frame.as_ref() else {
            return Err(DwarfError::NoEhFrame);
        };
        let eh = gimli::EhFrame::new(data, gimli::LittleEndian);
        let bases = gimli::BaseAddresses::default()
            .set_eh_frame(*eh_addr)
            .set_text(*text);
        let mut ctx = Box::new(gimli::UnwindContext::new());
        let row = eh
            .unwind_info_for_address(&bases, &mut ctx, pc, gimli::EhFrame::cie_from_offset)
            .map_err(|error| DwarfError::NoCallFrameInfo { pc, error })?;
        match row.cfa() {
            gimli::CfaRule::RegisterAndOffset { register, offset } => DWARF_REGS
                .get(register.0 as usize)
                .map(|&r| (r, *offset))
                .ok_or(DwarfError::CfaRegister),
            _ => Err(DwarfError::CfaExpression),
        }
    }

    /// Where a variable is at the scope's address.
    pub(super) fn place(&self, u: &U<'_>, v: &VarDie, scope: &Scope) -> Result<Place, DwarfError> {
        let e = u.entry(v.off)?;
        let Some(expr) = self.location_at(u, &e, scope.pc)? else {
            return Err(DwarfError::OptimizedOut);
        };
        let mut ops = expr.operations(u.unit.encoding());
        let first = ops.next()?;
        let second = ops.next()?;
        let reg = |r: gimli::Register| DWARF_REGS.get(r.0 as usize).copied();
        match (first, second) {
            (Some(Operation::Register { register }), None) => reg(register)
                .map(|r| Place::Value(vec![Op::Reg(r)]))
                .ok_or(DwarfError::Register),
            // The value the register had at the function's entry: the
            // register, at the entry only (elsewhere it may have changed).
            (Some(Operation::EntryValue { .. }), _) if !scope.entry => {
                Err(DwarfError::EntryValueOnly)
            }
            (Some(Operation::EntryValue { expression }), Some(Operation::StackValue)) => {
                let mut inner = gimli::Expression(expression).operations(u.unit.encoding());
                match inner.next()? {
                    Some(Operation::Register { register }) => reg(register)
                        .map(|r| Place::Value(vec![Op::Reg(r)]))
                        .ok_or(DwarfError::Register),
                    _ => Err(DwarfError::EntryValue),
                }
            }
            (
                Some(Operation::RegisterOffset {
                    register, offset, ..
                }),
                None,
            ) => reg(register)
                .map(|r| Place::Mem(vec![Op::Reg(r)], offset))
                .ok_or(DwarfError::Register),
            (Some(Operation::UnsignedConstant { value }), Some(Operation::StackValue)) => {
                Ok(Place::Value(vec![Op::Const(value as i64)]))
            }
            (Some(Operation::SignedConstant { value }), Some(Operation::StackValue)) => {
                Ok(Place::Value(vec![Op::Const(value)]))
            }
            // After the entry: on the frame (the function's frame base).
            (Some(Operation::FrameOffset { offset }), None) if !scope.entry => match &scope.frame {
                Some(Ok((r, off))) => Ok(Place::Mem(vec![Op::Reg(*r)], off + offset)),
                Some(Err(why)) => Err(why.clone()),
                None => Err(DwarfError::NoFrameBase),
            },
            // -O0: a parameter the prologue stores on the frame is still in
            // its SysV argument register at the entry.
            (Some(Operation::FrameOffset { .. }), _) => match v.param {
                Some(i) if i < ARG_REGS.len() => match self.ty(u, self.type_of(u, &e)?) {
                    Ty::Int { .. } | Ty::Ptr { .. } => Ok(Place::Value(vec![Op::Reg(ARG_REGS[i])])),
                    _ => Err(DwarfError::ParamInRegisters),
                },
                _ => Err(DwarfError::LocalAtEntry),
            },
            (Some(Operation::Address { .. }), _) => Err(DwarfError::Static),
            _ => Err(DwarfError::Location),
        }
    }

    /// The location expression of a DIE covering `pc`.
    fn location_at(
        &self,
        u: &U<'_>,
        e: &gimli::DebuggingInformationEntry<'_, '_, R>,
        pc: u64,
    ) -> Result<Option<gimli::Expression<R>>, DwarfError> {
        let Some(loc) = e.attr_value(dw::DW_AT_location)? else {
            return Ok(None);
        };
        Ok(match loc {
            AttributeValue::Exprloc(expr) => Some(expr),
            other => {
                let Some(mut list) = u.attr_locations(other)? else {
                    return Ok(None);
                };
                let mut found = None;
                while let Some(l) = list.next()? {
                    if l.range.begin <= pc && pc < l.range.end {
                        found = Some(l.data);
                        break;
                    }
                }
                found
            }
        })
    }
}
