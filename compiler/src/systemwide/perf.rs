//! One perf event: its file descriptor and, for the first event of each
//! CPU, the ring buffer the kernel writes that CPU's records into (the
//! other events of the CPU are redirected there with
//! `PERF_EVENT_IOC_SET_OUTPUT`, so ptap reads one ring per CPU).
//!
//! The system call and the ioctls come from `perf-event-open-sys`
//! (bindings generated from the kernel headers); the ring protocol
//! (data_head / data_tail, records that wrap around the end) is a few lines
//! over the mapped page.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use perf_event_open_sys as sys;
use sys::bindings::{perf_event_attr, perf_event_mmap_page};

/// Bytes of one page (x86-64).
pub const PAGE: usize = 4096;

/// An open perf event (closed on drop).
pub struct Event {
    fd: OwnedFd,
    /// The kernel's id of this event (`PERF_SAMPLE_IDENTIFIER` in samples).
    pub id: u64,
    lost_readable: bool,
}

impl Event {
    /// `perf_event_open(attr, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC)`, with
    /// the count of lost samples readable (`PERF_FORMAT_LOST`, Linux 6.0)
    /// when the kernel has it.
    pub fn open(attr: &mut perf_event_attr, pid: i32, cpu: i32) -> Result<Event, std::io::Error> {
        attr.read_format = (sys::bindings::PERF_FORMAT_ID | sys::bindings::PERF_FORMAT_LOST) as u64;
        match Event::open_as(attr, pid, cpu) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                attr.read_format = sys::bindings::PERF_FORMAT_ID as u64;
                Event::open_as(attr, pid, cpu)
            }
            r => r,
        }
    }

    fn open_as(attr: &mut perf_event_attr, pid: i32, cpu: i32) -> Result<Event, std::io::Error> {
        attr.size = std::mem::size_of::<perf_event_attr>() as u32;
        // SAFETY: attr is a valid, sized perf_event_attr; the uprobe path
        // it may point to (config1) outlives the call.
        let fd = unsafe {
            sys::perf_event_open(attr, pid, cpu, -1, sys::bindings::PERF_FLAG_FD_CLOEXEC as _)
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut id: u64 = 0;
        // SAFETY: PERF_EVENT_IOC_ID writes one u64.
        if unsafe { sys::ioctls::ID(fd.as_raw_fd(), &mut id) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let lost_readable = attr.read_format & sys::bindings::PERF_FORMAT_LOST as u64 != 0;
        Ok(Event {
            fd,
            id,
            lost_readable,
        })
    }

    /// Samples of this event the kernel could not write (ring full), when
    /// the kernel counts them per event.
    pub fn lost(&self) -> Option<u64> {
        if !self.lost_readable {
            return None;
        }
        // value, id, lost
        let mut v = [0u64; 3];
        // SAFETY: reading into our own 24-byte buffer.
        let n = unsafe { libc::read(self.fd(), v.as_mut_ptr() as *mut libc::c_void, 24) };
        (n == 24).then_some(v[2])
    }

    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Send this event's records to `ring`'s buffer (same CPU).
    pub fn output_to(&self, ring: &Ring) -> Result<(), std::io::Error> {
        // SAFETY: both are perf event descriptors of ours.
        if unsafe { sys::ioctls::SET_OUTPUT(self.fd(), ring.fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// A tracepoint filter (`ret < 0`).
    pub fn set_filter(&self, filter: &str) -> Result<(), std::io::Error> {
        let c = std::ffi::CString::new(filter).map_err(std::io::Error::other)?;
        // SAFETY: a NUL-terminated string that outlives the call.
        if unsafe { sys::ioctls::SET_FILTER(self.fd(), c.as_ptr() as *mut _) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn enable(&self) -> Result<(), std::io::Error> {
        // SAFETY: a perf event descriptor of ours.
        if unsafe { sys::ioctls::ENABLE(self.fd(), 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn disable(&self) {
        // SAFETY: a perf event descriptor of ours.
        unsafe { sys::ioctls::DISABLE(self.fd(), 0) };
    }
}

/// A mapped ring buffer: one metadata page, then `pages` data pages.
pub struct Ring {
    fd: i32,
    base: *mut u8,
    len: usize,
    data_size: usize,
}

impl Ring {
    /// Map `ev`'s ring (`pages` a power of two).
    pub fn map(ev: &Event, pages: usize) -> Result<Ring, std::io::Error> {
        let len = (pages + 1) * PAGE;
        // SAFETY: mapping a perf event's ring as the ABI asks (read-write so
        // that data_tail can be written back).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                ev.fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Ring {
            fd: ev.fd(),
            base: p as *mut u8,
            len,
            data_size: pages * PAGE,
        })
    }

    fn meta(&self) -> *mut perf_event_mmap_page {
        self.base as *mut perf_event_mmap_page
    }

    /// Call `f` with each complete record (header included) now in the
    /// ring, then free their space. Returns the number of records.
    pub fn drain(&mut self, scratch: &mut Vec<u8>, mut f: impl FnMut(&[u8])) -> usize {
        let m = self.meta();
        // SAFETY: the metadata page is mapped; data_head is written by the
        // kernel (read it with acquire ordering, as the ABI asks).
        let head = unsafe {
            std::sync::atomic::AtomicU64::from_ptr(std::ptr::addr_of_mut!((*m).data_head))
                .load(std::sync::atomic::Ordering::Acquire)
        };
        // SAFETY: as above; data_tail is ours.
        let tail_ptr = unsafe { std::ptr::addr_of_mut!((*m).data_tail) };
        // SAFETY: as above.
        let mut tail = unsafe { tail_ptr.read_volatile() };
        // SAFETY: the data area follows the metadata page.
        let data = unsafe { self.base.add(PAGE) };
        let mask = self.data_size as u64 - 1;
        let mut n = 0;
        while tail + 8 <= head {
            let off = (tail & mask) as usize;
            let mut hdr = [0u8; 8];
            copy_out(data, self.data_size, off, &mut hdr);
            let size = u16::from_le_bytes([hdr[6], hdr[7]]) as usize;
            if size < 8 || tail + size as u64 > head {
                break;
            }
            scratch.clear();
            scratch.resize(size, 0);
            copy_out(data, self.data_size, off, scratch);
            f(scratch);
            tail += size as u64;
            n += 1;
        }
        // SAFETY: release the space to the kernel (after our reads).
        unsafe {
            std::sync::atomic::AtomicU64::from_ptr(tail_ptr)
                .store(tail, std::sync::atomic::Ordering::Release)
        };
        n
    }
}

/// Copy `out.len()` bytes at `off` of the circular data area.
fn copy_out(data: *const u8, size: usize, off: usize, out: &mut [u8]) {
    let first = out.len().min(size - off);
    // SAFETY: off < size and both pieces lie inside the mapped data area.
    unsafe {
        std::ptr::copy_nonoverlapping(data.add(off), out.as_mut_ptr(), first);
        std::ptr::copy_nonoverlapping(data, out.as_mut_ptr().add(first), out.len() - first);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: our mapping of self.len bytes.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}
