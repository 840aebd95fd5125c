//! ptap-arch: x86-64 only code.
