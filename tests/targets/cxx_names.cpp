// cxx_names: C++ functions probed by their demangled names: a namespace,
// a class with overloads, a template, a struct's methods, two functions
// of the same name in two namespaces, and a function with a cold part
// (GCC moves the call of a cold function to thrower.cold).
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#define NOINLINE __attribute__((noinline))

namespace ns {
struct Class {
	long k;
	NOINLINE long method(int x) { asm volatile("" ::: "memory"); return k + x; }
	NOINLINE long method(long x, int y) { asm volatile("" ::: "memory"); return k * x + y; }
};
NOINLINE long compute(long x) { asm volatile("" ::: "memory"); return x + 1; }
} // namespace ns

namespace other {
NOINLINE long compute(long x) { asm volatile("" ::: "memory"); return x + 2; }
} // namespace other

template <typename T> NOINLINE T tmax(T a, T b)
{
	asm volatile("" ::: "memory");
	return a > b ? a : b;
}

struct Parser {
	int pos;
	NOINLINE int parse(int c) { asm volatile("" ::: "memory"); pos += c; return pos; }
	NOINLINE int peek(int c) const { asm volatile("" ::: "memory"); return pos + c; }
};

__attribute__((cold, noinline)) void rare(long x)
{
	std::fprintf(stderr, "rare %ld\n", x);
}

NOINLINE long thrower(long x)
{
	asm volatile("" ::: "memory");
	if (x % 7 == 0) {
		rare(x);
		return -x;
	}
	if (x % 5 == 4)
		throw std::runtime_error("four");
	return x;
}

NOINLINE long middle(long x)
{
	long r = thrower(x);
	asm volatile("" ::: "memory");
	return r + 1;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? std::atoi(argv[1]) : 10;
	ns::Class c{3};
	Parser p{0};
	long sum = 0;
	int caught = 0;
	for (int i = 0; i < n; i++) {
		sum += c.method(i) + c.method((long)i, 2);
		sum += ns::compute(i) + other::compute(i);
		sum += tmax(i, 5) + (long)tmax(1.5 * i, 2.0);
		sum += p.parse(1) + p.peek(2);
		try {
			sum += middle(i);
		} catch (const std::exception &) {
			caught++;
		}
	}
	std::printf("sum=%ld caught=%d\n", sum, caught);
	return 0;
}
