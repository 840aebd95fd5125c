//! Unit tests of `crate::session`.

use super::*;

fn mk(size: usize) -> (Vec<u64>, Session) {
    let mut mem = vec![0u64; Session::total_size(size) / 8];
    // SAFETY: mem outlives the session in each test.
    let s = unsafe { Session::create(mem.as_mut_ptr() as *mut u8, size) };
    (mem, s)
}

#[test]
fn records_roundtrip_and_wrap() {
    let (_m, s) = mk(64);
    let mut got = Vec::new();
    for i in 0..20u8 {
        assert!(s.write_record(REC_TEXT, &[b"ab", &[b'0' + i % 10]]));
        assert!(s.write_record(REC_DIAG, &[b"0123456789abc"]));
        s.drain(|k, p| got.push((k, p.to_vec())));
    }
    assert_eq!(got.len(), 40);
    assert_eq!(got[2], (REC_TEXT, b"ab1".to_vec()));
    assert_eq!(got[39], (REC_DIAG, b"0123456789abc".to_vec()));
    assert_eq!(s.dropped(), 0);
}

#[test]
fn full_ring_drops_and_counts() {
    let (_m, s) = mk(64);
    // each record takes 8 + 16 = 24 bytes: two fit in 64, the third does not.
    assert!(s.write_record(REC_TEXT, &[b"0123456789"]));
    assert!(s.write_record(REC_TEXT, &[b"0123456789"]));
    assert!(!s.write_record(REC_TEXT, &[b"0123456789"]));
    assert_eq!(s.dropped(), 1);
    assert_eq!(s.drain(|_, _| {}), 2);
    assert!(s.write_record(REC_TEXT, &[b"x"]));
}

#[test]
fn unreadable_caller_memory_loses_one_record_not_the_ring() {
    let (_m, s) = mk(256);
    let bad = [Part::Bytes(b"x"), Part::Untrusted { addr: 8, len: 16 }];
    assert!(!s.write_parts(REC_TEXT, &bad));
    let good = *b"hello";
    let ok = [Part::Untrusted {
        addr: good.as_ptr() as u64,
        len: good.len(),
    }];
    assert!(s.write_parts(REC_TEXT, &ok));
    let mut got = Vec::new();
    assert_eq!(s.drain(|k, p| got.push((k, p.to_vec()))), 1);
    assert_eq!(got, vec![(REC_TEXT, b"hello".to_vec())]);
    assert_eq!(s.dropped(), 1);
    assert_eq!(s.pending_bytes(), 0);
}

#[test]
fn a_writer_that_dies_mid_record_does_not_stop_output() {
    let (mut m, s) = mk(256);
    let base = m.as_mut_ptr() as usize;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: the buffer outlives this thread (it exits below).
        let s = unsafe { Session::from_raw(base as *mut u8) };
        s.write_with(REC_TEXT, 10, |_| {
            tx.send(crate::base::sys::gettid()).unwrap();
            // Die between reservation and publication (like a thread
            // killed by exit_group mid-record).
            // SAFETY: SYS_exit ends only this thread; nothing of it is used later.
            unsafe { crate::base::sys::syscall3(crate::base::sys::SYS_EXIT, 0, 0, 0) };
            unreachable!()
        });
    });
    let tid = rx.recv().unwrap();
    while std::path::Path::new(&format!("/proc/{tid}")).exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(s.write_record(REC_TEXT, &[b"after"]));
    let mut got = Vec::new();
    assert_eq!(s.drain(|_, p| got.push(p.to_vec())), 1);
    assert_eq!(got, vec![b"after".to_vec()]);
    assert_eq!(s.dropped(), 1, "the dead writer's record counts as lost");
    assert_eq!(s.pending_bytes(), 0);
}

