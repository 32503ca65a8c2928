/* Environment test snippets: MMIO widths, DMA, port I/O, logging, data slots. */
#include "env.h"

struct vm_ctx { unsigned long magic; unsigned long pages; };
extern struct vm_ctx kernel_vm;

void mmio_widths(volatile unsigned char *bar)
{
	*(volatile unsigned int *)(bar + 0x40) = 0x11223344;
	*(volatile unsigned long *)(bar + 0x48) = 0x5566778899aabbccUL;
	*(volatile unsigned short *)(bar + 0x52) = 0xbeef;
	*(volatile unsigned char *)(bar + 0x57) = 0x7a;
	*(volatile unsigned int *)(bar + 0x62) = 0xcafe; /* misaligned dword */
}

unsigned long mmio_reads(volatile unsigned char *bar)
{
	unsigned long s = *(volatile unsigned int *)(bar + 0x100);
	s += *(volatile unsigned long *)(bar + 0x108);
	s += *(volatile unsigned short *)(bar + 0x112);
	s += *(volatile unsigned char *)(bar + 0x113);
	return s;
}

/* DMA: fill a page we allocate, report its physical address */
unsigned long dma_page(unsigned char seed)
{
	unsigned char *p = alloc_page();
	for (int i = 0; i < 4096; i++)
		p[i] = (unsigned char)(seed + i);
	return virt_to_phys(p);
}

unsigned long checksum(const unsigned char *p, unsigned long n)
{
	unsigned long s = 0;
	for (unsigned long i = 0; i < n; i++)
		s = s * 31 + p[i];
	return s;
}

void release(void *p) { free_page(p); }

static unsigned long static_buffer[8];
unsigned long static_phys(void) { return virt_to_phys(static_buffer); }

/* PCI configuration mechanism #1 */
static inline void outl(unsigned short port, unsigned int v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline unsigned int inl(unsigned short port) { unsigned int v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline unsigned short inw(unsigned short port) { unsigned short v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline unsigned char inb(unsigned short port) { unsigned char v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void outw(unsigned short port, unsigned short v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outb(unsigned short port, unsigned char v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }

static unsigned int addr(unsigned bus, unsigned dev, unsigned fn, unsigned reg)
{
	return 0x80000000u | (bus << 16) | (dev << 11) | (fn << 8) | (reg & 0xfc);
}

unsigned int pci_read32(unsigned bus, unsigned dev, unsigned fn, unsigned reg)
{
	outl(0xcf8, addr(bus, dev, fn, reg));
	return inl(0xcfc);
}

unsigned int pci_read16(unsigned bus, unsigned dev, unsigned fn, unsigned reg)
{
	outl(0xcf8, addr(bus, dev, fn, reg));
	return inw(0xcfc + (reg & 2));
}

unsigned int pci_read8(unsigned bus, unsigned dev, unsigned fn, unsigned reg)
{
	outl(0xcf8, addr(bus, dev, fn, reg));
	return inb(0xcfc + (reg & 3));
}

void pci_write16(unsigned bus, unsigned dev, unsigned fn, unsigned reg, unsigned short v)
{
	outl(0xcf8, addr(bus, dev, fn, reg));
	outw(0xcfc + (reg & 2), v);
}

unsigned int read_disabled(void)
{
	outl(0xcf8, 0x00001000); /* enable bit clear */
	return inl(0xcfc);
}

/* scan every bus/device/function for class 0C0330 (xHCI); returns how many, first BDF */
int scan_xhci(unsigned int *first)
{
	int found = 0;
	for (unsigned bus = 0; bus < 256; bus++)
		for (unsigned dev = 0; dev < 32; dev++)
			for (unsigned fn = 0; fn < 8; fn++) {
				unsigned int id = pci_read32(bus, dev, fn, 0);
				if ((id & 0xffff) == 0xffff)
					continue;
				if ((pci_read32(bus, dev, fn, 8) >> 8) == 0x0c0330) {
					if (!found)
						*first = (bus << 8) | (dev << 3) | fn;
					found++;
				}
			}
	return found;
}

unsigned char com1(const char *s)
{
	while (*s)
		outb(0x3f8, (unsigned char)*s++);
	return inb(0x3fd);
}

/* logging */
int log_all(void)
{
	printk("d=%d i=%i u=%u x=%x X=%X o=%o\n", -5, 42, 4000000000u, 0xbeef, 0xbeef, 8);
	printk("[%5d|%-5d|%05d|%+d|% d]\n", 42, 42, 42, 42, 42);
	printk("%ld %lu %lx %llx %zu %hhx %hd\n", -1L, 18446744073709551615UL, 0xfeedUL,
	       0x1122334455667788ULL, (unsigned long)7, 0x1ff, 70000);
	printk("%s|%10s|%-6s|%.2s|%c|%%|%p|%p\n", "str", "right", "left", "trunc", 'Q',
	       (void *)0x1000, (void *)0);
	printk("%#x %#o %08.3f %*d %-*d| %s\n", 255, 8, 3.14159, 4, 7, 3, 9, (char *)0);
	printk("%d %d %d %d %d %d %d %d\n", 1, 2, 3, 4, 5, 6, 7, 8);
	return 6;
}

unsigned long vm_magic(void)
{
	kernel_vm.pages++;
	return kernel_vm.magic;
}

int my_hook(int a, int b);
int use_hook(void) { return my_hook(6, 7); }
