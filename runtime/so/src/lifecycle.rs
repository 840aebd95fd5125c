//! The runtime's life in a target: the constructor maps the session,
//! installs the signal handlers, dlopen()s the probe module and calls its
//! init_module() before main; cleanup_module() runs at exit, or when ptap
//! asks every runtime to detach (Ctrl-C) through the session's futex word.
//!
//! `ptap -x PID` injects the runtime into a running process instead: the
//! constructor then finds an attach file beside this library (see
//! [`attach_params_name`]) and does nothing; ptap calls the exported
//! [`ptap_rt_attach`] on a thread of the process once its `dlopen` has
//! returned, and that runs the same start-up with the file's parameters.

use core::ffi::c_int;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::ffi::CString;

use ptap_rt_core::base::sys;
use ptap_rt_core::hit::threads;
use ptap_rt_core::lifecycle::quiet::Quiet;
use ptap_rt_core::lifecycle::{attach_params_name, install, modcall, panic, ENV_NO_FOLLOW};
use ptap_rt_core::session::output;
use ptap_rt_core::session::{self, Session};

static MODULE_CLEANUP: AtomicUsize = AtomicUsize::new(0);
/// The C module's path (for reports about its init and cleanup).
static MODULE_PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static SHUT: AtomicBool = AtomicBool::new(false);
static FORK_PARENT_TID: AtomicI32 = AtomicI32::new(0);
/// `ptap --no-follow`: forked children drop every probe, exec'ed
/// processes stay inert.
static NO_FOLLOW: AtomicBool = AtomicBool::new(false);

#[used]
#[link_section = ".init_array"]
static CTOR: extern "C" fn() = ptap_rt_ctor;

fn diag(s: &str) {
    output::diag(s.as_bytes());
}

fn map_session(params: &Params) -> Option<Session> {
    let try_fd = |fd: i32| -> Option<Session> {
        // SAFETY: fstat/mmap of an fd named by ptap; validated by magic below.
        unsafe {
            let mut st: libc::stat = core::mem::zeroed();
            if libc::fstat(fd, &mut st) != 0 || (st.st_size as usize) < session::CONTROL_SIZE {
                return None;
            }
            let p = libc::mmap(
                core::ptr::null_mut(),
                st.st_size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if p == libc::MAP_FAILED {
                return None;
            }
            // The header is read once and checked; the ring size is kept
            // in this process from then on (the mapping is shared).
            if let Some(s) = Session::adopt(p as *mut u8, st.st_size as usize) {
                output::SESSION_LEN.store(st.st_size as usize, Ordering::Release);
                let at = ptap_rt_core::script::globals::offset_in_session(s.ring_size());
                ptap_rt_core::script::globals::Globals::record_size(
                    s.base().add(at),
                    (st.st_size as usize).saturating_sub(at),
                );
                Some(s)
            } else {
                libc::munmap(p, st.st_size as usize);
                None
            }
        }
    };
    if let Some(s) = params
        .get(session::ENV_FD)
        .and_then(|v| v.parse::<i32>().ok())
        .and_then(try_fd)
    {
        return Some(s);
    }
    let path = params.get(session::ENV_PATH)?;
    let c = CString::new(path).ok()?;
    // SAFETY: open of a path named by ptap.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let s = try_fd(fd);
    // SAFETY: the mapping survives closing the fd.
    unsafe { libc::close(fd) };
    s
}

/// The runtime's parameters: the environment (LD_PRELOAD by `ptap -c`), or
/// the attach file (`ptap -x`, see [`attach_params_path`]).
struct Params {
    /// KEY=VALUE lines of the attach file; None: use the environment.
    file: Option<Vec<(String, String)>>,
}

impl Params {
    fn get(&self, key: &str) -> Option<String> {
        match &self.file {
            Some(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()),
            None => std::env::var(key).ok(),
        }
    }

    fn injected(&self) -> bool {
        self.file.is_some()
    }
}

/// Where this copy of the runtime looks for its attach file.
fn attach_params_path() -> Option<std::path::PathBuf> {
    // SAFETY: dladdr on one of our code addresses; dli_fname is a C string
    // owned by the dynamic loader.
    let me = unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(ptap_rt_ctor as *const libc::c_void, &mut info) == 0
            || info.dli_fname.is_null()
        {
            return None;
        }
        std::ffi::CStr::from_ptr(info.dli_fname)
            .to_string_lossy()
            .into_owned()
    };
    let dir = std::path::Path::new(&me).parent()?;
    Some(dir.join(attach_params_name(sys::getpid())))
}

