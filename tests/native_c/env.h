/* The tiny kernel API the environment test snippets use (bound by tests/test_native_env.py) */
void *alloc_page(void);
void free_page(void *p);
unsigned long virt_to_phys(void *p);
int printk(const char *fmt, ...);
