//! ptap-runtime: injected into target processes.
