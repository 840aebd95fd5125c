//! System-wide mode: a script run with neither -c nor -x probes every
//! process on the machine through the kernel's perf events (system call
//! tracepoints, the uprobe PMU). The compiled module runs in ptap over each
//! sample, against the same session globals and output ring that
//! begin/end/timer probes use, so aggregates, arrays and end probes work
//! as they do in-process.
//!
//! - `events.rs`: points -> perf events (one per CPU), filters, rings
//! - `perf.rs`: one event's descriptor and ring buffer
//! - `tracefs.rs`: tracepoint ids and record layouts
//! - `uprobe.rs`: function points on files
//! - `filter.rs`: the condition a handler starts with, as a kernel filter
//! - `sample.rs`: a record -> a `ProbeCtx` -> the handler
//! - `live.rs`: a module armed and removed while a session runs (the REPL)
//! - this file: the session and its loop

mod events;
pub mod filter;
pub mod live;
mod perf;
mod sample;
mod tracefs;
mod uprobe;

use anyhow::anyhow;
use std::process::ExitCode;
use std::time::Instant;

use ptap_compiler::codegen::host::{self, Program, Which};

use crate::event_loop::{install_interrupt_handlers, session_loop, Script, Sink, Stop, Watch};
use crate::load::{self, OwnedSession};
use crate::run::RunOpts;

/// Ring size per CPU, in pages (`PTAP_PERF_PAGES`, a power of two).
const DEFAULT_PAGES: usize = 64;

pub(crate) fn pages_from_env() -> anyhow::Result<usize> {
    match std::env::var("PTAP_PERF_PAGES") {
        Ok(v) => {
            let n: usize = v
                .parse()
                .map_err(|_| anyhow!("PTAP_PERF_PAGES={v} is not a number"))?;
            if !n.is_power_of_two() || !(1..=1 << 16).contains(&n) {
                return Err(anyhow!(
                    "PTAP_PERF_PAGES={v} must be a power of two between 1 and 65536"
                ));
            }
            Ok(n)
        }
        Err(_) => Ok(DEFAULT_PAGES),
    }
}

/// The one-line error for a user who may not open system-wide events.
pub fn privilege_error() -> String {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!(
        "system-wide probes (no -c, no -x) need root or CAP_PERFMON (kernel.perf_event_paranoid is {paranoid}, which keeps other users' processes from you): run ptap as root, or give it CAP_PERFMON and read access to /sys/kernel/tracing; or probe a process of your own with -c CMD or -x PID"
    )
}

/// Root, or CAP_PERFMON (38) / CAP_SYS_ADMIN (21) in the effective set.
pub(crate) fn privileged() -> bool {
    // SAFETY: plain geteuid.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    eff & (1 << 38 | 1 << 21) != 0
}

/// Does the module call `name` (a helper import)?
fn imports(prog: &Program, name: &str) -> bool {
    let n = name.as_bytes();
    prog.object
        .windows(n.len() + 1)
        .any(|w| &w[..n.len()] == n && w[n.len()] == 0)
}

