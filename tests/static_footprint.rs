//! The allocator's statics cost a program no resident memory it does not use: large
//! tables start as zero bytes, so they sit in `.bss` (pages mapped only when written)
//! rather than in `.data` (pages mapped from the file, which the kernel maps together
//! with their neighbours on the first read). Before the zone array, the cpuset tree and
//! the published placement were made zero, this binary's `.data` held 240 KiB of them.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

/// Size of the section named `want` in the ELF64 file `elf`.
fn section_size(elf: &[u8], want: &str) -> Option<u64> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64");
    let shoff = u64_at(0x28) as usize;
    let shentsize = u16_at(0x3a);
    let shnum = u16_at(0x3c);
    let shstrndx = u16_at(0x3e);
    let names = u64_at(shoff + shstrndx * shentsize + 0x18) as usize;
    (0..shnum).find_map(|i| {
        let sh = shoff + i * shentsize;
        let name = &elf[names + u32_at(sh)..];
        let name = &name[..name.iter().position(|&b| b == 0)?];
        (name == want.as_bytes()).then(|| u64_at(sh + 0x20))
    })
}

#[test]
fn initialised_statics_stay_small() {
    // Use the allocator, so that all of it is linked in and booted.
    let v: Vec<Box<[u8; 100]>> = (0..1000).map(|_| Box::new([7; 100])).collect();
    assert_eq!(v.iter().map(|b| b[99] as usize).sum::<usize>(), 7000);
    let exe = std::fs::read("/proc/self/exe").expect("read /proc/self/exe");
    let data = section_size(&exe, ".data").expect("a .data section");
    let bss = section_size(&exe, ".bss").expect("a .bss section");
    // cpuslab's nonzero statics (the kmalloc table and caches, the zonelist, the slab
    // caches of caches) are about 40 KiB; the test harness and std add a little.
    assert!(data < 128 << 10, ".data is {} KiB", data >> 10);
    // The large tables are there instead.
    assert!(bss > 1 << 20, ".bss is {} KiB", bss >> 10);
}