fn read_params() -> Params {
    let file = attach_params_path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|text| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        });
    Params { file }
}

extern "C" fn ptap_rt_ctor() {
    // A panic in the runtime aborts at once (no std panic machinery in a
    // signal handler; see panic.rs).
    panic::install_abort_hook();
    let params = read_params();
    if params.injected() {
        // `ptap -x`: the constructor runs inside the injected dlopen, before
        // the loader has made this library global (a C module could not
        // link against it) and with the loader's lock held; ptap calls
        // ptap_rt_attach() once dlopen has returned.
        return;
    }
    start(params);
}

static STARTED: AtomicBool = AtomicBool::new(false);

/// `ptap -x PID`: ptap calls this on a thread of the running process (by
/// ptrace), after it has dlopen'ed this library. Reads the attach file and
/// starts the runtime like the constructor does under LD_PRELOAD, on a
/// thread of its own (`ptap-attach`, which ends when the probes are armed):
/// the interrupted thread goes back to its work at once, and no signal
/// handler of the runtime runs on it meanwhile. Returns the thread id of
/// `ptap-attach` (> 0; ptap waits for it to end), -1 without an attach
/// file, -2 when already started, -4 when the thread cannot be started.
#[no_mangle]
pub extern "C" fn ptap_rt_attach() -> c_int {
    // No unwinding into the target's frames (ptap's injected call).
    std::panic::catch_unwind(|| {
        let params = read_params();
        if !params.injected() {
            return -1;
        }
        if STARTED.load(Ordering::Acquire) {
            return -2;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let _quiet = Quiet::new(); // the target's signals are not for it
        let r = std::thread::Builder::new()
            .name("ptap-attach".into())
            .spawn(move || {
                let _ = tx.send(sys::gettid());
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| start(params)));
            });
        match r {
            Ok(_) => rx.recv().unwrap_or(-4),
            Err(_) => -4,
        }
    })
    .unwrap_or(-3)
}

