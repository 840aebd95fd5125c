//! Injected into a running process (`ptap -x`), the runtime comes after
//! libc in the lookup order, so its interposed signal functions are not
//! called. For the functions that set signal masks and actions, the
//! process's own calls are redirected instead: the GOT entries (PLT slots
//! and GLOB_DAT function pointers) of every object loaded at the attach
//! (not libc, not the dynamic loader, not the runtime) that name them are
//! pointed at the runtime's versions, which take the managed signals out
//! of masks and keep the runtime's handlers in place. (Their private
//! `_impl` versions: the address of an exported symbol taken inside the
//! runtime would be libc's, the first definition in the process.) Objects loaded later
//! and libc's internal calls are not redirected.

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

/// (name, the runtime's version, the cache of the real one).
fn hooks() -> [(&'static [u8], usize, &'static AtomicUsize); 9] {
    use super::masks as m;
    [
        (
            b"sigprocmask",
            super::sigprocmask_impl as *const () as usize,
            &super::REAL_SIGPROCMASK,
        ),
        (
            b"pthread_sigmask",
            super::pthread_sigmask_impl as *const () as usize,
            &super::REAL_PTHREAD_SIGMASK,
        ),
        (
            b"sigaction",
            super::sigaction_impl as *const () as usize,
            &super::REAL_SIGACTION,
        ),
        (
            b"signal",
            super::signal_impl as *const () as usize,
            &super::REAL_SIGNAL,
        ),
        (
            b"sigsuspend",
            m::sigsuspend_impl as *const () as usize,
            &m::REAL_SIGSUSPEND,
        ),
        (
            b"ppoll",
            m::ppoll_impl as *const () as usize,
            &m::REAL_PPOLL,
        ),
        (
            b"pselect",
            m::pselect_impl as *const () as usize,
            &m::REAL_PSELECT,
        ),
        (
            b"epoll_pwait",
            m::epoll_pwait_impl as *const () as usize,
            &m::REAL_EPOLL_PWAIT,
        ),
        (
            b"epoll_pwait2",
            m::epoll_pwait2_impl as *const () as usize,
            &m::REAL_EPOLL_PWAIT2,
        ),
    ]
}

/// The real functions, from libc itself (RTLD_NEXT is not meaningful for
/// a library dlopen'ed into a running process).
fn resolve_from_libc() {
    // SAFETY: dlopen of the already loaded libc (RTLD_NOLOAD) and dlsym.
    unsafe {
        let h = libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if h.is_null() {
            return;
        }
        for (name, _, cache) in hooks() {
            let mut z = [0u8; 32];
            z[..name.len()].copy_from_slice(name);
            let p = libc::dlsym(h, z.as_ptr() as *const c_char) as usize;
            if p != 0 {
                cache.store(p, Ordering::Release);
            }
        }
        libc::dlclose(h);
    }
}

const PT_DYNAMIC: u32 = 2;
const PT_GNU_RELRO: u32 = 0x6474_e552;
const DT_NULL: i64 = 0;
const DT_PLTRELSZ: i64 = 2;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_RELA: i64 = 7;
const DT_RELASZ: i64 = 8;
const DT_JMPREL: i64 = 23;
const R_X86_64_GLOB_DAT: u64 = 6;
const R_X86_64_JUMP_SLOT: u64 = 7;

#[repr(C)]
struct Sym {
    name: u32,
    info: u8,
    other: u8,
    shndx: u16,
    value: u64,
    size: u64,
}

#[repr(C)]
struct Rela {
    offset: u64,
    info: u64,
    addend: i64,
}

/// Redirect the GOT entries of the process's objects; returns how many.
pub fn hook_injected() -> usize {
    resolve_from_libc();
    let mut n = 0usize;
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> c_int {
        // SAFETY: dl_iterate_phdr hands a valid info; data is our counter.
        unsafe {
            *(data as *mut usize) += hook_object(&*info);
        }
        0
    }
    // SAFETY: the callback only reads the loader's structures and writes
    // GOT entries of the objects it is given.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut n as *mut usize as *mut c_void) };
    n
}

