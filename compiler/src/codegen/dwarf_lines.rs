//! Points by source line (`kprobe("file.c:42")`, `func@file.c:42`,
//! `func@file.c`), found in the DWARF line table (gimli) of the main
//! executable; each point becomes one `0xADDR` point per address where
//! code of the line starts (several for a line the compiler duplicated,
//! and one per inlined copy of a function).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::Path;

use gimli::{constants as dw, Reader};
use ptap_lang::checked::{CheckedScript, Module, PointKind, Target};

use super::dwarf::{Debug, DwarfError, R};
use super::CodegenError;

/// One address a line point resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineAddr {
    /// Link-time address in the main executable.
    pub addr: u64,
    /// The function (or inlined copy) the address is in, for `-v`.
    pub func: String,
    /// The address is in an inlined copy of `func`.
    pub inlined: bool,
}

type U<'a> = gimli::UnitRef<'a, R>;

/// Does a line-table / compile-unit path name the file `want` (a name,
/// or the end of a path: `dir/file.c`)?
fn same_file(path: &str, want: &str) -> bool {
    if want.is_empty() {
        return true;
    }
    let want = want.trim_start_matches("./");
    path == want || path.ends_with(&format!("/{want}"))
}

impl Debug {
    /// The addresses of `file:line` (in function `func` when given), or of
    /// `func`'s entries defined in `file` (its inlined copies too) when
    /// `line` is None.
    pub fn line_addresses(
        &self,
        func: Option<&str>,
        file: &str,
        line: Option<u32>,
    ) -> Result<Vec<LineAddr>, DwarfError> {
        let mut out: Vec<LineAddr> = Vec::new();
        // Lines of `file` that have code, for the error.
        let mut lines: BTreeSet<u64> = BTreeSet::new();
        let mut file_seen = false;
        let mut units = self.dwarf.units();
        while let Some(h) = units.next()? {
            let unit = self.dwarf.unit(h)?;
            let u = unit.unit_ref(&self.dwarf);
            let funcs = self.function_ranges(&u)?;
            let Some(line) = line else {
                // `func@file.c`: entries of the function's definitions and
                // inlined copies whose declaration is in the file.
                let func = func.unwrap_or_default();
                for f in &funcs {
                    if f.name_matches(self, &u, func)? && self.decl_in(&u, f, file)? {
                        file_seen = true;
                        if let Some(&(low, _)) = f.ranges.first() {
                            out.push(LineAddr {
                                addr: f.entry.unwrap_or(low),
                                func: f.name.clone(),
                                inlined: f.inlined,
                            });
                        }
                    }
                }
                continue;
            };
            let Some(program) = unit.line_program.clone() else {
                continue;
            };
            let mut rows = program.rows();
            // The previous row's line in `file` (None: another file or a new sequence).
            let mut prev: Option<u64> = None;
            while let Some((header, row)) = rows.next_row()? {
                if row.end_sequence() {
                    prev = None;
                    continue;
                }
                let Some(fe) = header.file(row.file_index()) else {
                    prev = None;
                    continue;
                };
                let name = u.attr_string(fe.path_name())?;
                let name = name.to_string_lossy()?;
                let dir = match fe.directory(header) {
                    Some(d) => u.attr_string(d)?.to_string_lossy()?.into_owned(),
                    None => String::new(),
                };
                let path = if name.starts_with('/') || dir.is_empty() {
                    name.into_owned()
                } else {
                    format!("{dir}/{name}")
                };
                if !same_file(&path, file) {
                    prev = None;
                    continue;
                }
                file_seen = true;
                let Some(l) = row.line().map(|l| l.get()) else {
                    continue;
                };
                lines.insert(l);
                // The first row of each run of the line's code.
                if l == u64::from(line) && row.is_stmt() && prev != Some(l) {
                    let a = row.address();
                    let owner = funcs
                        .iter()
                        .filter(|f| f.contains(a))
                        // The innermost: the smallest range.
                        .min_by_key(|f| f.size());
                    let keep = match (func, owner) {
                        (None, _) => true,
                        (Some(want), Some(f)) => {
                            funcs
                                .iter()
                                .filter(|g| g.contains(a))
                                .map(|g| g.name_matches(self, &u, want))
                                .collect::<Result<Vec<_>, _>>()?
                                .into_iter()
                                .any(|m| m)
                                || f.name == want
                        }
                        (Some(_), None) => false,
                    };
                    if keep && !out.iter().any(|x| x.addr == a) {
                        out.push(LineAddr {
                            addr: a,
                            func: owner.map(|f| f.name.clone()).unwrap_or_default(),
                            inlined: owner.is_some_and(|f| f.inlined),
                        });
                    }
                }
                prev = Some(l);
            }
        }
        if !out.is_empty() {
            out.sort_by_key(|x| x.addr);
            return Ok(out);
        }
        if !file_seen {
            let file = file.into();
            return Err(match line {
                Some(_) => DwarfError::NoSourceFile { file },
                None => DwarfError::NoFunctionInFile {
                    func: func.unwrap_or_default().into(),
                    file,
                },
            });
        }
        let Some(line) = line else {
            return Err(DwarfError::NoCode);
        };
        let line = u64::from(line);
        Err(match func {
            Some(f) if lines.contains(&line) => DwarfError::LineNotInFunction {
                line,
                func: f.into(),
            },
            _ => DwarfError::NoCodeAtLine {
                line,
                file: file.into(),
                before: lines.range(..line).next_back().copied(),
                after: lines.range(line + 1..).next().copied(),
            },
        })
    }

