/* ret_vec N: calls pair_of() (a struct of two doubles: returned in xmm0
 * and xmm1) and, where the CPU has AVX, wide_of() (an __m256d: returned in
 * ymm0) N times each, and prints what the callers got:
 * "pair=<sum> live=<sum> wide=<sum>" (wide=skip without AVX). Under
 * probes whose handlers clobber every vector register, the sums must not
 * change. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>

struct pair {
	double a, b;
};

__attribute__((noinline)) struct pair pair_of(double x)
{
	struct pair p = { x * 2, x + 0.5 };
	__asm__ volatile("" ::: "memory");
	return p;
}

__attribute__((noinline, target("avx"))) __m256d wide_of(double x)
{
	__asm__ volatile("" ::: "memory");
	return _mm256_set_pd(x, x + 1, x + 2, x + 3);
}

__attribute__((noinline, target("avx"))) static double wide_sum(long n)
{
	double s = 0;
	for (long i = 0; i < n; i++) {
		double v[4];
		_mm256_storeu_pd(v, wide_of((double)i));
		s += v[0] + v[1] + v[2] + v[3];
	}
	return s;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10;
	/* Twelve sums live across every call: with -fipa-ra (GCC -O2) they
	 * stay in vector registers pair_of does not write, xmm8-15 among
	 * them, instead of being saved around the call. */
	double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, s8 = 0, s9 = 0,
	       s10 = 0, s11 = 0;
	for (long i = 0; i < n; i++) {
		struct pair p = pair_of((double)i);
		s0 += p.a + p.b;
		s1 += p.a * 2;
		s2 += p.b * 3;
		s3 += p.a - p.b;
		s4 += p.a * 5;
		s5 += p.b * 6;
		s6 += p.a * 7;
		s7 += p.b * 8;
		s8 += p.a * 9;
		s9 += p.b * 10;
		s10 += p.a * 11;
		s11 += p.b * 12;
	}
	printf("pair=%.1f ", s0);
	printf("live=%.1f ", s1 + s2 + s3 + s4 + s5 + s6 + s7 + s8 + s9 + s10 + s11);
	if (__builtin_cpu_supports("avx"))
		printf("wide=%.1f\n", wide_sum(n));
	else
		printf("wide=skip\n");
	return 0;
}