fn start(params: Params) {
    if STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    threads::note_own_process();
    let injected = params.injected();
    let module = params.get(session::ENV_MODULE);
    // Injected into a running process: it is the target (and has no
    // environment of ours to hand down).
    let role = if injected {
        ptap_rt_core::script::attach::Role::Target
    } else {
        take_role()
    };
    let no_follow = params.get(ENV_NO_FOLLOW).is_some_and(|v| v == "1");
    if no_follow && role == ptap_rt_core::script::attach::Role::Other {
        return; // `ptap --no-follow`: only the -c process is probed
    }
    NO_FOLLOW.store(no_follow, Ordering::Release);
    let sess = map_session(&params);
    if sess.is_none() && (module.is_none() || injected) {
        // Preloaded without ptap and without a module: stay inert. Injected
        // without a reachable session: ptap sees that nobody attached.
        return;
    }
    if let Some(s) = sess {
        if s.control().detach.load(Ordering::Acquire) != 0 {
            // ptap has detached the session (it ended, or the -c command
            // exited while this process of it was on its way here): a
            // process that starts now is not traced.
            return;
        }
        // SAFETY: map_session validated the mapping, which is never unmapped.
        unsafe { output::set_session(s.base()) };
        s.add_pid(sys::getpid());
    }
    if !threads::init() {
        diag("ptap: cannot allocate the thread table; runtime disabled\n");
        return;
    }
    if injected {
        // This is the runtime's own `ptap-attach` thread, until it is gone:
        // what it does once probes are armed (and its exit, which frees
        // glibc's per-thread caches) runs no probe handler.
        core::mem::forget(threads::OwnWork::start());
    }
    if params.get("PTAP_VERBOSE").is_some() {
        ptap_rt_core::kprobes::register::VERBOSE.store(true, Ordering::Relaxed);
    }
    if injected {
        crate::api::signals::prime_injected();
    } else {
        crate::api::signals::prime();
    }
    sys::init_errno();
    crate::api::runtime::init_execname();
    // Before any handler is installed: the runtime's system calls and signal
    // returns go through libc's text (the syscall probes' exempt range).
    ptap_rt_core::syscall::sites::discover();
    if let Some(dir) = attach_params_path().as_deref().and_then(|p| p.parent()) {
        ptap_rt_core::syscall::cache::set_dir(dir);
    }
    install::install();
    // A program starts with the mask its parent had at exec (a blocked
    // SIGTRAP would make the first trap-path hit fatal): the managed
    // signals are unblocked (an injection's threads: by ptap).
    let managed = ptap_rt_core::base::signo::managed_mask();
    // SAFETY: unblocking signals of this thread.
    unsafe { sys::rt_sigprocmask(1, Some(&managed), None) };
    ptap_rt_core::hit::wrap::ACTIVE.store(true, Ordering::Release);
    if !injected {
        crate::api::signals::rescan();
    }
    sys::membarrier_register();
    // SAFETY: registering plain C callbacks.
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
        libc::atexit(at_exit);
    }
    let limit = modcall::init_timeout(params.get("PTAP_INIT_TIMEOUT"));
    let loaded = module
        .as_deref()
        .is_none_or(|m| load_module(m, role, injected, limit));
    // The rest of start-up is the runtime's own work (probes are armed),
    // freeing what it read first.
    let _own = threads::OwnWork::start();
    drop(module);
    drop(params);
    if !loaded {
        // Injected: the process runs on, with nothing registered.
        shutdown();
        return;
    }
    // A REPL session's modules (none otherwise).
    ptap_rt_core::script::control::start(role);
    // Syscall probes: arm this thread now that start-up is done, and move
    // libc's sites while this is the only thread (the control thread,
    // started next, is not traced: it is made under `Untraced`).
    ptap_rt_core::syscall::runtime_ready();
    if sess.is_some() {
        spawn_control_thread();
    }
    if injected {
        // The process's other threads already run: syscall probes arm
        // them now (no-op without syscall probes).
        ptap_rt_core::syscall::arm_all_threads();
    }
}

/// The role of this process in the session (see `modules::ENV_TARGET`);
/// the target hands the role "not the target" down to what it execs.
fn take_role() -> ptap_rt_core::script::attach::Role {
    use ptap_rt_core::script::attach::{Role, ENV_TARGET};
    match std::env::var(ENV_TARGET).ok().as_deref() {
        Some("0") => Role::Other,
        Some(_) => {
            // SAFETY: the constructor runs before main, before the target
            // can start threads of its own; setenv copies the strings.
            unsafe { libc::setenv(c"PTAP_TARGET".as_ptr(), c"0".as_ptr(), 1) };
            Role::Target
        }
        None => Role::Target,
    }
}

