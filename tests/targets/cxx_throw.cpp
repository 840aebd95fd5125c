// cxx_throw: exceptions thrown through kretprobed frames (thrower, middle).
#include <cstdio>
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

int main()
{
	int caught = 0;
	long sum = 0;
	for (int i = 0; i < 100; i++) {
		try {
			sum += middle(i);
		} catch (const std::exception &) {
			caught++;
		}
	}
	std::printf("caught=%d sum=%ld\n", caught, sum);
	return 0;
}
