//! What the runtime's start-up and shutdown use, and what ptap shares with
//! them. The constructor itself, `ptap_rt_attach`, the fork handlers, the
//! control thread and shutdown are in the shared object's crate
//! (runtime/so/src/lifecycle.rs): ptap links this crate, never them.

pub mod install;
pub mod modcall;
pub mod panic;
pub mod quiet;

/// Environment variable set by `ptap --no-follow`.
pub const ENV_NO_FOLLOW: &str = "PTAP_NO_FOLLOW";

/// Name of the attach file, in the directory of the runtime's own file:
/// `ptap -x PID` writes `attach-PID` beside the runtime snapshot it makes
/// the process dlopen (an injected library gets no environment), and
/// removes it once the dlopen has returned.
pub fn attach_params_name(pid: i32) -> String {
    format!("attach-{pid}")
}
