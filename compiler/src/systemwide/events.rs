//! Arming: every point of the module becomes perf events, one per CPU
//! (pid = -1): system call points on the `syscalls:` tracepoints, function
//! points on the uprobe PMU. The events of a CPU share its first event's
//! ring. All are opened disabled and enabled together once everything is
//! in place; dropping [`Armed`] closes them (and so removes the uprobes).

use anyhow::{anyhow, Context};
use std::collections::HashMap;

use perf_event_open_sys::bindings::{self as b, perf_event_attr};
use ptap_rt_core::script::ctx::{SyscallName, ABI_SYSCALL, ABI_SYSV};
use ptap_rt_core::script::meta::{Meta, PointKind, TargetSpec};

use super::filter;
use super::perf::{Event, Ring};
use super::sample::{Decode, Point, REGS_MASK};
use super::tracefs;
use super::uprobe;

/// The armed events and their rings.
pub struct Armed {
    pub events: Vec<Event>,
    pub rings: Vec<Ring>,
    pub points: Vec<Point>,
    pub by_id: HashMap<u64, usize>,
    /// One line per installed filter (for -v).
    pub notes: Vec<String>,
}

/// The CPUs to open events on (/sys/devices/system/cpu/online: `0-3,6`).
pub fn online_cpus() -> Vec<i32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut v = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let mut it = part.splitn(2, '-');
        let a: i32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let b: i32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(a);
        v.extend(a..=b);
    }
    if v.is_empty() {
        // SAFETY: plain sysconf.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
        v.extend(0..n as i32);
    }
    v
}

/// What a point opens, before it is opened.
struct Want {
    attr: perf_event_attr,
    /// Keeps the uprobe path alive while `attr.config1` points to it.
    _path: Option<std::ffi::CString>,
    point: Point,
    filter: Option<String>,
    what: String,
}

fn base_attr() -> perf_event_attr {
    let mut a = perf_event_attr {
        sample_type: (b::PERF_SAMPLE_IDENTIFIER
            | b::PERF_SAMPLE_TID
            | b::PERF_SAMPLE_TIME
            | b::PERF_SAMPLE_CPU) as u64,
        ..Default::default()
    };
    a.sample_period = 1;
    a.set_disabled(1);
    a.set_sample_id_all(1);
    a.set_use_clockid(1);
    a.clockid = libc::CLOCK_MONOTONIC;
    a
}

fn syscall_names(calls: &[(String, u32)]) -> (Vec<SyscallName>, Vec<String>) {
    let names: Vec<String> = calls.iter().map(|c| c.0.clone()).collect();
    let table = calls
        .iter()
        .zip(&names)
        .map(|(c, n)| SyscallName {
            nr: u64::from(c.1),
            name: n.as_ptr(),
            len: n.len() as u64,
        })
        .collect();
    (table, names)
}