// Not inlined: dump_stack() from init_module() names this frame (a test checks it).
// False: an injected runtime (`injected`) could not arm its probes.
#[inline(never)]
fn load_module(
    path: &str,
    role: ptap_rt_core::script::attach::Role,
    injected: bool,
    init_limit: u64,
) -> bool {
    // A compiled script's probe module (ELF relocatable object written by
    // ptap's compiler): loaded by the runtime itself, no dlopen, no linker.
    if path.ends_with(".o") {
        use ptap_rt_core::script::attach::Role;
        use ptap_rt_core::script::modules;
        // What the attach allocates between and after its registrations
        // is not the target's (its `process.begin` handlers still run).
        let own = threads::OwnWork::start();
        let r = modules::attach_file_as(path, role);
        drop(own);
        if let Err(e) = r {
            if injected {
                // `ptap -x`: the process was running before us and must
                // go on: report, register nothing, never exit it.
                diag(&format!(
                    "ptap: {e}\nptap: not every probe could be armed in pid {}: nothing is probed\n",
                    sys::getpid()
                ));
                modules::report_failed_start();
                return false;
            }
            if role == Role::Target {
                // ptap resolved the points before starting us, so this is a
                // refusal (an address the probe layer cannot patch, ...).
                // Never run main with half a session: nothing stays
                // registered, and the target stops here.
                diag(&format!(
                    "ptap: {e}\nptap: the target (pid {}) stops before main: not every probe could be armed\n",
                    sys::getpid()
                ));
                modules::report_failed_start();
                // SAFETY: ends this process without running its atexit
                // handlers (main never ran).
                unsafe { libc::_exit(127) };
            }
            diag(&format!("ptap: {e}\n"));
        }
        return true;
    }
    let Ok(c) = CString::new(path) else {
        return true;
    };
    // Its init runs under the runtime's loader: backtraces name those frames.
    ptap_rt_core::proc::symbols::want_runtime_symbols();
    // SAFETY: dlopen of the module named by ptap; its undefined symbols
    // (register_kprobe, printk, ...) resolve against this preloaded library.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if h.is_null() {
        // SAFETY: dlerror returns a C string or NULL.
        let e = unsafe { libc::dlerror() };
        let msg = if e.is_null() {
            String::new()
        } else {
            // SAFETY: non-NULL C string.
            unsafe { std::ffi::CStr::from_ptr(e) }
                .to_string_lossy()
                .into_owned()
        };
        diag(&format!("ptap: cannot load module {path}: {msg}\n"));
        output::count_module_error();
        return true;
    }
    // A C module's handlers may name addresses on the hit path (dump_stack,
    // fault reports), which only reads the index: build it now, with the
    // module in it (its `lib:name` registrations do not need it). `build`,
    // not `get_or_build`: an index made before this dlopen lacks the module
    // (and is kept as it is when nothing was loaded since).
    let _ = ptap_rt_core::proc::symbols::build();
    // SAFETY: symbol lookups in the module.
    let (init, cleanup) = unsafe {
        (
            libc::dlsym(h, c"init_module".as_ptr()),
            libc::dlsym(h, c"cleanup_module".as_ptr()),
        )
    };
    if init.is_null() {
        diag(&format!("ptap: module {path} has no init_module()\n"));
        output::count_module_error();
        return true;
    }
    let _ = MODULE_PATH.set(path.to_string());
    note_known_code(path, init);
    // init_module is `int init_module(void)`: under the fault guard, with
    // a time limit. On failure the caller shuts the runtime down: what the
    // module registered is unregistered, and the process runs on unprobed.
    let why = match modcall::call(init as usize, Some(init_limit)) {
        modcall::Outcome::Returned(0) => {
            output::count_module_load();
            MODULE_CLEANUP.store(cleanup as usize, Ordering::Release);
            return true;
        }
        modcall::Outcome::Returned(r) => {
            // A process the target execs (a shell, a helper) may lack what
            // the module probes: ptap fails the session only when the
            // module loaded in no process.
            module_error();
            format!("returned {r}")
        }
        modcall::Outcome::Faulted(f) => {
            module_error();
            format!("faulted ({f}) and was aborted")
        }
        modcall::Outcome::TimedOut(s) => {
            module_error();
            format!("did not return within {s} s (PTAP_INIT_TIMEOUT) and was abandoned")
        }
    };
    diag(&format!(
        "ptap: init_module() of {path} {why}; the module is unloaded: nothing is probed in pid {}\n",
        sys::getpid()
    ));
    false
}

/// A module whose code passes `ptap_rt_core::kprobes::known`'s check gets
/// the lighter trampoline saves for its handlers (docs/optprobes.md).
fn note_known_code(path: &str, init: *mut libc::c_void) {
    use ptap_rt_core::kprobes::known;
    let verdict = std::fs::read(path)
        .map_err(|e| format!("it cannot be read ({e})"))
        .and_then(|d| known::check_c_module(&d));
    // SAFETY: dladdr on the module's own init_module; dli_fbase is its
    // load base.
    let base = unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        (libc::dladdr(init, &mut info) != 0).then_some(info.dli_fbase as u64)
    };
    let why = match (verdict, base) {
        (Ok(ranges), Some(base)) => {
            known::add_c_module(base, &ranges);
            None
        }
        (Err(why), _) => Some(why),
        (Ok(_), None) => Some("its load address is unknown".to_string()),
    };
    if why.is_some() {
        known::note_unknown();
    }
    if ptap_rt_core::kprobes::register::VERBOSE.load(Ordering::Relaxed) {
        diag(&match why {
            None => format!(
                "ptap: module {path}: its handlers use no AVX and call only the runtime: lighter vector saves\n"
            ),
            Some(w) => format!("ptap: module {path}: full vector saves around its handlers: {w}\n"),
        });
    }
}