#[test]
fn a_stalled_running_writer_is_skipped_after_the_timeout() {
    let (mut m, s) = mk(256);
    let base = m.as_mut_ptr() as usize;
    let go = std::sync::Arc::new(std::sync::Barrier::new(2));
    let g2 = go.clone();
    let w = std::thread::spawn(move || {
        // SAFETY: the buffer outlives this thread (joined below).
        let s = unsafe { Session::from_raw(base as *mut u8) };
        s.write_with(REC_TEXT, 3, |pos| {
            g2.wait();
            // Margins of seconds: a loaded machine may not run a thread
            // for tens of milliseconds.
            std::thread::sleep(std::time::Duration::from_millis(3000));
            s.copy_in(pos, b"old");
            true
        })
    });
    go.wait();
    assert!(s.write_record(REC_TEXT, &[b"next"]));
    assert_eq!(s.drain_with(500_000_000, |_, _| {}), 0, "busy: wait");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let mut got = Vec::new();
    assert_eq!(s.drain_with(500_000_000, |_, p| got.push(p.to_vec())), 1);
    assert_eq!(got, vec![b"next".to_vec()]);
    assert!(!w.join().unwrap(), "a skipped record is not published late");
    assert_eq!(s.dropped(), 1);
}

#[test]
fn racing_producers_and_consumer_on_a_tiny_ring_never_overflow() {
    // Debug builds check arithmetic overflow: a stale head with a newer
    // tail used to underflow `h + need - t` and panic in the producer.
    let size = 64;
    let (mut m, _s) = mk(size);
    let base = m.as_mut_ptr() as usize;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut hs = Vec::new();
    for t in 0..3u8 {
        let stop = stop.clone();
        hs.push(std::thread::spawn(move || {
            // SAFETY: the buffer outlives the threads (joined below).
            let s = unsafe { Session::from_raw(base as *mut u8) };
            let mut ok = 0u64;
            let mut tries = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tries += 1;
                if s.write_record(REC_TEXT, &[&[b'a' + t; 5]]) {
                    ok += 1;
                }
            }
            (ok, tries)
        }));
    }
    // SAFETY: as above.
    let s = unsafe { Session::from_raw(base as *mut u8) };
    let mut seen = 0u64;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_millis(500) {
        s.drain(|_, p| {
            assert_eq!(p.len(), 5);
            assert!(p.iter().all(|&b| b == p[0]));
            seen += 1;
        });
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut tries) = (0, 0);
    for h in hs {
        let (o, t) = h.join().expect("producer panicked");
        ok += o;
        tries += t;
    }
    s.drain(|_, _| seen += 1);
    assert_eq!(seen, ok);
    assert_eq!(ok + s.dropped(), tries);
}

#[test]
fn concurrent_producers_never_tear_records() {
    let size = 1 << 12;
    let (mut m, _s) = mk(size);
    let base = m.as_mut_ptr() as usize;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut hs = Vec::new();
    for t in 0..4u8 {
        hs.push(std::thread::spawn(move || {
            // SAFETY: the buffer outlives the threads (joined below).
            let s = unsafe { Session::from_raw(base as *mut u8) };
            let line = [b'a' + t; 37];
            let mut ok = 0u64;
            for _ in 0..20000 {
                if s.write_record(REC_TEXT, &[&line]) {
                    ok += 1;
                }
            }
            ok
        }));
    }
    // SAFETY: as above.
    let s = unsafe { Session::from_raw(base as *mut u8) };
    let d2 = done.clone();
    let mut seen = 0u64;
    let mut written = 0u64;
    let mut finished = 0;
    while finished < 4 {
        s.drain(|_, p| {
            assert_eq!(p.len(), 37);
            assert!(p.iter().all(|&b| b == p[0]));
            seen += 1;
        });
        finished = hs.iter().filter(|h| h.is_finished()).count();
    }
    for h in hs {
        written += h.join().unwrap();
    }
    s.drain(|_, _| seen += 1);
    d2.store(true, Ordering::Relaxed);
    assert_eq!(seen, written);
    assert_eq!(seen + s.dropped(), 80000);
}
