//! Private (hidden) memcpy / memmove / memset / memcmp / bcmp.
//!
//! rustc lowers struct copies and array zeroing to calls to these symbols.
//! Bound to libc's, a probe on libc's memcpy would be hit from inside our
//! own SIGTRAP handler (copying a pt_regs) before the reentrancy flag is
//! set, and recurse until the stack overflows. Defined here with hidden
//! visibility, every call from the runtime binds to these at link time and
//! the target's own memcpy stays libc's. `rep movsb`/`stosb` are fast on
//! CPUs with ERMS; DF is clear on function entry and in signal handlers,
//! and nothing here ever sets it (memmove's backward copy is a loop).

core::arch::global_asm!(
    ".text",
    ".globl memcpy",
    ".hidden memcpy",
    ".type memcpy,@function",
    "memcpy:",
    "mov rax, rdi",
    "mov rcx, rdx",
    "rep movsb",
    "ret",
    ".size memcpy, .-memcpy",
    ".globl memmove",
    ".hidden memmove",
    ".type memmove,@function",
    "memmove:",
    "mov rax, rdi",
    "mov rcx, rdx",
    "cmp rdi, rsi",
    "jbe 2f",
    "lea r8, [rsi + rdx]",
    "cmp rdi, r8",
    "jae 2f",
    // Overlapping with dst above src: copy backwards, 8 bytes then 1 at a
    // time, without `std` (a fault inside a `std; rep movsb` would leave
    // DF=1 in the context the fault recovery resumes).
    "add rsi, rdx",
    "add rdi, rdx",
    "5:",
    "cmp rcx, 8",
    "jb 6f",
    "sub rsi, 8",
    "sub rdi, 8",
    "mov r8, qword ptr [rsi]",
    "mov qword ptr [rdi], r8",
    "sub rcx, 8",
    "jmp 5b",
    "6:",
    "test rcx, rcx",
    "jz 7f",
    "dec rsi",
    "dec rdi",
    "mov r8b, byte ptr [rsi]",
    "mov byte ptr [rdi], r8b",
    "dec rcx",
    "jmp 6b",
    "7:",
    "ret",
    "2:",
    "rep movsb",
    "ret",
    ".size memmove, .-memmove",
    ".globl memset",
    ".hidden memset",
    ".type memset,@function",
    "memset:",
    "mov r9, rdi",
    "mov eax, esi",
    "mov rcx, rdx",
    "rep stosb",
    "mov rax, r9",
    "ret",
    ".size memset, .-memset",
    ".globl memcmp",
    ".hidden memcmp",
    ".type memcmp,@function",
    ".globl bcmp",
    ".hidden bcmp",
    ".type bcmp,@function",
    "memcmp:",
    "bcmp:",
    "xor eax, eax",
    "test rdx, rdx",
    "jz 4f",
    "3:",
    "movzx eax, byte ptr [rdi]",
    "movzx ecx, byte ptr [rsi]",
    "sub eax, ecx",
    "jnz 4f",
    "inc rdi",
    "inc rsi",
    "dec rdx",
    "jnz 3b",
    "4:",
    "ret",
    ".size memcmp, .-memcmp",
);

#[cfg(test)]
mod tests {
    extern "C" {
        fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8;
        fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32;
        fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8;
    }

    #[test]
    fn overlapping_moves_and_compares() {
        let mut v: Vec<u8> = (0..32).collect();
        // SAFETY: ranges inside v.
        unsafe {
            memmove(v.as_mut_ptr().add(4), v.as_ptr(), 16);
        }
        assert_eq!(&v[4..20], &(0..16).collect::<Vec<u8>>()[..]);
        let mut w: Vec<u8> = (0..32).collect();
        // SAFETY: ranges inside w.
        unsafe {
            memmove(w.as_mut_ptr(), w.as_ptr().add(4), 16);
            memset(w.as_mut_ptr().add(20), 7, 3);
            assert_eq!(memcmp(b"abc".as_ptr(), b"abd".as_ptr(), 3).signum(), -1);
            assert_eq!(memcmp(b"abc".as_ptr(), b"abc".as_ptr(), 3), 0);
        }
        assert_eq!(&w[..16], &(4..20).collect::<Vec<u8>>()[..]);
        assert_eq!(&w[20..23], &[7, 7, 7]);
    }

    #[test]
    fn backward_moves_of_every_length_and_overlap() {
        for n in 0..40usize {
            for shift in 1..12usize {
                let mut v: Vec<u8> = (0..64).collect();
                // SAFETY: dst = src + shift, both ranges inside v (n + shift < 64).
                unsafe { memmove(v.as_mut_ptr().add(shift), v.as_ptr(), n) };
                let want: Vec<u8> = (0..n as u8).collect();
                assert_eq!(&v[shift..shift + n], &want[..], "n={n} shift={shift}");
                assert_eq!(&v[..shift], &(0..shift as u8).collect::<Vec<u8>>()[..]);
            }
        }
    }
}