/// Tell ptap that the C module failed in this process.
fn module_error() {
    output::count_module_error();
}

/// cleanup_module + unregister everything, once per process.
pub fn shutdown() {
    if SHUT.swap(true, Ordering::AcqRel) {
        return;
    }
    ptap_rt_core::syscall::shutdown(); // syscall probes: no thread traps from here on
    let c = MODULE_CLEANUP.swap(0, Ordering::AcqRel);
    if c != 0 {
        // cleanup_module is `void cleanup_module(void)`, under the guard.
        if let modcall::Outcome::Faulted(f) = modcall::call(c, None) {
            module_error();
            // The module did load here: its fault fails the session as a
            // handler fault does.
            output::count_handler_fault();
            diag(&format!(
                "ptap: cleanup_module() of {} faulted ({f}) and was aborted; the module's probes are removed in pid {}\n",
                MODULE_PATH.get().map_or("the module", |p| p.as_str()),
                sys::getpid()
            ));
        }
    }
    ptap_rt_core::script::modules::report_missed();
    ptap_rt_core::script::control::forget_all();
    ptap_rt_core::kprobes::register::unregister_all();
    if let Some(s) = output::session() {
        s.remove_pid(sys::getpid());
    }
}

extern "C" fn at_exit() {
    // `process.end` probes: this process exits (exit(), return from main).
    if !SHUT.load(Ordering::Acquire) {
        ptap_rt_core::script::process_hooks::process_exiting();
    }
    // Unregistering allocates and frees: not the target's calls.
    let _own = threads::OwnWork::start();
    shutdown();
}

static FORK_STATE: ptap_rt_core::base::forklock::MutexSlot<
    Option<ptap_rt_core::kprobes::optimize::OptState>,
> = ptap_rt_core::base::forklock::MutexSlot::new(&ptap_rt_core::kprobes::optimize::STATE);
static FORK_LAST_ERROR: ptap_rt_core::base::forklock::MutexSlot<String> =
    ptap_rt_core::base::forklock::MutexSlot::new(&ptap_rt_core::kprobes::register::LAST_ERROR);

/// The runtime's mutexes, outermost first (the order they nest in).
fn fork_locks() -> [&'static dyn ptap_rt_core::base::forklock::ForkLock; 10] {
    [
        ptap_rt_core::kprobes::codemem::fork_lock(),
        ptap_rt_core::syscall::sites::fork_lock(),
        ptap_rt_core::syscall::fork_lock(),
        &FORK_STATE,
        ptap_rt_core::kprobes::optimize::templates_fork_lock(),
        ptap_rt_core::proc::symcache::fork_lock(),
        ptap_rt_core::script::modules::fork_lock(),
        ptap_rt_core::script::control::fork_lock(),
        &FORK_LAST_ERROR,
        ptap_rt_core::proc::symbols::fork_lock(),
    ]
}

extern "C" fn fork_prepare() {
    FORK_PARENT_TID.store(sys::gettid(), Ordering::Release);
    ptap_rt_core::base::forklock::prepare(&fork_locks());
}

extern "C" fn fork_parent() {
    ptap_rt_core::base::forklock::parent(&fork_locks(), sys::gettid());
}

extern "C" fn fork_child() {
    ptap_rt_core::base::forklock::child(&fork_locks());
    crate::api::signals::after_fork();
    threads::after_fork(FORK_PARENT_TID.load(Ordering::Acquire));
    // A child that syscall probes do not follow (PTAP_SYSCALL_FOLLOW=0)
    // gets libc's bytes back.
    ptap_rt_core::syscall::after_fork_child();
    ptap_rt_core::script::modules::rebase_missed();
    if NO_FOLLOW.load(Ordering::Acquire) {
        // Only the first process is probed: this child takes every probe
        // out of its (copy-on-write) code and never joins the session.
        if !SHUT.swap(true, Ordering::AcqRel) {
            ptap_rt_core::syscall::shutdown();
            ptap_rt_core::kprobes::register::unregister_all();
        }
        return;
    }
    if let Some(s) = output::session() {
        s.add_pid(sys::getpid());
        // Threads do not survive fork: the child needs its own control
        // thread to honour ptap's detach request.
        if !SHUT.load(Ordering::Acquire) {
            spawn_control_thread();
            // A new process of the session: its `process.begin` probes.
            ptap_rt_core::script::process_hooks::process_forked();
        }
    }
}

