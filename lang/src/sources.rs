//! The files of one session (the script, `-e` text, stdlib files loaded on demand).
use codespan_reporting::files::{Files, SimpleFiles};

use crate::span::{FileId, Span};

#[derive(Clone, Default)]
pub struct Sources {
    files: SimpleFiles<String, String>,
    count: u32,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sources({} files)", self.count)
    }
}

impl Sources {
    pub fn new() -> Sources {
        Sources::default()
    }

    /// Adds a file; `name` is how diagnostics name it.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        let id = self.files.add(name.into(), text.into());
        self.count += 1;
        FileId(id as u32)
    }

    pub fn name(&self, file: FileId) -> &str {
        self.files
            .get(file.0 as usize)
            .map(|f| f.name().as_str())
            .unwrap_or("<unknown>")
    }

    pub fn text(&self, file: FileId) -> &str {
        self.files
            .get(file.0 as usize)
            .map(|f| f.source().as_str())
            .unwrap_or("")
    }

    /// The source text a span covers.
    pub fn slice(&self, span: Span) -> &str {
        self.text(span.file).get(span.range()).unwrap_or("")
    }

    /// 1-based line and column of the span's start (for runtime messages).
    pub fn line_col(&self, span: Span) -> (usize, usize) {
        let id = span.file.0 as usize;
        let start = span.start as usize;
        match self.files.line_index(id, start) {
            Ok(line) => {
                let col = self.files.column_number(id, line, start).unwrap_or(1);
                (line + 1, col)
            }
            Err(_) => (1, 1),
        }
    }

    /// `file:line:col` of a span.
    pub fn location(&self, span: Span) -> String {
        let (l, c) = self.line_col(span);
        format!("{}:{l}:{c}", self.name(span.file))
    }

    pub(crate) fn files(&self) -> &SimpleFiles<String, String> {
        &self.files
    }
}
