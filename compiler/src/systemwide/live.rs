//! System-wide probes added and removed while a session runs (the REPL with
//! no target): one module's perf events, their rings and the runner of its
//! handlers. Arming, reading and closing are those of a system-wide script
//! (`events.rs`, `sample.rs`); this only lets a module come and go.

use anyhow::{anyhow, Context};
use ptap_rt_core::script::globals::Globals;
use ptap_rt_core::script::load::LoadedModule;
use ptap_rt_core::script::meta::Meta;
use ptap_rt_core::session::Session;

use super::{events, perf, sample};

/// One module armed system-wide.
pub struct LiveModule {
    events: Vec<perf::Event>,
    rings: Vec<perf::Ring>,
    runner: sample::Runner<'static>,
}

// SAFETY: the raw pointers inside are the module's own ring mappings and
// the names its points own; a REPL session keeps the module under its
// mutex, so one thread at a time uses them, whichever thread it is.
unsafe impl Send for LiveModule {}

/// What a closed module lost: (kernel records lost to full rings, reads of
/// sampled processes that failed).
pub struct Losses {
    pub lost: u64,
    pub failed_reads: u64,
}

impl LiveModule {
    /// Arm `module` (metadata `meta`, object file `object`) on every
    /// process; its probes are numbered from `probe_base` in the session.
    /// `g` and `s`: the session's globals and mapping, which outlive it.
    pub fn arm(
        meta: &Meta,
        module: &LoadedModule,
        object: &[u8],
        probe_base: u32,
        g: &'static Globals,
        s: &'static Session,
    ) -> anyhow::Result<LiveModule> {
        if !super::privileged() {
            return Err(anyhow!(super::privilege_error()));
        }
        let pages = super::pages_from_env()?;
        let events::Armed {
            events,
            rings,
            mut points,
            by_id,
            ..
        } = events::arm(meta, module, pages, 0)?;
        for p in &mut points {
            p.probe += probe_base;
        }
        let wants_ids = imports(object, "ptap_h_ppid") || imports(object, "ptap_h_uid");
        let runner = sample::Runner::new(points, by_id, g, s, meta, wants_ids);
        Ok(LiveModule {
            events,
            rings,
            runner,
        })
    }

    /// Run the handlers over what the kernel wrote; `flush` renders the
    /// output so far (called every so many records). Returns the records.
    pub fn drain(&mut self, flush: &mut dyn FnMut()) -> usize {
        super::drain_rings(&mut self.rings, &mut self.runner, flush)
    }

    /// Samples handled.
    pub fn hits(&self) -> u64 {
        self.runner.samples
    }

    /// Perf events (one per point and CPU).
    pub fn events(&self) -> usize {
        self.events.len()
    }

    /// Stop (`false`) or restart the events; what they wrote stays to drain.
    pub fn set_on(&self, on: bool) -> anyhow::Result<()> {
        for ev in &self.events {
            if on {
                ev.enable().context("cannot enable a perf event")?;
            } else {
                ev.disable();
            }
        }
        Ok(())
    }

    /// Stop the events, run the handlers over what is left, close them
    /// (the kernel removes the uprobes).
    pub fn close(mut self, flush: &mut dyn FnMut()) -> Losses {
        for ev in &self.events {
            ev.disable();
        }
        super::drain_rings(&mut self.rings, &mut self.runner, flush);
        let counted: Option<u64> = self.events.iter().map(|e| e.lost()).sum();
        Losses {
            lost: counted.map_or(self.runner.lost, |c| c.max(self.runner.lost)),
            failed_reads: self.runner.failed_reads(),
        }
    }
}

/// Does the module's object call `name` (a helper import)?
fn imports(object: &[u8], name: &str) -> bool {
    let n = name.as_bytes();
    object
        .windows(n.len() + 1)
        .any(|w| &w[..n.len()] == n && w[n.len()] == 0)
}