fn spawn_control_thread() {
    // Syscall probes do not arm the runtime's own thread; the target's
    // signals are not for it; making a thread allocates (in the caller),
    // which is not the target's call.
    let _untraced = ptap_rt_core::hit::sigsys::probes::Untraced::new();
    let _quiet = Quiet::new();
    let _own = threads::OwnWork::start();
    // A plain pthread, not std::thread: std's thread start allocates and
    // frees before the closure could mark the thread as the runtime's own
    // (probes on malloc/free saw those calls), and names it through libc.
    extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
        // Everything this thread does is the runtime's own work: the probes
        // it hits (malloc, reads of /proc) run no handler.
        let _own = threads::OwnWork::start();
        // No unwinding out of an extern "C" function.
        let _ = std::panic::catch_unwind(control_loop);
        core::ptr::null_mut()
    }
    // 256 KiB of stack (glibc takes the static TLS block out of it; std
    // added that on top of the 64 KiB it was asked for), or glibc's default
    // where that is refused (a program with a very large static TLS block).
    let create = |stack: Option<usize>| -> Option<libc::pthread_t> {
        // SAFETY: a fresh attribute object, destroyed after use; `run` takes
        // no argument; the thread is detached (nobody joins it).
        unsafe {
            let mut attr: libc::pthread_attr_t = core::mem::zeroed();
            libc::pthread_attr_init(&mut attr);
            if let Some(n) = stack {
                libc::pthread_attr_setstacksize(&mut attr, n);
            }
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            let mut t: libc::pthread_t = 0;
            let r = libc::pthread_create(&mut t, &attr, run, core::ptr::null_mut());
            libc::pthread_attr_destroy(&mut attr);
            (r == 0).then_some(t)
        }
    };
    let t = create(Some(256 * 1024)).or_else(|| create(None));
    if let Some(t) = t {
        // Named here, before anything looks for it by name (`-x`'s arming
        // of the process's threads skips it).
        // SAFETY: a live thread of ours; a NUL-terminated name of 8 bytes.
        unsafe { libc::pthread_setname_np(t, c"ptap-ctl".as_ptr()) };
    }
    if t.is_none() {
        diag("ptap: cannot start the runtime's control thread (Ctrl-C detach disabled)\n");
    }
}

/// The control thread: ptap's detach request, dead threads' kretprobe
/// instances, skipped hits, a REPL's module changes, the symbol index of a
/// process that lives on, deferred system call probe arming.
fn control_loop() {
    let Some(s) = output::session() else { return };
    let w = s.control().detach.as_ptr() as *const u32;
    let started = std::time::Instant::now();
    let mut warm = false;
    loop {
        if s.control().detach.load(Ordering::Acquire) != 0 {
            shutdown();
            return;
        }
        // Kretprobe instances of threads that died inside
        // kretprobed functions go back to their probes.
        threads::sweep_dead();
        // Skipped hits reach ptap while the process runs (MAXSKIPPED).
        ptap_rt_core::script::modules::publish_missed();
        // A REPL session's module set changed (ptap woke us).
        ptap_rt_core::script::control::poll();
        // A process that lives on gets the symbol index its
        // probes' names did not need (`lib:name` points resolve
        // without it), so that a later fault or crash report
        // names functions. Not in the first second: most
        // processes of a followed tree are gone by then, and
        // would have paid for it (~0.6 ms for libc).
        if !warm && started.elapsed() >= std::time::Duration::from_secs(1) {
            warm = true;
            let _ = ptap_rt_core::proc::symbols::get_or_build();
        }
        // Threads whose syscall-probe arming waits for them to
        // leave a call that a signal would turn into EINTR.
        let wait_ms = if ptap_rt_core::syscall::retry_deferred_arming() {
            10
        } else {
            1000
        };
        // SAFETY: futex word in the shared mapping (shared futex).
        unsafe { sys::futex_wait(w, 0, wait_ms) };
    }
}