    /// Every function and inlined copy of a unit with its address ranges.
    fn function_ranges(&self, u: &U<'_>) -> Result<Vec<FuncRange>, DwarfError> {
        let mut out = Vec::new();
        let mut cursor = u.entries();
        while let Some((_, e)) = cursor.next_dfs()? {
            let inlined = e.tag() == dw::DW_TAG_inlined_subroutine;
            if !(inlined || e.tag() == dw::DW_TAG_subprogram) {
                continue;
            }
            let mut ranges = Vec::new();
            let mut it = u.die_ranges(e)?;
            while let Some(r) = it.next()? {
                if r.begin < r.end {
                    ranges.push((r.begin, r.end));
                }
            }
            if ranges.is_empty() {
                continue;
            }
            let entry = match e.attr_value(dw::DW_AT_entry_pc)? {
                Some(v) => u.attr_address(v)?,
                None => None,
            };
            // The lowest range first: the entry of a function without DW_AT_entry_pc.
            ranges.sort();
            let entry = entry.or_else(|| {
                e.attr_value(dw::DW_AT_low_pc)
                    .ok()
                    .flatten()
                    .and_then(|v| u.attr_address(v).ok().flatten())
            });
            out.push(FuncRange {
                name: self.name(u, e)?.unwrap_or_default(),
                off: e.offset(),
                ranges,
                entry,
                inlined,
            });
        }
        Ok(out)
    }

    /// Is the function's declaration (or its unit, for a definition
    /// without DW_AT_decl_file) in `file`?
    fn decl_in(&self, u: &U<'_>, f: &FuncRange, file: &str) -> Result<bool, DwarfError> {
        let mut e = u.entry(f.off)?;
        // An inlined copy or concrete instance: the abstract function's declaration.
        for _ in 0..4 {
            if e.attr_value(dw::DW_AT_decl_file)?.is_some() {
                break;
            }
            let origin = [dw::DW_AT_abstract_origin, dw::DW_AT_specification]
                .into_iter()
                .find_map(|at| match e.attr_value(at).ok().flatten() {
                    Some(gimli::AttributeValue::UnitRef(o)) => Some(o),
                    _ => None,
                });
            match origin {
                Some(o) => e = u.entry(o)?,
                None => break,
            }
        }
        let Some(gimli::AttributeValue::FileIndex(i)) = e.attr_value(dw::DW_AT_decl_file)? else {
            // No declaration file: the unit's name.
            let name = match u.name.as_ref() {
                Some(n) => n.to_string_lossy()?.into_owned(),
                None => return Ok(false),
            };
            return Ok(same_file(&name, file));
        };
        let Some(program) = u.line_program.as_ref() else {
            return Ok(false);
        };
        let header = program.header();
        let Some(fe) = header.file(i) else {
            return Ok(false);
        };
        let name = u.attr_string(fe.path_name())?;
        let name = name.to_string_lossy()?;
        Ok(same_file(&name, file)
            || match fe.directory(header) {
                Some(d) => {
                    let dir = u.attr_string(d)?;
                    let dir = dir.to_string_lossy()?;
                    same_file(&format!("{dir}/{name}"), file)
                }
                None => false,
            })
    }
}

/// A function or inlined copy: its address ranges.
struct FuncRange {
    name: String,
    off: gimli::UnitOffset,
    ranges: Vec<(u64, u64)>,
    entry: Option<u64>,
    inlined: bool,
}

impl FuncRange {
    fn contains(&self, a: u64) -> bool {
        self.ranges.iter().any(|&(b, e)| b <= a && a < e)
    }

    fn size(&self) -> u64 {
        self.ranges.iter().map(|&(b, e)| e - b).sum()
    }