/// Resolve every point of `meta` to the events it needs.
fn wants(
    meta: &Meta,
    module: &ptap_rt_core::script::load::LoadedModule,
) -> anyhow::Result<Vec<Want>> {
    let mut out = Vec::new();
    let mut root: Option<std::path::PathBuf> = None;
    let mut pmu: Option<uprobe::Pmu> = None;
    let me = std::process::id();
    for (pi, p) in meta.probes.iter().enumerate() {
        let texts: Vec<String> = p.points.iter().map(|q| q.text.clone()).collect();
        let facts = filter::of(pi, &texts);
        let handler = module.handler(pi);
        for (qi, pt) in p.points.iter().enumerate() {
            let ret = match pt.kind {
                PointKind::Kprobe | PointKind::Jprobe => false,
                PointKind::Kretprobe(_) => true,
                PointKind::ProcessBegin | PointKind::ProcessEnd => {
                    return Err(anyhow!(
                        "probe point {}: `process.begin` and `process.end` need a target: give -c CMD or -x PID (system-wide mode cannot run them yet)",
                        pt.text
                    ))
                }
                _ => continue,
            };
            if ret && p.entry_values > 0 {
                return Err(anyhow!(
                    "probe point {}: `@entry` is not supported system-wide (no -c, no -x) yet",
                    pt.text
                ));
            }
            match &pt.target {
                TargetSpec::Syscall { name, calls } => {
                    let root = match &root {
                        Some(r) => r.clone(),
                        None => root.insert(tracefs::root()?).clone(),
                    };
                    let mut found = 0;
                    for (call, nr) in calls {
                        let tp_name = format!("sys_{}_{call}", if ret { "exit" } else { "enter" });
                        let tp = match tracefs::syscall_tracepoint(&root, &tp_name) {
                            Ok(tp) => tp,
                            // An alias member this kernel lacks (e.g. an old call).
                            Err(_) if root.join("events/syscalls").is_dir() => continue,
                            Err(e) => return Err(e),
                        };
                        found += 1;
                        let (syscalls, names) = syscall_names(calls);
                        let decode = if ret {
                            Decode::Exit(tp.field("ret").map_or(16, |f| f.offset))
                        } else {
                            Decode::Enter(tp.fields.iter().map(|f| f.offset).collect())
                        };
                        let cond = facts
                            .and_then(|f| f.cond.as_ref())
                            .and_then(|c| c.render(&tp));
                        // ptap's own system calls are never traced (its
                        // reads of /proc would feed the handlers).
                        let filter = match &cond {
                            Some(c) => format!("({c}) && common_pid != {me}"),
                            None => format!("common_pid != {me}"),
                        };
                        let mut attr = base_attr();
                        attr.type_ = b::PERF_TYPE_TRACEPOINT;
                        attr.config = tp.id;
                        attr.sample_type |= b::PERF_SAMPLE_RAW as u64;
                        out.push(Want {
                            attr,
                            _path: None,
                            point: Point {
                                handler,
                                probe: pi as u32,
                                point: qi as u32,
                                abi: ABI_SYSCALL,
                                pp: pt.text.clone(),
                                func: if name.starts_with("sys_") {
                                    name.clone()
                                } else {
                                    format!("sys_{name}")
                                },
                                syscall_nr: u64::from(*nr),
                                syscalls,
                                _names: names,
                                decode,
                            },
                            what: format!("syscalls:{tp_name}"),
                            filter: Some(filter),
                        });
                    }
                    if found == 0 && !pt.optional {
                        return Err(anyhow!(
                            "probe point {}: this kernel has no tracepoint for {} (looked for syscalls:sys_{}_NAME)",
                            pt.text,
                            calls.iter().map(|c| c.0.as_str()).collect::<Vec<_>>().join(", "),
                            if ret { "exit" } else { "enter" }
                        ));
                    }
                }
                TargetSpec::None => {}
                target => {
                    let sites = match uprobe::sites(&pt.text, target) {
                        Ok(s) => s,
                        Err(_) if pt.optional => continue,
                        Err(e) => return Err(e),
                    };
                    let pmu = match &pmu {
                        Some(p) => p,
                        None => pmu.insert(uprobe::pmu()?),
                    };
                    for s in sites {
                        let path = std::ffi::CString::new(s.path.as_os_str().as_encoded_bytes())
                            .map_err(|_| anyhow!("{}: a NUL in the path", s.path.display()))?;
                        let mut attr = base_attr();
                        attr.type_ = pmu.ty;
                        if ret {
                            attr.config = 1 << pmu.retprobe_bit;
                        }
                        attr.config1 = path.as_ptr() as u64;
                        attr.config2 = s.offset;
                        attr.sample_type |= b::PERF_SAMPLE_REGS_USER as u64;
                        attr.sample_regs_user = REGS_MASK;
                        out.push(Want {
                            attr,
                            _path: Some(path),
                            point: Point {
                                handler,
                                probe: pi as u32,
                                point: qi as u32,
                                abi: ABI_SYSV,
                                pp: pt.text.clone(),
                                func: s.func.clone(),
                                syscall_nr: 0,
                                syscalls: Vec::new(),
                                _names: Vec::new(),
                                decode: Decode::Regs,
                            },
                            what: format!(
                                "{}probe {}:{} (offset {:#x})",
                                if ret { "uret" } else { "u" },
                                s.path.display(),
                                s.func,
                                s.offset
                            ),
                            filter: None,
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One descriptor per CPU and point: a wildcard over a library needs
/// thousands, so the soft limit goes up to the hard one.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// The one-line error for a perf_event_open that was refused.
pub fn open_error(what: &str, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => super::privilege_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) => format!(
            "cannot open the perf event for {what}: too many open files ({e}); raise the limit (ulimit -n) or probe fewer functions"
        ),
        _ => format!("cannot open the perf event for {what}: {e}"),
    }
}

/// Open, filter, map and enable every event of `meta`'s points.
pub fn arm(
    meta: &Meta,
    module: &ptap_rt_core::script::load::LoadedModule,
    pages: usize,
    verbose: u8,
) -> anyhow::Result<Armed> {
    let cpus = online_cpus();
    let wants = wants(meta, module)?;
    raise_fd_limit();
    if wants.is_empty() {
        return Err(anyhow!(
            "nothing to probe: every point is optional and none resolved"
        ));
    }
    let mut armed = Armed {
        events: Vec::new(),
        rings: Vec::new(),
        points: Vec::new(),
        by_id: HashMap::new(),
        notes: Vec::new(),
    };
    let mut ring_of_cpu: HashMap<i32, usize> = HashMap::new();
    for mut w in wants {
        let idx = armed.points.len();
        for &cpu in &cpus {
            let first = !ring_of_cpu.contains_key(&cpu);
            // The first event of a CPU also reports exec/comm changes,
            // forks and exits (for execname()), and wakes ptap when its
            // ring is a quarter full.
            w.attr.set_comm(first as u64);
            w.attr.set_comm_exec(first as u64);
            w.attr.set_task(first as u64);
            w.attr.set_watermark(1);
            w.attr.__bindgen_anon_2.wakeup_watermark = (pages * super::perf::PAGE / 4) as u32;
            let ev =
                Event::open(&mut w.attr, -1, cpu).map_err(|e| anyhow!(open_error(&w.what, &e)))?;
            if let Some(f) = &w.filter {
                ev.set_filter(f)
                    .with_context(|| format!("cannot set the filter `{f}` on {}", w.what))?;
            }
            match ring_of_cpu.get(&cpu) {
                Some(&r) => ev
                    .output_to(&armed.rings[r])
                    .with_context(|| format!("cannot share the ring of CPU {cpu}"))?,
                None => {
                    let ring = Ring::map(&ev, pages).map_err(|e| {
                        anyhow!("cannot map a perf ring of {pages} pages ({e}): choose fewer with PTAP_PERF_PAGES")
                    })?;
                    ring_of_cpu.insert(cpu, armed.rings.len());
                    armed.rings.push(ring);
                }
            }
            armed.by_id.insert(ev.id, idx);
            armed.events.push(ev);
        }
        if verbose > 0 {
            match &w.filter {
                Some(f) => armed.notes.push(format!("{}: filter `{f}`", w.what)),
                None => armed.notes.push(w.what.clone()),
            }
        }
        armed.points.push(w.point);
    }
    for ev in &armed.events {
        ev.enable().context("cannot enable a perf event")?;
    }
    Ok(armed)
}
