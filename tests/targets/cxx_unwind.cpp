// cxx_unwind N: N calls of thrower() (returns for even x, throws for odd x:
// a function that both returns and throws) through middle(), caught in main;
// and N calls of catcher(), which catches thrower's exception itself and
// returns normally (its frame survives every exception).
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

__attribute__((noinline)) int thrower(int x)
{
	asm volatile("" ::: "memory");
	if (x % 2)
		throw std::runtime_error("odd");
	return x;
}

__attribute__((noinline)) int middle(int x)
{
	int r = thrower(x);
	asm volatile("" ::: "memory");
	return r + 1;
}

__attribute__((noinline)) int catcher(int x)
{
	try {
		return thrower(x);
	} catch (const std::exception &) {
		return -1;
	}
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100;
	long caught = 0, sum = 0, neg = 0;
	for (long i = 0; i < n; i++) {
		try {
			sum += middle((int)i);
		} catch (const std::exception &) {
			caught++;
		}
		neg += catcher((int)i) < 0;
	}
	std::printf("caught=%ld sum=%ld neg=%ld\n", caught, sum, neg);
	return 0;
}