    /// Named `want` (its DWARF name, or its symbol / demangled name).
    fn name_matches(&self, d: &Debug, u: &U<'_>, want: &str) -> Result<bool, DwarfError> {
        if self.name == want {
            return Ok(true);
        }
        let e = u.entry(self.off)?;
        d.is_function_at(u, &e, want, u64::MAX)
    }
}

static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `-v`: print the addresses each source-line point resolves to.
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The script with every line point replaced by one `0xADDR` point per
/// address of the line (the point's text is kept, for `pp()`). `-v`
/// prints what each line point resolved to.
pub(crate) fn expand<'s>(
    script: &'s CheckedScript,
    exe: Option<&Path>,
) -> Result<Cow<'s, CheckedScript>, CodegenError> {
    let has_line = script.probes.iter().any(|p| {
        p.points.iter().any(|pt| {
            matches!(target_of(&pt.kind), Some(Target::Line { .. })) || inlined_candidate(&pt.kind)
        })
    });
    if !has_line {
        return Ok(Cow::Borrowed(script));
    }
    let mut out = script.clone();
    let mut debug: Option<Debug> = None;
    for p in &mut out.probes {
        let mut points = Vec::new();
        for pt in &p.points {
            // A function of the executable that only exists inlined (no
            // symbol): its inlined copies, as `func@file.c` finds them.
            if let (true, Some(exe), Some(Target::Symbol { name, .. })) =
                (inlined_candidate(&pt.kind), exe, target_of(&pt.kind))
            {
                if debug.is_none() {
                    debug = Debug::load(exe).ok();
                }
                let copies = match debug.as_ref() {
                    Some(d) if !d.has_symbol(name) => {
                        d.line_addresses(Some(name), "", None).unwrap_or_default()
                    }
                    _ => Vec::new(),
                };
                if copies.is_empty() || copies.iter().any(|a| !a.inlined) {
                    points.push(pt.clone());
                    continue;
                }
                for a in copies {
                    if VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
                        eprintln!("{} -> {:#x} in {} (inlined)", pt.text, a.addr, a.func);
                    }
                    let mut q = pt.clone();
                    set_target(&mut q.kind, Target::Address(a.addr));
                    points.push(q);
                }
                continue;
            }
            let Some(Target::Line {
                module,
                func,
                file,
                line,
            }) = target_of(&pt.kind)
            else {
                points.push(pt.clone());
                continue;
            };
            let fail = |why: String| CodegenError::Point {
                what: why,
                span: pt.span,
            };
            let exe = exe.ok_or_else(|| {
                fail(format!(
                    "{}: a source line needs the target executable (-c CMD or -x PID)",
                    pt.text
                ))
            })?;
            if let Some(m) = module {
                if !names_exe(m, exe) {
                    return Err(fail(format!(
                        "{}: source lines are found in the main executable only ({}), not in libraries",
                        pt.text,
                        exe.display()
                    )));
                }
            }
            if debug.is_none() {
                debug = Some(Debug::load(exe).map_err(|why| fail(why.to_string()))?);
            }
            let Some(d) = debug.as_ref() else {
                continue;
            };
            let addrs = d
                .line_addresses(func.as_deref(), file, *line)
                .map_err(|why| fail(format!("{}: {why}", pt.text)))?;
            for a in addrs {
                if VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
                    eprintln!(
                        "{} -> {:#x} in {}{}",
                        pt.text,
                        a.addr,
                        a.func,
                        if a.inlined { " (inlined)" } else { "" }
                    );
                }
                let mut q = pt.clone();
                set_target(&mut q.kind, Target::Address(a.addr));
                points.push(q);
            }
        }
        p.points = points;
    }
    Ok(Cow::Owned(out))
}

/// `kprobe(name)` of the executable: maybe a function that was only
/// inlined.
fn inlined_candidate(k: &PointKind) -> bool {
    matches!(
        k,
        PointKind::Kprobe {
            target: Target::Symbol {
                module: None,
                offset: 0,
                name,
            }
        } if !name.starts_with("sys_")
    )
}

fn target_of(k: &PointKind) -> Option<&Target> {
    match k {
        PointKind::Kprobe { target }
        | PointKind::Jprobe { target }
        | PointKind::Kretprobe { target, .. } => Some(target),
        _ => None,
    }
}

fn set_target(k: &mut PointKind, t: Target) {
    match k {
        PointKind::Kprobe { target }
        | PointKind::Jprobe { target }
        | PointKind::Kretprobe { target, .. } => *target = t,
        _ => {}
    }
}

/// Does `process("PATH")` / `NAME:` name the main executable?
fn names_exe(m: &Module, exe: &Path) -> bool {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    match m {
        Module::Path(p) => real(Path::new(p)) == real(exe),
        Module::Name(n) => exe.file_name().is_some_and(|f| f.to_string_lossy() == *n),
    }
}
