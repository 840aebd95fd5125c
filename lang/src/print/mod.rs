//! The -p1 (parse tree) and -p2 (elaborated script) printers.
pub mod p1;
pub mod p2;
