//! The standard library (stdlib-scripts/*.pt), embedded at build time.
//!
//! A function a script calls but does not define is looked up here; the file
//! that defines it is parsed and its function loaded, as SystemTap does with
//! tapsets. Diagnostics in these files name them `stdlib-scripts/NAME.pt`.
//! syscalls.pt also holds the system-call alias table as directive lines:
//! `# alias sys_open = open openat openat2 creat`.

/// (diagnostic name, text) of every stdlib file.
pub const FILES: &[(&str, &str)] = &[
    (
        "stdlib-scripts/errno.pt",
        include_str!("../../stdlib-scripts/errno.pt"),
    ),
    (
        "stdlib-scripts/syscalls.pt",
        include_str!("../../stdlib-scripts/syscalls.pt"),
    ),
    (
        "stdlib-scripts/indent.pt",
        include_str!("../../stdlib-scripts/indent.pt"),
    ),
    (
        "stdlib-scripts/report.pt",
        include_str!("../../stdlib-scripts/report.pt"),
    ),
    (
        "stdlib-scripts/stap_syscalls.pt",
        include_str!("../../stdlib-scripts/stap_syscalls.pt"),
    ),
    (
        "stdlib-scripts/stap_tapset.pt",
        include_str!("../../stdlib-scripts/stap_tapset.pt"),
    ),
    (
        "stdlib-scripts/stap_context.pt",
        include_str!("../../stdlib-scripts/stap_context.pt"),
    ),
    (
        "stdlib-scripts/stap_tokenize.pt",
        include_str!("../../stdlib-scripts/stap_tokenize.pt"),
    ),
    (
        "stdlib-scripts/stap_conversions.pt",
        include_str!("../../stdlib-scripts/stap_conversions.pt"),
    ),
];

/// Which stdlib file defines function `name`: a cheap textual scan for
/// `function name` (followed by `(` or `:`), so that only that file is parsed.
pub fn file_defining(name: &str) -> Option<usize> {
    FILES.iter().position(|(_, text)| defines(text, name))
}

fn defines(text: &str, name: &str) -> bool {
    text.lines().any(|line| {
        let Some(rest) = line.trim_start().strip_prefix("function") else {
            return false;
        };
        let rest = rest.trim_start();
        rest.strip_prefix(name)
            .is_some_and(|after| matches!(after.trim_start().chars().next(), Some('(' | ':')))
    })
}

/// Every function name the stdlib defines (for "did you mean" hints).
pub fn function_names() -> Vec<String> {
    let mut names = Vec::new();
    for (_, text) in FILES {
        for line in text.lines() {
            if let Some(rest) = line.trim_start().strip_prefix("function ") {
                let name: String = rest
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.push(name);
                }
            }
        }
    }
    names
}

/// A syscall alias from syscalls.pt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub name: String,
    pub calls: Vec<String>,
}

/// Every `# alias NAME = call call ...` line of the stdlib.
pub fn aliases() -> Vec<Alias> {
    let mut out = Vec::new();
    for (_, text) in FILES {
        for line in text.lines() {
            let Some(rest) = line.trim_start().strip_prefix('#') else {
                continue;
            };
            let Some(rest) = rest.trim_start().strip_prefix("alias ") else {
                continue;
            };
            let Some((name, calls)) = rest.split_once('=') else {
                continue;
            };
            out.push(Alias {
                name: name.trim().to_string(),
                calls: calls.split_whitespace().map(str::to_string).collect(),
            });
        }
    }
    out
}

/// The calls an alias stands for.
pub fn alias(name: &str) -> Option<Vec<String>> {
    aliases()
        .into_iter()
        .find(|a| a.name == name)
        .map(|a| a.calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_open_alias() {
        assert_eq!(
            alias("sys_open").unwrap(),
            vec!["open", "openat", "openat2", "creat"]
        );
    }

    #[test]
    fn every_alias_member_is_a_syscall() {
        for a in aliases() {
            assert!(a.name.starts_with("sys_"), "{}", a.name);
            for c in &a.calls {
                assert!(crate::syscalls::number(c).is_some(), "{} in {}", c, a.name);
            }
        }
    }

    #[test]
    fn every_function_has_a_doc_comment() {
        for (file, text) in FILES {
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.starts_with("function ") {
                    assert!(
                        i > 0 && lines[i - 1].starts_with("///"),
                        "{file}:{}: function without a /// doc comment",
                        i + 1
                    );
                }
            }
        }
    }

    #[test]
    fn finds_defining_file() {
        assert_eq!(file_defining("errno_str"), Some(0));
        assert_eq!(file_defining("errno"), None);
        assert!(function_names().contains(&"errno_str".to_string()));
    }
}
