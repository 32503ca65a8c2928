/* Fault test snippets: each function misbehaves in one way. Line numbers are asserted by
 * tests/test_native_faults.py through markers: the comment "FAULT: name" ends the line. */
extern int printk(const char *fmt, ...);

int null_read(void)
{
	volatile int *p = (volatile int *)0;
	return *p; /* FAULT: null_read */
}

void null_write(unsigned long where)
{
	*(volatile unsigned long *)where = 1; /* FAULT: null_write */
}

int forever(volatile int *flag)
{
	int n = 0;
	while (!*flag) /* FAULT: forever */
		n++;
	return n;
}

int recurse(int depth)
{
	volatile char pad[256];
	pad[0] = (char)depth;
	return recurse(depth + 1) + pad[0]; /* FAULT: recurse */
}

int divide(int a, int b)
{
	return a / b; /* FAULT: divide */
}

void illegal(void)
{
	__asm__ volatile("ud2"); /* FAULT: illegal */
}

typedef void (*fn_t)(void);

void call_pointer(unsigned long target)
{
	((fn_t)target)(); /* FAULT: call_pointer */
	printk("not reached\n");
}

__attribute__((noinline)) void smash(void)
{
	volatile unsigned long *frame = __builtin_frame_address(0);
	frame[1] = 0xdead0000; /* the return address slot */
}

int smash_caller(void)
{
	smash(); /* FAULT: smash_caller */
	return 1;
}

int log_twice(int x)
{
	printk("x=%d\n", x); /* FAULT: log_twice */
	return x;
}
