//! A plugin, as a Python extension module or a host's dlopen'ed library is: its Rust
//! code allocates through cpuslab, and the host may unload it with `dlclose`.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

/// Builds, reads and drops `rounds` batches of strings, vectors and maps of many sizes
/// (small objects, large blocks, a huge one now and then) and reads and replaces an
/// `RcuCell` (the RCU reader words are thread-local: in a library loaded late they
/// may live in dynamically allocated TLS); returns a checksum that depends only on
/// `rounds`.
#[no_mangle]
pub extern "C" fn plugin_work(rounds: u32) -> u64 {
    static CELL: std::sync::OnceLock<cpuslab::rcu::RcuCell<u64>> = std::sync::OnceLock::new();
    let cell = CELL.get_or_init(|| cpuslab::rcu::RcuCell::new(7));
    let mut sum = 0u64;
    for r in 0..rounds as usize {
        {
            let guard = cpuslab::rcu::read_lock();
            assert!(cpuslab::rcu::in_read_section());
            sum += *cell.read(&guard);
        }
        if r % 20 == 0 {
            cell.replace(7);
        }
        let words: Vec<String> = (0..200).map(|i| format!("w{}-{}", i, r % 7)).collect();
        let mut map = std::collections::HashMap::new();
        for w in &words {
            *map.entry(w.clone()).or_insert(0u64) += 1;
        }
        let big = vec![r as u8; 4096 << (r % 6)];
        let huge = if r % 50 == 0 {
            vec![1u8; 5 << 20]
        } else {
            Vec::new()
        };
        sum += map.len() as u64 + big.len() as u64 + huge.len() as u64;
    }
    sum
}
