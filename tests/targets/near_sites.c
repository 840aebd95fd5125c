/* near_sites N: calls work(i) N times and prints "sum=S". work's first
 * instructions are fixed (assembly): push %rbp (work+0, 1 byte),
 * mov %rsp,%rbp (work+1, 3 bytes), mov %edi,%eax (work+4, 2 bytes): a jump
 * at work (5 bytes) replaces all three, so probes at work+1 and work+4 lie
 * inside the bytes a jump-optimized probe at work would replace. */
#include <stdio.h>
#include <stdlib.h>

long work(long x);
__asm__(".text\n"
	".globl work\n"
	".type work,@function\n"
	"work:\n"
	"	push %rbp\n"
	"	mov %rsp,%rbp\n"
	"	mov %edi,%eax\n"
	"	add %eax,%eax\n"
	"	pop %rbp\n"
	"	ret\n"
	".size work,.-work\n");

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10, sum = 0;
	for (long i = 0; i < n; i++)
		sum += work(i);
	printf("sum=%ld\n", sum);
	return 0;
}
