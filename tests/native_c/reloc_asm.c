/* Loader test: one data word per relocation type, emitted with gas's .reloc directive so each
 * type appears exactly once with a known addend. tests/test_native_loader.py recomputes every
 * value from the symbol addresses (AMD64 psABI 4.4.1). */
long target_var = 5;
int target_fn(int x) { return x + 1; }

__asm__(".pushsection .data.relocs, \"aw\"\n"
	".balign 8\n"
	".globl rel_64\nrel_64: .reloc ., R_X86_64_64, target_var+8\n .quad 0\n"
	".globl rel_pc64\nrel_pc64: .reloc ., R_X86_64_PC64, target_var\n .quad 0\n"
	".globl rel_gotoff64\nrel_gotoff64: .reloc ., R_X86_64_GOTOFF64, target_var\n .quad 0\n"
	".globl rel_gotpc64\nrel_gotpc64: .reloc ., R_X86_64_GOTPC64, 0\n .quad 0\n"
	".globl rel_gotpcrel64\nrel_gotpcrel64: .reloc ., R_X86_64_GOTPCREL64, target_var\n .quad 0\n"
	".globl rel_size64\nrel_size64: .reloc ., R_X86_64_SIZE64, target_fn+3\n .quad 0\n"
	".globl rel_pc32\nrel_pc32: .reloc ., R_X86_64_PC32, target_var-4\n .long 0\n"
	".globl rel_plt32\nrel_plt32: .reloc ., R_X86_64_PLT32, target_fn-4\n .long 0\n"
	".globl rel_32\nrel_32: .reloc ., R_X86_64_32, target_var\n .long 0\n"
	".globl rel_32s\nrel_32s: .reloc ., R_X86_64_32S, target_var+16\n .long 0\n"
	".globl rel_gotpcrel\nrel_gotpcrel: .reloc ., R_X86_64_GOTPCREL, target_var\n .long 0\n"
	".globl rel_gotpcrelx\nrel_gotpcrelx: .reloc ., R_X86_64_GOTPCRELX, target_fn\n .long 0\n"
	".globl rel_rex_gotpcrelx\nrel_rex_gotpcrelx: .reloc ., R_X86_64_REX_GOTPCRELX, target_var\n .long 0\n"
	".globl rel_gotpc32\nrel_gotpc32: .reloc ., R_X86_64_GOTPC32, 0\n .long 0\n"
	".globl rel_size32\nrel_size32: .reloc ., R_X86_64_SIZE32, target_var\n .long 0\n"
	".globl rel_16\nrel_16: .reloc ., R_X86_64_16, 0x1234\n .short 0\n"
	".globl rel_pc16\nrel_pc16: .reloc ., R_X86_64_PC16, rel_8\n .short 0\n"
	".globl rel_8\nrel_8: .reloc ., R_X86_64_8, 0x7f\n .byte 0\n"
	".globl rel_pc8\nrel_pc8: .reloc ., R_X86_64_PC8, rel_16\n .byte 0\n"
	".popsection\n");
