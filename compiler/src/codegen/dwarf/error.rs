//! Why the DWARF reader (`dwarf.rs`, `dwarf_access.rs`, `dwarf_lines.rs`)
//! found no answer. Each message reads as the end of a diagnostic
//! ("`$p`: ..."); callers add what was being resolved.
//!
//! No variant has a `#[source]`: the message already includes the cause,
//! and ptap prints an error with its causes (`{:#}`), which would repeat it.

use std::path::PathBuf;
use std::sync::Arc;

/// An error of the DWARF reader.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DwarfError {
    #[error("bad DWARF: {0}")]
    Gimli(gimli::Error),
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        /// Shared: the reader's results are cached and cloned.
        error: Arc<std::io::Error>,
    },
    #[error("{}: {error}", path.display())]
    Object { path: PathBuf, error: object::Error },

    // Functions.
    #[error("no debug information for function `{func}` (compile the target with -g)")]
    NoFunction { func: String },
    /// For listings, which do not ask for `-g`.
    #[error("no debug information for function `{func}`")]
    NoFunctionInfo { func: String },
    #[error("no function holds the address {pc:#x} in the debug information (compile the target with -g)")]
    NoFunctionAt { pc: u64 },
    #[error("the functions named `{func}` return different types")]
    ReturnTypesDiffer { func: String },
    #[error("the return value of `{func}`: {why}")]
    ReturnValue { func: String, why: Box<DwarfError> },
    #[error("`{func}` returns void")]
    ReturnsVoid { func: String },

    // A scalar's type.
    #[error("it has no type")]
    NoType,
    #[error("its type is not 1, 2, 4 or 8 bytes")]
    ScalarSize,
    #[error("floating-point values are not supported")]
    Float,
    #[error("it is not a number or a pointer")]
    NotScalar,
    #[error("its type chain is too long")]
    TypeChainTooLong,

    // The text of a path (`p->a[2]$`).
    #[error("an unclosed `[`")]
    UnclosedBracket,
    #[error("a bad index")]
    BadIndex,
    #[error("cannot read `{rest}`")]
    BadPath { rest: String },

    // Variables, globals and types by name.
    #[error("`{func}` has no parameter or variable `{name}` in the debug information")]
    NoVariable { func: String, name: String },
    #[error("no variable name (write `@var(\"name\")` or `@var(\"name@file.c\")`)")]
    NoVarName,
    #[error("`{name}` has a location list, not a fixed address")]
    LocationList { name: String },
    #[error("`{name}` is not at a fixed address (thread-local or optimized out)")]
    NotFixedAddress { name: String },
    #[error("`{name}` is only declared here (extern): its definition is in another object")]
    ExternOnly { name: String },
    #[error("no global or static variable `{name}` in a compilation unit named `{file}`")]
    NoGlobalInFile { name: String, file: String },
    #[error("no global or static variable `{name}` in the debug information")]
    NoGlobal { name: String },
    #[error("no type `{name}` in the debug information")]
    NoTypeNamed { name: String },

    // Where a variable is.
    #[error("the function has no frame base")]
    NoFrameBase,
    #[error("an unsupported frame base register")]
    FrameBaseRegister,
    #[error("an unsupported frame base")]
    FrameBase,
    #[error("no .eh_frame to find the frame base")]
    NoEhFrame,
    #[error("no call frame information at {pc:#x} ({error})")]
    NoCallFrameInfo { pc: u64, error: gimli::Error },
    #[error("an unsupported CFA register")]
    CfaRegister,
    #[error("the CFA is an expression here")]
    CfaExpression,
    #[error("its value is optimized out")]
    OptimizedOut,
    #[error("it is in a register ptap cannot read")]
    Register,
    #[error("it is only known as a register's value at the function's entry (DW_OP_entry_value): probe the function's entry")]
    EntryValueOnly,
    #[error("an unsupported DW_OP_entry_value")]
    EntryValue,
    #[error("a parameter passed by value in several registers is not supported at the entry")]
    ParamInRegisters,
    #[error("a local variable has no value yet at the function's entry")]
    LocalAtEntry,
    #[error("static variables are not supported")]
    Static,
    #[error("its location at the function's entry is not supported (not a register or memory at a register)")]
    Location,

    // The steps of a path and its value (`shown`: the path so far).
    #[error("`{shown}` does not point to a struct")]
    NotStructPointer { shown: String },
    #[error("`{shown}` ({ty}) has no member `{member}`")]
    NoMember {
        shown: String,
        ty: String,
        member: String,
    },
    #[error("`{shown}` ({ty}) is not a struct or a pointer to one: no member `{member}`")]
    NotStruct {
        shown: String,
        ty: String,
        member: String,
    },
    #[error("`{shown}` is a struct kept in registers: not supported")]
    StructInRegisters { shown: String },
    #[error("`{shown}` is kept in registers: not supported")]
    InRegisters { shown: String },
    #[error("`{shown}` points to a type of unknown size")]
    PointeeSize { shown: String },
    #[error("`{shown}` has elements of unknown size")]
    ElementSize { shown: String },
    #[error("index {index} is out of `{shown}`'s {count} elements")]
    IndexOut {
        index: u64,
        shown: String,
        count: u64,
    },
    #[error("`{shown}` ({ty}) is not an array or a pointer")]
    NotIndexable { shown: String, ty: String },
    #[error("`{shown}` is a struct: use `{shown}->MEMBER`, or `{shown}$` to print it")]
    IsStruct { shown: String },
    #[error("`{shown}` has no type")]
    Untyped { shown: String },
    #[error("`{shown}` is not a number or a pointer")]
    NotNumber { shown: String },

    // Source lines.
    #[error("no source file `{file}` in the debug line table (compile the target with -g)")]
    NoSourceFile { file: String },
    #[error("no function `{func}` defined in `{file}` in the debug information (compile the target with -g)")]
    NoFunctionInFile { func: String, file: String },
    #[error("the function has no code")]
    NoCode,
    #[error("line {line} has no code in `{func}`")]
    LineNotInFunction { line: u64, func: String },
    /// `before`, `after`: the nearest lines of the file that have code.
    #[error("no code at line {line} of `{file}`{}", nearest(*before, *after))]
    NoCodeAtLine {
        line: u64,
        file: String,
        before: Option<u64>,
        after: Option<u64>,
    },
}

impl From<gimli::Error> for DwarfError {
    fn from(e: gimli::Error) -> DwarfError {
        DwarfError::Gimli(e)
    }
}

/// The hint after "no code at line N of `file`".
fn nearest(before: Option<u64>, after: Option<u64>) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!(" (the nearest lines with code are {b} and {a})"),
        (Some(n), None) | (None, Some(n)) => format!(" (the nearest line with code is {n})"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_data() {
        let e = DwarfError::ReturnValue {
            func: "f".into(),
            why: Box::new(DwarfError::Float),
        };
        assert_eq!(
            e.to_string(),
            "the return value of `f`: floating-point values are not supported"
        );
        let e = DwarfError::NoCodeAtLine {
            line: 7,
            file: "a.c".into(),
            before: Some(5),
            after: None,
        };
        assert_eq!(
            e.to_string(),
            "no code at line 7 of `a.c` (the nearest line with code is 5)"
        );
        assert_eq!(
            DwarfError::NoFunctionAt { pc: 0x10 }.to_string(),
            "no function holds the address 0x10 in the debug information (compile the target with -g)"
        );
    }
}