fn skip(name: &[u8], base: u64) -> bool {
    let file = name.rsplit(|&c| c == b'/').next().unwrap_or(name);
    // SAFETY: dladdr on one of our own functions.
    let mine = unsafe {
        let mut me: libc::Dl_info = core::mem::zeroed();
        libc::dladdr(hook_injected as *const c_void, &mut me) != 0 && me.dli_fbase as u64 == base
    };
    mine || file.starts_with(b"libc.so")
        || file.starts_with(b"libptap_rt")
        || file.starts_with(b"ld-linux")
        || file.starts_with(b"linux-vdso")
}

/// # Safety
/// `info` describes a loaded object (from dl_iterate_phdr).
unsafe fn hook_object(info: &libc::dl_phdr_info) -> usize {
    let base = info.dlpi_addr;
    // SAFETY: contract: name is a C string, phdrs point to dlpi_phnum headers.
    unsafe {
        let name = if info.dlpi_name.is_null() {
            &b""[..]
        } else {
            core::ffi::CStr::from_ptr(info.dlpi_name).to_bytes()
        };
        if skip(name, base) {
            return 0;
        }
        let phdrs = core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
        let Some(dynp) = phdrs.iter().find(|p| p.p_type == PT_DYNAMIC) else {
            return 0;
        };
        let relro = phdrs
            .iter()
            .find(|p| p.p_type == PT_GNU_RELRO)
            .map(|p| (base + p.p_vaddr, base + p.p_vaddr + p.p_memsz));
        let (mut symtab, mut strtab) = (0u64, 0u64);
        let (mut rela, mut relasz, mut jmprel, mut pltrelsz) = (0u64, 0u64, 0u64, 0u64);
        let mut d = (base + dynp.p_vaddr) as *const [i64; 2];
        // The loader made the d_ptr entries absolute (x86-64: writable
        // dynamic section); relative ones are below the base.
        let abs = |v: u64| if v < base { v + base } else { v };
        loop {
            let [tag, val] = *d;
            match tag {
                DT_NULL => break,
                DT_SYMTAB => symtab = abs(val as u64),
                DT_STRTAB => strtab = abs(val as u64),
                DT_RELA => rela = abs(val as u64),
                DT_RELASZ => relasz = val as u64,
                DT_JMPREL => jmprel = abs(val as u64),
                DT_PLTRELSZ => pltrelsz = val as u64,
                _ => {}
            }
            d = d.add(1);
        }
        if symtab == 0 || strtab == 0 {
            return 0;
        }
        let mut n = 0;
        for (start, size) in [(rela, relasz), (jmprel, pltrelsz)] {
            if start == 0 {
                continue;
            }
            let count = size as usize / core::mem::size_of::<Rela>();
            let rels = core::slice::from_raw_parts(start as *const Rela, count);
            for r in rels {
                let ty = r.info & 0xffff_ffff;
                if ty != R_X86_64_JUMP_SLOT && ty != R_X86_64_GLOB_DAT {
                    continue;
                }
                let sym = &*((symtab as *const Sym).add((r.info >> 32) as usize));
                let sname = core::ffi::CStr::from_ptr((strtab + sym.name as u64) as *const c_char)
                    .to_bytes();
                let Some(&(_, mine, _)) = hooks().iter().find(|(h, _, _)| *h == sname) else {
                    continue;
                };
                if store_got(base + r.offset, mine as u64, relro) {
                    n += 1;
                }
            }
        }
        n
    }
}

/// Store `v` in the GOT slot at `at` (8-byte aligned: one atomic store),
/// making a RELRO page writable for the moment.
///
/// # Safety
/// `at` is a GOT slot of a loaded object.
unsafe fn store_got(at: u64, v: u64, relro: Option<(u64, u64)>) -> bool {
    if !at.is_multiple_of(8) {
        return false;
    }
    let ro = relro.is_some_and(|(lo, hi)| at >= lo && at < hi);
    let page = at & !0xfff;
    // SAFETY: contract; the page is this object's GOT (read-only after
    // relocation when inside its RELRO range), restored afterwards.
    unsafe {
        if ro && ptap_rt_core::base::sys::mprotect(page as usize, 4096, 3) != 0 {
            return false;
        }
        (*(at as *const AtomicUsize)).store(v as usize, Ordering::Release);
        if ro {
            ptap_rt_core::base::sys::mprotect(page as usize, 4096, 1);
        }
    }
    true
}
