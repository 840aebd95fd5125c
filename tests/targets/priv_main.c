/* priv_main N: calls priv_fn() of libpriv.so (beside it, DT_RUNPATH $ORIGIN) N times. */
#include <stdio.h>
#include <stdlib.h>

long priv_fn(long x);

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 3, sum = 0;
	for (long i = 0; i < n; i++)
		sum += priv_fn(i);
	printf("sum=%ld\n", sum);
	return 0;
}
