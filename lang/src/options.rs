//! Front-end options: guru mode, script arguments (`$1`, `@1`), `-D NAME=VAL`.
use crate::checked::Const;
use crate::diag::{self, Diagnostic, ToDiagnostic};

/// What the command line gives the front end.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `-g`: allow writing registers and target memory.
    pub guru: bool,
    /// Script arguments, `$1` is `args[0]`.
    pub args: Vec<String>,
    /// `-D NAME=VAL`, as written.
    pub defines: Vec<String>,
}

/// Run-time limits (`-D` overrides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Statements per probe hit.
    pub maxaction: u64,
    pub maxstringlen: u64,
    pub maxmapentries: u64,
    /// Runtime errors tolerated before the session ends (0: the first ends it).
    pub maxerrors: u64,
    pub maxskipped: u64,
    /// Default kretprobe maxactive; `None`: the runtime's default.
    pub kretactive: Option<u64>,
    /// Deepest function-call nesting (bounds recursion).
    pub maxnesting: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            maxaction: 1000,
            maxstringlen: 512,
            maxmapentries: 2048,
            maxerrors: 0,
            maxskipped: 100,
            kretactive: None,
            maxnesting: 10,
        }
    }
}

/// (name, smallest, largest) of every `-D` name.
const DEFINES: &[(&str, u64, u64)] = &[
    ("MAXACTION", 1, 1 << 40),
    ("MAXSTRINGLEN", 1, 1 << 20),
    ("MAXMAPENTRIES", 1, 1 << 28),
    ("MAXERRORS", 0, 1 << 40),
    ("MAXSKIPPED", 0, 1 << 40),
    ("KRETACTIVE", 1, 1 << 16),
    ("MAXNESTING", 1, 1 << 16),
];

/// Errors in options (no source position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionError {
    DefineSyntax(String),
    UnknownDefine {
        name: String,
        suggestion: Option<&'static str>,
    },
    DefineValue {
        name: String,
        value: String,
        min: u64,
        max: u64,
    },
}

impl ToDiagnostic for OptionError {
    fn to_diagnostic(&self) -> Diagnostic {
        match self {
            OptionError::DefineSyntax(d) => {
                diag::error(format!("`-D {d}` is not of the form NAME=VALUE"))
            }
            OptionError::UnknownDefine { name, suggestion } => {
                let names: Vec<&str> = DEFINES.iter().map(|d| d.0).collect();
                let mut d = diag::error(format!("unknown `-D` name `{name}`"));
                d = match suggestion {
                    Some(s) => d.with_notes(vec![format!("help: did you mean `{s}`?")]),
                    None => d.with_notes(vec![format!("help: known names: {}", names.join(", "))]),
                };
                d
            }
            OptionError::DefineValue {
                name,
                value,
                min,
                max,
            } => diag::error(format!(
                "`-D {name}={value}`: the value must be a whole number from {min} to {max}"
            )),
        }
    }
}

impl Limits {
    /// Applies every `-D`; returns all errors.
    pub fn from_defines(defines: &[String]) -> Result<Limits, Vec<OptionError>> {
        let mut limits = Limits::default();
        let mut errors = Vec::new();
        for d in defines {
            let Some((name, value)) = d.split_once('=') else {
                errors.push(OptionError::DefineSyntax(d.clone()));
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            let Some(&(_, min, max)) = DEFINES.iter().find(|x| x.0 == name) else {
                let suggestion = diag::suggest(name, DEFINES.iter().map(|x| x.0));
                errors.push(OptionError::UnknownDefine {
                    name: name.to_string(),
                    suggestion,
                });
                continue;
            };
            let v = match value.parse::<u64>() {
                Ok(v) if (min..=max).contains(&v) => v,
                _ => {
                    errors.push(OptionError::DefineValue {
                        name: name.to_string(),
                        value: value.to_string(),
                        min,
                        max,
                    });
                    continue;
                }
            };
            match name {
                "MAXACTION" => limits.maxaction = v,
                "MAXSTRINGLEN" => limits.maxstringlen = v,
                "MAXMAPENTRIES" => limits.maxmapentries = v,
                "MAXERRORS" => limits.maxerrors = v,
                "MAXSKIPPED" => limits.maxskipped = v,
                "KRETACTIVE" => limits.kretactive = Some(v),
                _ => limits.maxnesting = v,
            }
        }
        if errors.is_empty() {
            Ok(limits)
        } else {
            Err(errors)
        }
    }
}

/// The value of `$N`: a long when the whole argument is an integer (decimal,
/// `0x` hex, optional `-`), else a string — as SystemTap does.
pub fn dollar_arg(text: &str) -> Const {
    let t = text.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t),
    };
    let parsed = if let Some(h) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if !body.is_empty() && body.chars().all(|c| c.is_ascii_digit()) {
        body.parse::<u64>().ok().filter(|v| *v <= 1 << 63)
    } else {
        None
    };
    match parsed {
        Some(v) => {
            let v = v as i64;
            Const::Long(if neg { v.wrapping_neg() } else { v })
        }
        None => Const::Str(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defines() {
        let l = Limits::from_defines(&["MAXACTION=50".into(), "KRETACTIVE=4".into()]).unwrap();
        assert_eq!(l.maxaction, 50);
        assert_eq!(l.kretactive, Some(4));
        let e = Limits::from_defines(&["MAXACTON=1".into(), "MAXSTRINGLEN=0".into(), "X".into()])
            .unwrap_err();
        assert_eq!(e.len(), 3);
        assert!(matches!(
            &e[0],
            OptionError::UnknownDefine {
                suggestion: Some("MAXACTION"),
                ..
            }
        ));
    }

    #[test]
    fn script_args() {
        assert_eq!(dollar_arg("42"), Const::Long(42));
        assert_eq!(dollar_arg("-0x10"), Const::Long(-16));
        assert_eq!(dollar_arg("12ab"), Const::Str("12ab".into()));
        assert_eq!(dollar_arg(""), Const::Str(String::new()));
    }
}
