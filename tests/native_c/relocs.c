/* Loader test: every function here touches code, data, bss, rodata, an undefined function and
 * an undefined data symbol, so each code model yields its relocation types. */
extern int ext_add(int a, int b);
extern unsigned long ext_counter;

int table[4] = {10, 20, 30, 40};
static const char greeting[] = "hello";
static long zeroed[64];
int (*callback)(int, int) = ext_add;
long *const ptr_to_bss = &zeroed[3];

static int twice(int x) { return 2 * x; }

int sum8(int a, int b, int c, int d, int e, int f, int g, int h)
{
	return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h;
}

int use_all(int i)
{
	zeroed[i & 63] += table[i & 3];
	ext_counter += 1;
	return twice(table[i & 3]) + greeting[i % 5] + (int)zeroed[i & 63] + callback(i, 1) +
	       (int)*ptr_to_bss;
}

unsigned long counter_address(void) { return (unsigned long)&ext_counter; }
long bss_word(int i) { return zeroed[i & 63]; }
int direct(int x) { return ext_add(x, 2) * 3; }
