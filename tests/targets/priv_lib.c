/* A private shared library (libpriv.so) for tests/targets/priv_main.c: found
 * through DT_RUNPATH $ORIGIN, not through the system search path. */
__attribute__((noinline)) long priv_fn(long x)
{
	__asm__ volatile("" ::: "memory");
	return x * 10;
}
