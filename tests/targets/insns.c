/* insns N: calls insn_mix(x), a hand-written function made of every kind of
 * instruction the runtime must run out of line or emulate (push, rip-relative
 * lea, load, test, short jcc, rel32 call, indirect call, short jmp, indirect
 * jmp, loop, syscall, pop, ret), and prints the results. */
#include <stdio.h>
#include <stdlib.h>

long insn_mix(long x);
long mix_data = 1000;

__attribute__((noinline, used)) long mix_helper(long x)
{
	__asm__ volatile("" ::: "memory");
	return x + 7;
}

__asm__(".text\n"
	".globl insn_mix\n"
	".type insn_mix,@function\n"
	"insn_mix:\n"
	"	push %rbx\n"
	"	lea mix_data(%rip), %rax\n"
	"	mov (%rax), %rbx\n"
	"	test %rdi, %rdi\n"
	"	jz 1f\n"
	"	add %rdi, %rbx\n"
	"	call mix_helper\n"
	"	add %rax, %rbx\n"
	"	lea mix_helper(%rip), %rcx\n"
	"	call *%rcx\n"
	"	add %rax, %rbx\n"
	"	jmp 2f\n"
	"1:	mov $100, %rbx\n"
	"2:	lea 3f(%rip), %rdx\n"
	"	jmp *%rdx\n"
	"	ud2\n"
	"3:	mov $3, %ecx\n"
	"4:	add $1, %rbx\n"
	"	loop 4b\n"
	"	mov $39, %eax\n"
	"	syscall\n"
	"	mov %rbx, %rax\n"
	"	pop %rbx\n"
	"	ret\n"
	".size insn_mix, .-insn_mix\n");

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 3, s = 0;
	for (long i = 0; i < n; i++)
		s += insn_mix(i % 3);
	printf("mix0=%ld mix5=%ld total=%ld\n", insn_mix(0), insn_mix(5), s);
	return 0;
}
