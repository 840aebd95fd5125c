/* opt_float: calls fmix(double, long, double) three times; prints the sum
 * (10.25 when every call sees its own float arguments). */
#include <stdio.h>

__attribute__((noinline)) double fmix(double a, long b, double c)
{
	return a * b + c;
}

int main(void)
{
	double s = 0;
	for (int i = 0; i < 3; i++)
		s += fmix(1.5 + i, i, 0.25);
	printf("s=%.2f\n", s);
	return 0;
}