/// Run `prog` system-wide until Ctrl-C, -T or `exit()`.
pub fn run(prog: &Program, opts: &RunOpts) -> anyhow::Result<ExitCode> {
    let meta = prog.meta();
    if !privileged() {
        return Err(anyhow!(privilege_error()));
    }
    let pages = pages_from_env()?;
    let ring = load::ring_size_from_env()?;
    let owned = OwnedSession::create_for(ring, host::session_size(ring, meta), None)?;
    let s = owned.session;
    // SAFETY: the mapping is session_size(ring, meta) bytes.
    let g = unsafe { host::globals_of(&s) };
    host::init_globals(&g, meta, 0);
    // Declared after the session: dropped (stopped) before it is unmapped.
    let _server = match opts.serve {
        Some(spec) => {
            let server = crate::serve::start(spec, meta, g, "system-wide".into())?;
            eprintln!("ptap: serving metrics at http://{}/metrics", server.addr);
            Some(server)
        }
        None => None,
    };

    let mut sink = Sink::open(opts.output, opts.json)?;
    install_interrupt_handlers();

    let t0 = Instant::now();
    let armed = events::arm(meta, &prog.module, pages, opts.verbose)?;
    if opts.verbose > 0 {
        for n in &armed.notes {
            eprintln!("ptap: {n}");
        }
        eprintln!(
            "ptap: system-wide: {} perf event(s) on {} CPU(s), rings of {pages} pages: armed {:.2?} after ptap started",
            armed.events.len(),
            armed.rings.len(),
            crate::START.get().map_or(t0.elapsed(), |s| s.elapsed())
        );
    }
    prog.run(Which::Begin, &s, &g);
    sink.drain(&s, Some(prog));

    let events::Armed {
        events: evs,
        mut rings,
        points,
        by_id,
        ..
    } = armed;
    let wants_ids = imports(prog, "ptap_h_ppid") || imports(prog, "ptap_h_uid");
    let mut runner = sample::Runner::new(points, by_id, &g, &s, meta, wants_ids);
    let mut poll = |sink: &mut Sink| {
        drain_rings(&mut rings, &mut runner, &mut || {
            sink.drain(&s, Some(prog));
        })
    };
    let script = Script { prog, globals: &g };
    let stop = session_loop(
        &s,
        Some(script),
        &mut sink,
        Watch::SystemWide(&mut poll),
        opts.timeout,
    )?;
    for ev in &evs {
        ev.disable();
    }
    // What the kernel wrote before the events stopped.
    drain_rings(&mut rings, &mut runner, &mut || {
        sink.drain(&s, Some(prog));
    });
    sink.drain(&s, Some(prog));
    if opts.verbose > 0 {
        eprintln!(
            "ptap: stopping: {stop}; {} sample(s) handled",
            runner.samples
        );
        eprintln!("Pass 5: ran for {:.2?}", t0.elapsed());
    }
    // The kernel reports losses in the ring (PERF_RECORD_LOST) only when
    // space is free again: losses at the very end show only in the
    // per-event counts.
    let counted: Option<u64> = evs.iter().map(|e| e.lost()).sum();
    let lost = counted.map_or(runner.lost, |c| c.max(runner.lost));
    drop(rings);
    drop(evs);

    prog.run(Which::End, &s, &g);
    sink.drain(&s, Some(prog));
    let warnings = loss_warnings(lost, runner.failed_reads(), Some(pages));
    sink.report_end(meta, &g, &s, &warnings);
    Ok(if host::errors(&g) > 0 || stop == Stop::TooManySkipped {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The warnings at the end of a session with system-wide probes: records
/// the kernel lost to full rings (of `pages` pages, when known), reads of
/// sampled processes that failed.
pub(crate) fn loss_warnings(lost: u64, failed_reads: u64, pages: Option<usize>) -> Vec<String> {
    let mut warnings = Vec::new();
    if lost > 0 {
        let ring = pages.map_or(String::new(), |n| format!(" of {n} pages"));
        warnings.push(format!(
            "WARNING: Kernel records lost (full perf ring{ring} per CPU; raise PTAP_PERF_PAGES): {lost}"
        ));
    }
    if failed_reads > 0 {
        warnings.push(format!(
            "WARNING: Reads of sampled processes that failed (the process had exited or the address was unmapped): {failed_reads}"
        ));
    }
    warnings
}

const FLUSH_EVERY: usize = 1024;

/// Read every ring, then handle the records of all CPUs in time order
/// (a thread's exec on one CPU comes before its next system call on
/// another). Returns the number of records.
/// `flush` renders the output so far, every [`FLUSH_EVERY`] records (the
/// output ring is smaller than a round of full perf rings can fill).
pub(crate) fn drain_rings(
    rings: &mut [perf::Ring],
    runner: &mut sample::Runner,
    flush: &mut dyn FnMut(),
) -> usize {
    let mut arena: Vec<u8> = Vec::new();
    let mut index: Vec<(u64, usize, usize)> = Vec::new();
    let mut scratch = Vec::new();
    for r in rings.iter_mut() {
        r.drain(&mut scratch, |rec| {
            index.push((sample::time(rec), arena.len(), rec.len()));
            arena.extend_from_slice(rec);
        });
    }
    index.sort_by_key(|e| e.0);
    for (i, &(_, at, len)) in index.iter().enumerate() {
        runner.record(&arena[at..at + len]);
        if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
            flush();
        }
    }
    index.len()
}
