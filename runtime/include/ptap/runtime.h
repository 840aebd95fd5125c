/*
 * ptap/runtime.h - helpers for probe handlers (compiled scripts and C
 * modules). All are safe on the hit path: no allocation, no locks, no libc.
 */
#ifndef PTAP_RUNTIME_H
#define PTAP_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Fault-free copy of target memory: 0, or -EFAULT (-14). */
int ptap_probe_read(void *dst, uint64_t src, size_t len);
/* Fault-free string copy, NUL-terminated, at most max-1 bytes: length or -14. */
int64_t ptap_probe_read_str(char *dst, uint64_t src, size_t max);
/* One text record to ptap's output: 0, or -1 if the ring was full (counted lost). */
int ptap_write(const void *buf, size_t len);
/* One binary record {u32 fmt_id, u32 n, u64 args[n]} for ptap to format. */
int ptap_emit(uint32_t fmt_id, const uint64_t *args, uint32_t n);
int ptap_tid(void);
int ptap_pid(void);
/* Process name (comm at start), NUL-terminated; returns its length. */
size_t ptap_execname(char *dst, size_t max);
/* Probe hits and runtime SIGTRAPs in this process so far. */
void ptap_rt_stats(unsigned long *hits, unsigned long *traps);
/* For tests: count reads of the runtime's site table (on != 0 restarts the
 * count at 0, 0 stops it); the count so far, and the int3 traps of libc
 * system call sites moved out of libc for syscall probes. */
void ptap_rt_site_count(int on);
void ptap_rt_site_stats(unsigned long *lookups, unsigned long *syscall_int3);

#ifdef __cplusplus
}
#endif

#endif
