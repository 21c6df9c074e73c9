//! Cpusets: mask parsing and printing, topology discovery and placement on described
//! machines (tests/fixtures: 2 nodes x 8 CPUs, 4 nodes x 16 CPUs, the latter again
//! after CPUs went offline), the tree's validation and hotplug, and real kernel calls
//! on this machine (affinity, memory policy, mbind).

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

mod common;

use std::fmt::Write as _;
use std::sync::Mutex;

use common::Rng;
use cpuslab::cpuset::{
    dead_cpus, nearest_node, rescan, rescan_at, spread_node, Cpuset, CpusetError, CpusetFlags,
    CpusetTree, MemKind, Resource,
};
use cpuslab::sys::affinity::{get_affinity, set_affinity};
use cpuslab::sys::mempolicy::{self, MPOL_BIND, MPOL_F_ADDR, MPOL_MF_MOVE, MPOL_MF_STRICT};
use cpuslab::topology::{CpuMask, MaskError, NodeMask, Topology};

/// Tests that change the process's own tree (attach, global rescan) run one at a time.
static PROCESS_TREE: Mutex<()> = Mutex::new(());

fn fixture(name: &str) -> (String, String) {
    let root = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    (format!("{root}/sys"), format!("{root}/proc"))
}

fn machine(name: &str) -> Topology {
    let (sys, proc) = fixture(name);
    Topology::discover_at(&sys, &proc)
}

fn cpus(s: &str) -> CpuMask {
    s.parse().unwrap()
}

fn mems(s: &str) -> NodeMask {
    s.parse().unwrap()
}

fn tree_on(name: &str) -> Box<CpusetTree> {
    let mut t = Box::new(CpusetTree::new());
    t.update_topology(&machine(name));
    t
}

fn read(t: &CpusetTree, cs: Cpuset, file: &str) -> String {
    let mut s = String::new();
    t.read_file(cs, file, &mut s).unwrap();
    s
}

// ---- Masks ----

#[test]
fn list_form_round_trips() {
    for (text, canonical) in [
        ("0-3,8,10-11", "0-3,8,10-11"),
        ("0-3,8,10-11\n", "0-3,8,10-11"),
        (" 5,1,2,3 ", "1-3,5"),
        ("", ""),
        ("4095", "4095"),
        ("0-15:2/4", "0-1,4-5,8-9,12-13"),
        ("7,7,6-8", "6-8"),
    ] {
        let m = CpuMask::parse_list(text.as_bytes()).unwrap();
        assert_eq!(m.to_string(), canonical, "{text:?}");
        assert_eq!(CpuMask::parse_list(canonical.as_bytes()).unwrap(), m);
    }
    let mut rng = Rng::new(5);
    for _ in 0..500 {
        let mut m = CpuMask::new();
        for _ in 0..rng.below(40) {
            let lo = rng.below(4096) as usize;
            let hi = (lo + rng.below(20) as usize).min(4095);
            m = m.or(&CpuMask::range(lo, hi + 1));
        }
        let list = m.to_string();
        assert_eq!(CpuMask::parse_list(list.as_bytes()), Ok(m), "{list}");
        let hex = format!("{m:x}");
        assert_eq!(CpuMask::parse_mask(hex.as_bytes()), Ok(m), "{hex}");
        let full = m.mask(4096).to_string();
        assert_eq!(full.len(), 128 * 9 - 1);
        assert_eq!(CpuMask::parse_mask(full.as_bytes()), Ok(m));
    }
}

#[test]
fn mask_form_matches_the_kernel() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .to_string()
    };
    let mems_hex = field("Mems_allowed:");
    let m = NodeMask::parse_mask(mems_hex.as_bytes()).unwrap();
    assert_eq!(
        m,
        NodeMask::parse_list(field("Mems_allowed_list:").as_bytes()).unwrap()
    );
    // The kernel prints Mems_allowed with MAX_NUMNODES bits; so do we.
    let nbits = mems_hex.split(',').count() * 32;
    assert_eq!(m.mask(nbits).to_string(), mems_hex);
    let cpus_hex = field("Cpus_allowed:");
    let c = CpuMask::parse_mask(cpus_hex.as_bytes()).unwrap();
    assert_eq!(
        c,
        CpuMask::parse_list(field("Cpus_allowed_list:").as_bytes()).unwrap()
    );
    // Cpus_allowed has nr_cpu_ids bits.
    assert_eq!(
        c.mask(cpuslab::topology::nr_cpu_ids()).to_string(),
        cpus_hex
    );
    assert_eq!(cpus("0-1").mask(2).to_string(), "3");
    assert_eq!(cpus("0,39").mask(40).to_string(), "80,00000001");
    assert_eq!(cpus("0").mask(64).to_string(), "00000000,00000001");
}

#[test]
fn malformed_masks_are_refused_with_their_place() {
    let list = |s: &str| CpuMask::parse_list(s.as_bytes());
    assert_eq!(list("1,,2"), Err(MaskError::EmptyElement { at: 2 }));
    assert_eq!(list(",1"), Err(MaskError::EmptyElement { at: 0 }));
    assert_eq!(list("1,"), Err(MaskError::EmptyElement { at: 2 }));
    assert_eq!(list("0,3-1"), Err(MaskError::BadRange { at: 2 }));
    assert_eq!(list("a"), Err(MaskError::BadNumber { at: 0 }));
    assert_eq!(list("1-"), Err(MaskError::BadNumber { at: 2 }));
    assert_eq!(list("-1"), Err(MaskError::BadNumber { at: 0 }));
    assert_eq!(list("0-7:0/2"), Err(MaskError::BadStride { at: 0 }));
    assert_eq!(list("0-7:3/2"), Err(MaskError::BadStride { at: 0 }));
    assert_eq!(list("0-7:3"), Err(MaskError::BadStride { at: 0 }));
    assert_eq!(
        list("4096"),
        Err(MaskError::TooLarge { at: 0, limit: 4096 })
    );
    assert_eq!(
        list("1,0-99999999999999999999999"),
        Err(MaskError::TooLarge { at: 2, limit: 4096 })
    );
    assert_eq!(
        NodeMask::parse_list(b"1024"),
        Err(MaskError::TooLarge { at: 0, limit: 1024 })
    );

    let mask = |s: &str| CpuMask::parse_mask(s.as_bytes());
    assert_eq!(mask(""), Err(MaskError::Empty));
    assert_eq!(mask("\n"), Err(MaskError::Empty));
    assert_eq!(mask("fg"), Err(MaskError::BadNumber { at: 0 }));
    assert_eq!(mask("1,123456789"), Err(MaskError::BadNumber { at: 2 }));
    assert_eq!(mask("1,,2"), Err(MaskError::EmptyElement { at: 2 }));
    let too_wide = format!("1{}", ",00000000".repeat(128));
    assert_eq!(
        mask(&too_wide),
        Err(MaskError::TooLarge { at: 0, limit: 4096 })
    );
    let zero_high = format!("0{}", ",00000001".repeat(128));
    assert_eq!(mask(&zero_high).unwrap().weight(), 128);

    let msg = list("1,,2").unwrap_err().to_string();
    assert!(
        msg.contains("empty element") && msg.contains("byte 2"),
        "{msg}"
    );
    let msg = list("4096").unwrap_err().to_string();
    assert!(msg.contains("4096 bits"), "{msg}");
}

#[test]
fn parsers_never_panic() {
    let mut rng = Rng::new(11);
    let alphabet = b"0123456789-,:/ \nabcdefxg";
    for i in 0..20_000 {
        let len = rng.below(40) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if i % 4 == 0 {
                    rng.next() as u8
                } else {
                    alphabet[rng.below(alphabet.len() as u64) as usize]
                }
            })
            .collect();
        if let Ok(m) = CpuMask::parse_list(&bytes) {
            assert_eq!(CpuMask::parse_list(m.to_string().as_bytes()), Ok(m));
        }
        if let Ok(m) = NodeMask::parse_mask(&bytes) {
            assert_eq!(NodeMask::parse_mask(format!("{m:x}").as_bytes()), Ok(m));
        }
    }
}

#[test]
fn printing_needs_no_allocation() {
    /// A writer into a fixed array.
    struct Fixed([u8; 64], usize);
    impl std::fmt::Write for Fixed {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let end = self.1 + s.len();
            self.0
                .get_mut(self.1..end)
                .ok_or(std::fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.1 = end;
            Ok(())
        }
    }
    let m = cpus("0-3,8,10-11,4000");
    let mut w = Fixed([0; 64], 0);
    m.write_list(&mut w).unwrap();
    assert_eq!(&w.0[..w.1], b"0-3,8,10-11,4000");
    let mut w = Fixed([0; 64], 0);
    m.write_mask(&mut w, 32).unwrap();
    assert_eq!(&w.0[..w.1], b"00000d0f");
    let mut w = Fixed([0; 64], 0);
    assert!(
        m.write_mask(&mut w, 4096).is_err(),
        "a full writer reports the error"
    );
}

#[test]
fn set_operations() {
    let a = cpus("0-3,8");
    let b = cpus("2-9");
    assert_eq!(a.and(&b), cpus("2-3,8"));
    assert_eq!(a.or(&b), cpus("0-9"));
    assert_eq!(a.andnot(&b), cpus("0-1"));
    assert!(cpus("2-3").is_subset(&a) && !b.is_subset(&a));
    assert!(a.intersects(&b) && !a.intersects(&cpus("4-7")));
    assert_eq!((a.weight(), a.first(), a.last()), (5, Some(0), Some(8)));
    assert_eq!(
        (a.next(3), a.next(8), a.next_wrap(8)),
        (Some(8), None, Some(0))
    );
    assert_eq!(a.iter().collect::<Vec<_>>(), [0, 1, 2, 3, 8]);
    assert!(CpuMask::new().is_empty() && CpuMask::new().first().is_none());
    let mut m = CpuMask::new();
    assert!(m.set(4095) && !m.set(4096) && m.test(4095) && !m.test(4096));
    assert_eq!(std::mem::size_of::<CpuMask>(), 512);
    assert_eq!(std::mem::size_of::<NodeMask>(), 128);
}

// ---- Topology ----

#[test]
fn discovers_a_four_node_machine() {
    let t = machine("four_node");
    assert_eq!(*t.possible_cpus(), cpus("0-63"));
    assert_eq!(*t.online_cpus(), cpus("0-63"));
    assert_eq!(*t.online_nodes(), mems("0-3"));
    assert_eq!(*t.memory_nodes(), mems("0-2"));
    assert_eq!(
        (t.cpu_to_node(0), t.cpu_to_node(17), t.cpu_to_node(63)),
        (0, 1, 3)
    );
    assert_eq!(t.node_cpus(2), cpus("32-47"));
    assert_eq!((t.node_distance(0, 1), t.node_distance(3, 2)), (16, 16));
    assert_eq!((t.node_distance(0, 3), t.node_distance(2, 2)), (22, 10));
    assert_eq!(*t.cpus_allowed(), cpus("0-63"));
    assert_eq!(*t.mems_allowed(), mems("0-3"));
    assert_eq!(t.cgroup_cpus(), Some(&cpus("0-59")));
    assert_eq!(t.cgroup_mems(), Some(&mems("0-3")));
    assert_eq!(t.usable_cpus(), cpus("0-59"));
    assert_eq!(t.usable_mems(), mems("0-2"), "node 3 has no memory");

    let off = machine("four_node_offline");
    assert_eq!(*off.online_cpus(), cpus("0-15,32-39,42-63"));
    assert_eq!(off.usable_cpus(), cpus("0-15,32-39,42-59"));
    // As the kernel's, node 2's cpulist leaves out its offline CPUs 40 and 41; the
    // `cpuN/nodeM` link of 40 places it, 41 has none and stays on node 0.
    assert_eq!((off.cpu_to_node(40), off.cpu_to_node(41)), (2, 0));
}

#[test]
fn discovers_a_two_node_machine_and_this_one() {
    let t = machine("two_node");
    assert_eq!(*t.possible_cpus(), cpus("0-15"));
    assert_eq!((t.cpu_to_node(7), t.cpu_to_node(8)), (0, 1));
    assert_eq!(t.node_distance(0, 1), 21);
    assert_eq!(t.cgroup_cpus(), None);
    assert_eq!(
        (t.usable_cpus(), t.usable_mems()),
        (cpus("0-15"), mems("0-1"))
    );

    let here = Topology::discover();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    assert_eq!(*here.online_cpus(), cpus(&online));
    assert!(here.usable_cpus().is_subset(here.online_cpus()));
    assert!(!here.usable_mems().is_empty());
    // The boot-time tables agree with the full reading.
    assert_eq!(
        cpuslab::topology::nr_cpu_ids(),
        here.possible_cpus().last().unwrap() + 1
    );
    for cpu in here.possible_cpus().iter() {
        assert_eq!(cpuslab::topology::cpu_to_node(cpu), here.cpu_to_node(cpu));
    }

    let nowhere = Topology::discover_at("/nonexistent", "/nonexistent");
    assert_eq!(*nowhere.online_cpus(), cpus("0"));
    assert_eq!(nowhere.usable_mems(), mems("0"));
}

// ---- The tree ----

#[test]
fn effective_sets_follow_the_parent() {
    let mut t = tree_on("four_node");
    let top = t.top();
    assert_eq!(read(&t, top, "cpuset.cpus"), "0-59\n");
    assert_eq!(read(&t, top, "cpuset.mems.effective"), "0-2\n");
    let a = t.create(top, "a").unwrap();
    assert_eq!(t.effective_cpus(a).unwrap(), cpus("0-59"), "empty inherits");
    t.set_cpus(a, &cpus("0-31")).unwrap();
    let x = t.create(a, "x").unwrap();
    assert_eq!(read(&t, x, "cpuset.cpus"), "\n");
    assert_eq!(read(&t, x, "cpuset.cpus.effective"), "0-31\n");
    t.write_file(x, "cpuset.cpus", "8-15").unwrap();
    t.write_file(x, "cpuset.mems", "1").unwrap();
    assert_eq!(read(&t, x, "cpuset.cpus.effective"), "8-15\n");
    assert_eq!(read(&t, x, "cpuset.mems.effective"), "1\n");

    // Narrowing the parent propagates; cutting out the child's CPUs is refused.
    t.set_cpus(a, &cpus("4-23")).unwrap();
    assert_eq!(t.effective_cpus(x).unwrap(), cpus("8-15"));
    assert_eq!(
        t.set_cpus(a, &cpus("16-31")),
        Err(CpusetError::ChildOutside(Resource::Cpus))
    );
    assert_eq!(t.cpus(a).unwrap(), cpus("4-23"), "refused: unchanged");
    assert_eq!(
        t.set_mems(a, &mems("0")),
        Err(CpusetError::ChildOutside(Resource::Mems))
    );
    assert_eq!(
        t.set_cpus(x, &cpus("20-30")),
        Err(CpusetError::NotWithinParent(Resource::Cpus))
    );
    assert_eq!(
        t.set_mems(a, &mems("1,3")),
        Err(CpusetError::NotWithinParent(Resource::Mems))
    );
    assert_eq!(t.set_cpus(top, &cpus("0")), Err(CpusetError::TopIsReadOnly));
    let msg = CpusetError::ChildOutside(Resource::Cpus).to_string();
    assert!(msg.contains("rule: children within parent"), "{msg}");

    assert_eq!(t.find("/a/x"), Some(x));
    assert_eq!(t.find("/"), Some(top));
    assert_eq!(t.find("/a/nope"), None);
    let mut path = String::new();
    t.write_path(x, &mut path).unwrap();
    assert_eq!(path, "/a/x");
    assert_eq!(t.create(a, "x"), Err(CpusetError::NameTaken));
    for bad in ["", ".", "..", "a/b", "this-name-is-longer-than-31-bytes"] {
        assert_eq!(t.create(a, bad), Err(CpusetError::BadName), "{bad:?}");
    }
    assert_eq!(t.remove(a), Err(CpusetError::HasChildren));
    t.add_thread(x, 77).unwrap();
    assert_eq!(read(&t, x, "tasks"), "77\n");
    assert_eq!(t.remove(x), Err(CpusetError::HasThreads));
    t.remove_thread(77);
    t.remove(x).unwrap();
    assert_eq!(t.cpus(x), Err(CpusetError::Removed));
    let x2 = t.create(a, "x").unwrap();
    assert_ne!(x, x2, "a reused slot gets a new handle");
    assert_eq!(t.effective_cpus(x2).unwrap(), cpus("4-23"));
}

#[test]
fn exclusive_siblings_are_disjoint() {
    let mut t = tree_on("four_node");
    let top = t.top();
    let a = t.create(top, "a").unwrap();
    let b = t.create(top, "b").unwrap();
    t.set_cpus(a, &cpus("0-15")).unwrap();
    t.set_mems(a, &mems("0")).unwrap();
    t.set_flags(
        a,
        CpusetFlags::CPU_EXCLUSIVE | CpusetFlags::MEM_EXCLUSIVE,
        true,
    )
    .unwrap();
    assert_eq!(
        t.set_cpus(b, &cpus("8-23")),
        Err(CpusetError::ExclusiveOverlap(Resource::Cpus))
    );
    assert_eq!(t.cpus(b).unwrap(), CpuMask::new(), "refused: unchanged");
    assert_eq!(
        t.set_mems(b, &mems("0-1")),
        Err(CpusetError::ExclusiveOverlap(Resource::Mems))
    );
    t.set_cpus(b, &cpus("16-23")).unwrap();
    t.set_mems(b, &mems("1")).unwrap();
    t.write_file(b, "cpuset.cpu_exclusive", "1\n").unwrap();
    assert_eq!(read(&t, b, "cpuset.cpu_exclusive"), "1\n");
    assert_eq!(read(&t, b, "cpuset.mem_exclusive"), "0\n");

    // Setting the flag is checked too: a non-exclusive overlap becomes refused.
    let c = t.create(top, "c").unwrap();
    t.set_cpus(c, &cpus("20-40")).unwrap_err();
    t.set_cpus(c, &cpus("24-40")).unwrap();
    let d = t.create(top, "d").unwrap();
    t.set_cpus(d, &cpus("30-35")).unwrap();
    assert_eq!(
        t.set_flags(c, CpusetFlags::CPU_EXCLUSIVE, true),
        Err(CpusetError::ExclusiveOverlap(Resource::Cpus))
    );
    assert!(!t.flags(c).unwrap().contains(CpusetFlags::CPU_EXCLUSIVE));

    // An exclusive child needs an exclusive parent, and keeps it exclusive.
    let cc = t.create(c, "cc").unwrap();
    assert_eq!(
        t.set_flags(cc, CpusetFlags::CPU_EXCLUSIVE, true),
        Err(CpusetError::ParentNotExclusive(Resource::Cpus))
    );
    let aa = t.create(a, "aa").unwrap();
    t.set_flags(aa, CpusetFlags::MEM_EXCLUSIVE, true).unwrap();
    assert_eq!(
        t.set_flags(a, CpusetFlags::MEM_EXCLUSIVE, false),
        Err(CpusetError::ParentNotExclusive(Resource::Mems))
    );
    let msg = CpusetError::ExclusiveOverlap(Resource::Cpus).to_string();
    assert!(msg.contains("rule: exclusive siblings disjoint"), "{msg}");
}

#[test]
fn files_read_and_write_as_the_kernels() {
    let mut t = tree_on("two_node");
    let top = t.top();
    let a = t.create(top, "a").unwrap();
    t.write_file(a, "cpuset.cpus", "8-15\n").unwrap();
    t.write_file(a, "mems", "1").unwrap();
    let mut all = String::new();
    for f in CpusetTree::FILES {
        write!(all, "{f}: ").unwrap();
        t.read_file(a, f, &mut all).unwrap();
    }
    assert_eq!(
        all,
        "cpuset.cpus: 8-15\ncpuset.mems: 1\ncpuset.cpus.effective: 8-15\n\
         cpuset.mems.effective: 1\ncpuset.cpu_exclusive: 0\ncpuset.mem_exclusive: 0\n\
         cpuset.mem_hardwall: 0\ncpuset.sched_load_balance: 1\ncpuset.memory_migrate: 0\n\
         cpuset.memory_pressure: 0\ncpuset.memory_spread_page: 0\ncpuset.memory_spread_slab: 0\n"
    );
    assert_eq!(read(&t, top, "cpuset.cpu_exclusive"), "1\n");
    t.write_file(a, "cpuset.memory_spread_page", "1").unwrap();
    let child = t.create(a, "child").unwrap();
    assert_eq!(
        read(&t, child, "cpuset.memory_spread_page"),
        "1\n",
        "inherited"
    );
    assert_eq!(
        t.write_file(a, "cpuset.cpus.effective", "1"),
        Err(CpusetError::ReadOnlyFile)
    );
    assert_eq!(
        t.write_file(a, "cpuset.bogus", "1"),
        Err(CpusetError::UnknownFile)
    );
    assert_eq!(
        t.write_file(a, "cpuset.mem_hardwall", "2"),
        Err(CpusetError::BadFlagValue)
    );
    assert_eq!(
        t.write_file(a, "cpuset.cpus", "1,,2"),
        Err(CpusetError::Parse(MaskError::EmptyElement { at: 2 }))
    );
    assert_eq!(
        t.set_flags(a, CpusetFlags(1 << 20), true),
        Err(CpusetError::UnknownFlags(1 << 20))
    );
    assert_eq!(read(&t, a, "cpuset.cpus"), "8-15\n");
}

// ---- Placement ----

#[test]
fn placement_is_local_else_nearest() {
    let topo = machine("four_node");
    let mut t = tree_on("four_node");
    let top = t.top();
    let a = t.create(top, "a").unwrap();
    t.set_mems(a, &mems("1-2")).unwrap();
    let p = t.placement(a).unwrap();
    let mut rotor = 0;
    let mut at = |node| p.node_for(node, MemKind::Page, &topo, &mut rotor);
    assert_eq!(at(1), Some(1), "local when allowed");
    assert_eq!(at(2), Some(2));
    assert_eq!(at(0), Some(1), "0→1 is 16, 0→2 is 22");
    assert_eq!(at(3), Some(2), "3→2 is 16");
    assert_eq!(nearest_node(1, &mems("0,2"), &topo), Some(0));
    assert_eq!(
        nearest_node(3, &mems("0-1"), &topo),
        Some(0),
        "ties go to the lower id"
    );
    assert_eq!(nearest_node(0, &NodeMask::new(), &topo), None);

    let two = machine("two_node");
    assert_eq!(nearest_node(0, &mems("1"), &two), Some(1));
    assert_eq!(two.cpu_to_node(12), 1);
    assert_eq!(
        nearest_node(two.cpu_to_node(12), &mems("0-1"), &two),
        Some(1)
    );
}

#[test]
fn spread_rotor_interleaves() {
    let topo = machine("four_node");
    let mut t = tree_on("four_node");
    let top = t.top();
    let s = t.create(top, "spread").unwrap();
    t.set_flags(s, CpusetFlags::SPREAD_PAGE, true).unwrap();
    let p = t.placement(s).unwrap();
    let mut rotor = usize::MAX;
    let pages: Vec<_> = (0..7)
        .map(|_| p.node_for(3, MemKind::Page, &topo, &mut rotor).unwrap())
        .collect();
    assert_eq!(pages, [0, 1, 2, 0, 1, 2, 0]);
    // Slab growth spreads only with SPREAD_SLAB.
    assert_eq!(p.node_for(1, MemKind::Slab, &topo, &mut rotor), Some(1));
    t.set_flags(s, CpusetFlags::SPREAD_SLAB, true).unwrap();
    t.set_mems(s, &mems("0,2")).unwrap();
    let p = t.placement(s).unwrap();
    let mut rotor = usize::MAX;
    let slabs: Vec<_> = (0..4)
        .map(|_| p.node_for(1, MemKind::Slab, &topo, &mut rotor).unwrap())
        .collect();
    assert_eq!(slabs, [0, 2, 0, 2]);
    let mut r = 5;
    assert_eq!(spread_node(&mems("1,3"), &mut r), Some(1));
    assert_eq!((r, spread_node(&mems("1,3"), &mut r)), (1, Some(3)));
    assert_eq!(spread_node(&NodeMask::new(), &mut r), None);
}

#[test]
fn hardwall_never_falls_outside() {
    let topo = machine("four_node");
    let mut t = tree_on("four_node");
    let top = t.top();
    let a = t.create(top, "a").unwrap();
    t.set_mems(a, &mems("0-1")).unwrap();
    let h = t.create(a, "h").unwrap();
    t.set_mems(h, &mems("1")).unwrap();
    t.set_flags(h, CpusetFlags::MEM_HARDWALL, true).unwrap();
    let s = t.create(a, "s").unwrap();
    t.set_mems(s, &mems("1")).unwrap();

    let ph = t.placement(h).unwrap();
    assert_eq!(ph.hardwall_mems, mems("1"));
    assert!(ph.node_allowed(1) && !ph.node_allowed(0) && !ph.node_allowed(2));
    assert_eq!(ph.fallback_order(1, &topo).collect::<Vec<_>>(), [1]);
    assert_eq!(ph.node_for(3, MemKind::Page, &topo, &mut 0), Some(1));

    // Without a hardwall, fallback may use the nearest hardwall ancestor's nodes:
    // here the top (exclusive), by distance from node 1.
    let ps = t.placement(s).unwrap();
    assert!(ps.node_allowed(0) && ps.node_allowed(2) && !ps.node_allowed(3));
    assert_eq!(ps.fallback_order(1, &topo).collect::<Vec<_>>(), [1, 0, 2]);
    t.set_flags(a, CpusetFlags::MEM_HARDWALL, true).unwrap();
    let ps = t.placement(s).unwrap();
    assert_eq!(ps.fallback_order(1, &topo).collect::<Vec<_>>(), [1, 0]);
    assert!(!ps.node_allowed(2));
}

// ---- Hotplug ----

#[test]
fn hotplug_shrinks_effective_sets_and_moves_threads() {
    let mut t = tree_on("four_node");
    let top = t.top();
    let a = t.create(top, "a").unwrap();
    t.set_cpus(a, &cpus("16-31")).unwrap();
    let inner = t.create(a, "inner").unwrap();
    t.set_cpus(inner, &cpus("20-23")).unwrap();
    let b = t.create(top, "b").unwrap();
    t.set_cpus(b, &cpus("30-41")).unwrap();
    let c = t.create(top, "c").unwrap();
    t.set_cpus(c, &cpus("0-7")).unwrap();
    for (cs, tid) in [(a, 1001), (a, 1002), (inner, 1003), (b, 1004), (c, 1005)] {
        t.add_thread(cs, tid).unwrap();
    }

    let report = t.update_topology(&machine("four_node_offline"));
    assert_eq!(report.offline_cpus, cpus("16-31,40-41"));
    assert_eq!(report.online_cpus, CpuMask::new());
    assert_eq!((report.emptied, report.moved_threads), (2, 3));
    let top_cpus = cpus("0-15,32-39,42-59");
    assert_eq!(t.effective_cpus(top).unwrap(), top_cpus);
    assert_eq!(
        t.effective_cpus(a).unwrap(),
        top_cpus,
        "no CPU left: the parent's"
    );
    assert_eq!(t.effective_cpus(inner).unwrap(), top_cpus);
    assert_eq!(t.effective_cpus(b).unwrap(), cpus("32-39"), "shrunk");
    assert_eq!(t.effective_cpus(c).unwrap(), cpus("0-7"), "untouched");
    assert_eq!(
        t.cpus(a).unwrap(),
        cpus("16-31"),
        "configured sets are kept"
    );
    // Threads of emptied cpusets went to the nearest ancestor with CPUs: the top
    // (a, inner's parent, is empty too).
    for tid in [1001, 1002, 1003] {
        assert_eq!(t.thread_cpuset(tid), Some(top), "thread {tid}");
    }
    assert_eq!(t.thread_cpuset(1004), Some(b));
    assert_eq!(t.thread_cpuset(1005), Some(c));

    // The CPUs come back: effective sets grow again; the moved threads stay.
    let report = t.update_topology(&machine("four_node"));
    assert_eq!(report.online_cpus, cpus("16-31,40-41"));
    assert!(report.offline_cpus.is_empty());
    assert_eq!(t.effective_cpus(a).unwrap(), cpus("16-31"));
    assert_eq!(t.effective_cpus(inner).unwrap(), cpus("20-23"));
    assert_eq!(t.effective_cpus(b).unwrap(), cpus("30-41"));
    assert_eq!(t.thread_cpuset(1001), Some(top));
}

#[test]
fn rescan_reports_offline_cpus_to_the_dead_hook() {
    let _g = PROCESS_TREE.lock().unwrap_or_else(|e| e.into_inner());
    let (sys, proc) = fixture("four_node");
    rescan_at(&sys, &proc);
    let top = Cpuset::top();
    assert_eq!(top.effective_cpus().unwrap(), cpus("0-59"));
    let hp = top.create_child("hotplug-test").unwrap();
    hp.set_cpus(&cpus("16-31")).unwrap();
    let (sys, proc) = fixture("four_node_offline");
    let report = rescan_at(&sys, &proc);
    assert_eq!(report.offline_cpus, cpus("16-31,40-41"));
    assert!(
        report.offline_cpus.is_subset(&dead_cpus()),
        "{:?}",
        dead_cpus()
    );
    assert_eq!(hp.effective_cpus().unwrap(), cpus("0-15,32-39,42-59"));
    assert_eq!(report.emptied, 1);

    // Back to this machine.
    rescan();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    assert!(Cpuset::top()
        .effective_cpus()
        .unwrap()
        .is_subset(&cpus(&online)));
    hp.remove().unwrap();
    cpuslab::cpuset::clear_dead_cpus(&CpuMask::first_n(4096));
    assert!(dead_cpus().is_empty());
}

// ---- Real kernel calls on this machine ----

/// CPU 1 when the process may use it, else its last CPU.
fn target_cpu() -> usize {
    let top = Cpuset::top().effective_cpus().unwrap();
    if top.test(1) {
        1
    } else {
        top.last().unwrap()
    }
}

#[test]
fn attached_thread_runs_on_its_cpu() {
    let _g = PROCESS_TREE.lock().unwrap_or_else(|e| e.into_inner());
    rescan();
    let cpu = target_cpu();
    let pin = Cpuset::top().create_child("pin-attach").unwrap();
    pin.set_cpus(&CpuMask::range(cpu, cpu + 1)).unwrap();
    pin.set_flags(CpusetFlags::SPREAD_PAGE, true).unwrap();
    let mut text = String::new();
    pin.read_file("cpuset.cpus.effective", &mut text).unwrap();
    assert_eq!(text, format!("{cpu}\n"));

    let tid = std::thread::spawn(move || {
        assert_eq!(Cpuset::current(), Cpuset::top());
        pin.attach_current().unwrap();
        assert_eq!(Cpuset::current(), pin);
        assert_eq!(get_affinity(0).unwrap(), CpuMask::range(cpu, cpu + 1));
        for _ in 0..100 {
            // SAFETY: no preconditions.
            assert_eq!(unsafe { libc::sched_getcpu() }, cpu as i32);
            std::thread::yield_now();
        }
        let (mode, nodes) = mempolicy::get_mempolicy().unwrap();
        assert_eq!(mode, MPOL_BIND);
        assert_eq!(nodes, pin.effective_mems().unwrap());
        assert_eq!(
            cpuslab::cpuset::current_mems_allowed(),
            pin.effective_mems().unwrap()
        );
        let first = pin.effective_mems().unwrap().first().unwrap();
        assert_eq!(cpuslab::cpuset::mem_node_for(first), first);
        assert!(cpuslab::cpuset::node_allowed(first));
        assert!(!cpuslab::cpuset::node_allowed(NodeMask::BITS - 1));
        let v: Vec<u64> = (0..100_000).collect(); // the allocator works when pinned
        assert_eq!(v.iter().sum::<u64>(), 4_999_950_000);
        cpuslab::sys::thread::gettid()
    })
    .join()
    .unwrap();
    // The thread's record went with it: the cpuset can go.
    assert_eq!(Cpuset::with_tree(|t| t.thread_cpuset(tid)), None);
    pin.remove().unwrap();
    assert_eq!(pin.cpus(), Err(CpusetError::Removed));
}

#[test]
fn attach_by_thread_id_sets_affinity_and_follows_changes() {
    let _g = PROCESS_TREE.lock().unwrap_or_else(|e| e.into_inner());
    rescan();
    let cpu = target_cpu();
    let all = Cpuset::top().effective_cpus().unwrap();
    let cs = Cpuset::top().create_child("pin-by-tid").unwrap();
    cs.set_cpus(&CpuMask::range(cpu, cpu + 1)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        tx.send(cpuslab::sys::thread::gettid() as usize).unwrap();
        for _ in 0..2 {
            go_rx.recv().unwrap();
            let seen = get_affinity(0).unwrap();
            tx.send(seen.weight() * 10_000 + seen.first().unwrap())
                .unwrap();
        }
        get_affinity(0).unwrap()
    });
    let tid = rx.recv().unwrap() as u32;
    cs.attach(tid).unwrap();
    assert_eq!(get_affinity(tid).unwrap(), CpuMask::range(cpu, cpu + 1));
    go_tx.send(()).unwrap();
    assert_eq!(
        rx.recv().unwrap(),
        10_000 + cpu,
        "the worker sees itself pinned"
    );
    // Widening the cpuset re-applies the affinity of its threads.
    cs.set_cpus(&all).unwrap();
    go_tx.send(()).unwrap();
    assert_eq!(
        rx.recv().unwrap(),
        all.weight() * 10_000 + all.first().unwrap()
    );
    assert_eq!(worker.join().unwrap(), all);
    // The exited thread is forgotten on removal. The kernel may still list a thread
    // that was joined for a moment (its tid is cleared before it is released).
    let mut tries = 0;
    loop {
        match cs.remove() {
            Ok(()) => break,
            Err(CpusetError::HasThreads) if tries < 1000 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => panic!("remove: {e}"),
        }
    }
    assert!(matches!(
        Cpuset::top().attach(999_999_999),
        Err(CpusetError::Sys(e)) if e.errno == libc::ESRCH
    ));
    assert!(Cpuset::with_tree(|t| t.thread_cpuset(999_999_999)).is_none());
}

#[test]
fn mbind_places_pages_on_node_0_and_refuses_a_missing_node() {
    let _g = PROCESS_TREE.lock().unwrap_or_else(|e| e.into_inner());
    rescan();
    let here = Cpuset::top().effective_mems().unwrap();
    let node = here.first().unwrap();
    // A node the process cannot use: node 1 on a one-node machine.
    let missing = (0..NodeMask::BITS).find(|n| !here.test(*n)).unwrap();
    let len = 16 * 4096;
    // SAFETY: a fresh private anonymous mapping, unmapped at the end.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    } as *mut u8;
    assert_ne!(p, libc::MAP_FAILED as *mut u8);
    let only = |n: usize| {
        let mut m = NodeMask::new();
        m.set(n);
        m
    };
    // SAFETY: the range is ours.
    unsafe {
        mempolicy::mbind(
            p,
            len,
            MPOL_BIND,
            &only(node),
            MPOL_MF_MOVE | MPOL_MF_STRICT,
        )
    }
    .unwrap();
    for page in 0..16 {
        // SAFETY: inside the mapping.
        unsafe { p.add(page * 4096).write(page as u8) };
        assert_eq!(
            mempolicy::node_of(unsafe { p.add(page * 4096) }).unwrap(),
            node
        );
    }
    assert_eq!(mempolicy::policy_of(p).unwrap(), (MPOL_BIND, only(node)));

    // SAFETY: as above.
    let err =
        unsafe { mempolicy::mbind(p, len, MPOL_BIND, &only(missing), MPOL_MF_MOVE) }.unwrap_err();
    assert_eq!((err.call, err.errno), ("mbind", libc::EINVAL));
    let msg = err.to_string();
    assert!(
        msg.contains("mbind failed") && msg.contains("EINVAL"),
        "{msg}"
    );
    assert_eq!(
        mempolicy::policy_of(p).unwrap(),
        (MPOL_BIND, only(node)),
        "unchanged"
    );
    assert_eq!(mempolicy::node_of(p).unwrap(), node);
    let _ = MPOL_F_ADDR;

    // The thread's policy and the cpuset tree refuse it the same way.
    let before = mempolicy::get_mempolicy().unwrap();
    assert_eq!(
        mempolicy::set_mempolicy(MPOL_BIND, &only(missing))
            .unwrap_err()
            .errno,
        libc::EINVAL
    );
    assert_eq!(mempolicy::get_mempolicy().unwrap(), before);
    let cs = Cpuset::top().create_child("mems-test").unwrap();
    assert_eq!(
        cs.set_mems(&only(missing)),
        Err(CpusetError::NotWithinParent(Resource::Mems))
    );
    assert_eq!(cs.mems().unwrap(), NodeMask::new());
    assert_eq!(cs.effective_mems().unwrap(), here);
    cs.remove().unwrap();
    // SAFETY: the mapping is ours and no longer used.
    unsafe { libc::munmap(p.cast(), len) };
}

#[test]
fn affinity_wrappers_report_errors() {
    let now = get_affinity(0).unwrap();
    assert!(!now.is_empty());
    let err = set_affinity(0, &CpuMask::new()).unwrap_err();
    assert_eq!(err.errno, libc::EINVAL);
    assert_eq!(get_affinity(0).unwrap(), now, "unchanged");
}

/// The CPU-dead path empties what a CPU caches: after a thread on CPU 1 filled its
/// array caches and page list, `cpu_dead(1)` leaves zero objects and zero pages held
/// for CPU 1, and every object is still there (allocated again, all distinct). Runs
/// in a child with one working thread, so nothing else refills CPU 1 meanwhile.
#[test]
fn cpu_dead_drains_the_cpus_caches() {
    if cpuslab::topology::nr_cpu_ids() < 2 {
        eprintln!("skipped: one CPU");
        return;
    }
    if !common::is_child() {
        let (status, err) = common::run_child("cpu_dead_drains_the_cpus_caches", &[]);
        assert!(status.success(), "child failed: {err}");
        return;
    }
    let one = |cpu: usize| {
        let mut m = CpuMask::new();
        m.set(cpu);
        set_affinity(0, &m).unwrap();
    };
    one(1);
    let cache =
        cpuslab::KmemCache::<[u64; 4]>::new("test_cpu_dead", cpuslab::SlabFlags::NONE).unwrap();
    let objs: Vec<_> = (0..20_000).map(|_| cache.alloc().unwrap()).collect();
    for &o in &objs {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(o) };
    }
    drop(objs);
    let held_objs = cpuslab::slab::reap::cpu_cached_objects(1);
    let held_pages = cpuslab::page::pcp::count(1);
    assert!(held_objs > 0, "CPU 1's array caches hold nothing to drain");
    assert!(held_pages > 0, "CPU 1's page list holds nothing to drain");
    one(0);
    cpuslab::cpuset::cpu_dead(1);
    assert_eq!(cpuslab::slab::reap::cpu_cached_objects(1), 0);
    assert_eq!(cpuslab::page::pcp::count(1), 0);
    assert!(dead_cpus().test(1));
    let again: Vec<_> = (0..20_000)
        .map(|_| cache.alloc().unwrap().as_ptr() as usize)
        .collect();
    let distinct: std::collections::HashSet<_> = again.iter().collect();
    assert_eq!(distinct.len(), again.len());
    for &o in &again {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(std::ptr::NonNull::new(o as *mut [u64; 4]).unwrap()) };
    }
    cache.destroy().map_err(|(_, e)| e).unwrap();
}

/// A forked child starts with only its own thread, in the cpuset the forking thread
/// was in (the kernel's `cpuset_fork`): the parent's other threads are not in its
/// table, so changing their cpuset does not touch thread ids of the parent's.
#[test]
fn forked_child_keeps_only_its_own_thread() {
    let _g = PROCESS_TREE.lock().unwrap_or_else(|e| e.into_inner());
    rescan();
    let a = Cpuset::top().create_child("fork-a").unwrap();
    let b = Cpuset::top().create_child("fork-b").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        b.attach_current().unwrap();
        tx.send(cpuslab::sys::thread::gettid()).unwrap();
        done_rx.recv().unwrap();
    });
    let other_tid = rx.recv().unwrap();
    // The forking thread is attached too (in a thread of its own, so the test thread
    // stays in the top cpuset for the other tests).
    let forker = std::thread::spawn(move || {
        a.attach_current().unwrap();
        let me = cpuslab::sys::thread::gettid();
        // SAFETY: the child only reads the tree, writes to a pipe-free exit code and
        // calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let child = cpuslab::sys::thread::gettid();
            let ok = Cpuset::current() == a
                && Cpuset::with_tree(|t| {
                    t.threads(a).collect::<Vec<_>>() == [child]
                        && t.threads(b).next().is_none()
                        && t.thread_cpuset(other_tid).is_none()
                        && t.thread_cpuset(me).is_none()
                });
            // SAFETY: _exit ends the child without running the parent's handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        Cpuset::top().attach_current().unwrap();
        status
    });
    let status = forker.join().unwrap();
    done_tx.send(()).unwrap();
    other.join().unwrap();
    for cs in [a, b] {
        for _ in 0..1000 {
            if cs.remove().is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child saw the parent's threads (status {status:#x})"
    );
}

/// A thread attached by id from another thread (no exit hook can be set for it) is
/// forgotten once it exits, even when the kernel hands its id to a new thread: the
/// new thread is not re-pinned when the cpuset changes. The id is reused on purpose
/// through `/proc/sys/kernel/ns_last_pid` (root; skipped, saying so, where that
/// cannot be written or another process takes the id first every time), a few clock
/// ticks after the old thread started: threads are told apart by start time, in
/// ticks, and a real reuse waits for the kernel to cycle through every other id.
#[test]
fn a_reused_thread_id_is_not_the_attached_thread() {
    let _g = PROCESS_TREE.lock().unwrap_or_else(|e| e.into_inner());
    rescan();
    let all = Cpuset::top().effective_cpus().unwrap();
    let (first, last) = (all.first().unwrap(), all.last().unwrap());
    if first == last {
        eprintln!("skipped: one CPU");
        return;
    }
    let cs = Cpuset::top().create_child("reused-tid").unwrap();
    cs.set_cpus(&CpuMask::range(first, first + 1)).unwrap();
    let old = std::thread::spawn(cpuslab::sys::thread::gettid);
    let tid = {
        // Attach while it lives: it waits on the channel.
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(cpuslab::sys::thread::gettid()).unwrap();
            go_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        cs.attach(tid).unwrap();
        go_tx.send(()).unwrap();
        t.join().unwrap();
        tid
    };
    old.join().unwrap();
    // Start times count clock ticks (10 ms): a real reuse comes only after the kernel
    // went through every other id (pid_max), far later than a tick.
    std::thread::sleep(std::time::Duration::from_millis(30));
    // A new thread with the same id, parked until told.
    let mut reused = None;
    for _ in 0..50 {
        if std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", tid - 1)).is_err() {
            break;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(cpuslab::sys::thread::gettid()).unwrap();
            go_rx.recv().unwrap();
            get_affinity(0).unwrap()
        });
        if rx.recv().unwrap() == tid {
            reused = Some((t, go_tx));
            break;
        }
        go_tx.send(()).unwrap();
        t.join().unwrap();
    }
    let Some((t, go_tx)) = reused else {
        eprintln!("skipped: could not get thread id {tid} handed out again");
        cs.remove().ok();
        return;
    };
    let before = get_affinity(tid).unwrap();
    // The change re-applies the affinity of the cpuset's threads.
    cs.set_cpus(&CpuMask::range(last, last + 1)).unwrap();
    let after = get_affinity(tid).unwrap();
    let listed = Cpuset::with_tree(|tree| tree.thread_cpuset(tid));
    go_tx.send(()).unwrap();
    t.join().unwrap();
    cs.remove().unwrap();
    assert_eq!(
        after, before,
        "the new thread {tid} was pinned as the old one"
    );
    assert!(listed.is_none(), "the exited thread is still listed");
}

/// The thread table grows past its first segment of 1024 slots: 3000 threads recorded
/// in one tree, each found, counted and forgotten.
#[test]
fn the_thread_table_grows_past_a_thousand() {
    let mut t = tree_on("four_node");
    let top = t.top();
    let a = t.create(top, "many").unwrap();
    for tid in 1..=3000u32 {
        t.add_thread(a, tid).unwrap();
    }
    assert_eq!(t.threads(a).count(), 3000);
    assert_eq!(t.thread_cpuset(2999), Some(a));
    for tid in (1..=3000u32).step_by(2) {
        t.remove_thread(tid);
    }
    assert_eq!(t.threads(a).count(), 1500);
    // Freed slots are reused before the table grows again.
    for tid in 5001..=6500u32 {
        t.add_thread(a, tid).unwrap();
    }
    assert_eq!(t.threads(a).count(), 3000);
    const { assert!(cpuslab::cpuset::MAX_THREADS >= 65536) };
}

/// 1500 live threads attach themselves to one cpuset of the process (the table held
/// 1024 before it grew): each reads its cpuset back, and the tree lists them all.
#[test]
fn fifteen_hundred_threads_attach_at_once() {
    if !common::is_child() {
        let (status, err) = common::run_child("fifteen_hundred_threads_attach_at_once", &[]);
        assert!(status.success(), "child failed: {err}");
        return;
    }
    let cs = Cpuset::top().create_child("crowd").unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(1501));
    let threads: Vec<_> = (0..1500)
        .map(|_| {
            let b = barrier.clone();
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    cs.attach_current().unwrap();
                    let mine = Cpuset::current() == cs;
                    // All attached at once before any leaves.
                    b.wait();
                    b.wait();
                    mine
                })
                .unwrap()
        })
        .collect();
    barrier.wait();
    let listed = Cpuset::with_tree(|t| t.threads(cs).count());
    barrier.wait();
    assert!(
        threads.into_iter().all(|h| h.join().unwrap()),
        "a thread did not read its cpuset"
    );
    assert_eq!(listed, 1500);
    // Their exit hooks forgot them.
    assert_eq!(Cpuset::with_tree(|t| t.threads(cs).count()), 0);
}

/// The kernel's `cpuset_fork` for threads: a thread created by an attached thread,
/// with `std::thread` or with `pthread_create` directly (as C programs do), starts in
/// its creator's cpuset and is listed in it; one created by a thread of the top
/// cpuset stays in the top.
#[test]
fn a_new_thread_starts_in_its_creators_cpuset() {
    use std::sync::atomic::{AtomicU32, Ordering};
    if cpuslab::topology::nr_cpu_ids() < 2 {
        eprintln!("skipped: one CPU");
        return;
    }
    if !common::is_child() {
        let (status, err) = common::run_child("a_new_thread_starts_in_its_creators_cpuset", &[]);
        assert!(status.success(), "child failed: {err}");
        return;
    }
    let cpu = target_cpu();
    let cs = Cpuset::top().create_child("inherit").unwrap();
    cs.set_cpus(&CpuMask::range(cpu, cpu + 1)).unwrap();
    let listed = move |tid: u32| Cpuset::with_tree(|t| t.threads(cs).any(|x| x == tid));
    // 1: in `cs`; 2: listed there too; 0: neither.
    static C_THREAD: AtomicU32 = AtomicU32::new(0);
    extern "C" fn c_start(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: the creator passes a pointer to a live Cpuset it joins before dropping.
        let cs = unsafe { *(arg as *const Cpuset) };
        let tid = cpuslab::sys::thread::gettid();
        let mut r = u32::from(Cpuset::current() == cs);
        if Cpuset::with_tree(|t| t.threads(cs).any(|x| x == tid)) {
            r += 1;
        }
        C_THREAD.store(r, Ordering::SeqCst);
        std::ptr::null_mut()
    }
    let (std_thread, grandchild) = std::thread::spawn(move || {
        cs.attach_current().unwrap();
        let std_thread = std::thread::spawn(move || {
            let tid = cpuslab::sys::thread::gettid();
            let here = Cpuset::current() == cs;
            // Its own children inherit in turn.
            let grandchild = std::thread::spawn(move || Cpuset::current() == cs)
                .join()
                .unwrap();
            (here && listed(tid), grandchild)
        })
        .join()
        .unwrap();
        let mut th: libc::pthread_t = 0;
        let arg = &cs as *const Cpuset as *mut libc::c_void;
        // SAFETY: a valid start routine and an argument that outlives the join below.
        assert_eq!(
            unsafe { libc::pthread_create(&mut th, std::ptr::null(), c_start, arg) },
            0
        );
        // SAFETY: the thread just created, joined once.
        assert_eq!(unsafe { libc::pthread_join(th, std::ptr::null_mut()) }, 0);
        std_thread
    })
    .join()
    .unwrap();
    assert!(
        std_thread,
        "a std::thread of an attached thread is not in its cpuset"
    );
    assert!(grandchild, "a grandchild is not in the cpuset");
    assert_eq!(
        C_THREAD.load(Ordering::SeqCst),
        2,
        "a pthread_create'd thread is not in its creator's cpuset"
    );
    // A thread of the top cpuset creates one that stays there.
    assert!(std::thread::spawn(|| Cpuset::current() == Cpuset::top())
        .join()
        .unwrap());
}

/// Copies directory `from` into `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A writable copy of fixture machine `name`: its sys and proc roots.
fn machine_copy(name: &str, tag: &str) -> (String, String) {
    let dir = std::env::temp_dir().join(format!("cpuslab-hotplug-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(
        std::path::Path::new(&format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        )),
        &dir,
    );
    let root = dir.to_str().unwrap().to_string();
    (format!("{root}/sys"), format!("{root}/proc"))
}

/// Hotplug is noticed without `rescan()`: a watch reads the online CPUs and nodes,
/// records them at its first look, and when they change runs the CPU-dead path for
/// the CPUs that left. A process that never used cpusets keeps its fast paths: the
/// watch does not build the tree.
#[test]
fn a_hotplug_watch_drains_departed_cpus_without_cpusets() {
    if !common::is_child() {
        let (status, err) =
            common::run_child("a_hotplug_watch_drains_departed_cpus_without_cpusets", &[]);
        assert!(status.success(), "child failed: {err}");
        return;
    }
    let (sys, proc) = machine_copy("four_node", "plain");
    let w = cpuslab::cpuset::HotplugWatch::new();
    assert!(
        w.check_at(&sys, &proc).is_none(),
        "the first look only records"
    );
    assert!(w.check_at(&sys, &proc).is_none(), "nothing changed");
    std::fs::write(
        format!("{sys}/devices/system/cpu/online"),
        "0-15,32-39,42-63\n",
    )
    .unwrap();
    let r = w.check_at(&sys, &proc).expect("a change noticed");
    assert_eq!(r.offline_cpus, cpus("16-31,40-41"));
    assert!(dead_cpus().test(16) && dead_cpus().test(41) && !dead_cpus().test(42));
    assert!(
        !cpuslab::cpuset::placement_active(),
        "the watch built the cpuset tree"
    );
    std::fs::write(format!("{sys}/devices/system/cpu/online"), "0-63\n").unwrap();
    assert_eq!(
        w.check_at(&sys, &proc).expect("back online").online_cpus,
        cpus("16-31,40-41")
    );
    let _ = std::fs::remove_dir_all(std::path::Path::new(&sys).parent().unwrap());
}

/// With the cpuset tree built, a change the watch notices rescans the tree.
#[test]
fn a_hotplug_watch_rescans_the_cpusets() {
    if !common::is_child() {
        let (status, err) = common::run_child("a_hotplug_watch_rescans_the_cpusets", &[]);
        assert!(status.success(), "child failed: {err}");
        return;
    }
    let (sys, proc) = machine_copy("four_node", "tree");
    let _ = Cpuset::top();
    assert!(cpuslab::cpuset::placement_active());
    let w = cpuslab::cpuset::HotplugWatch::new();
    assert!(w.check_at(&sys, &proc).is_none());
    std::fs::write(
        format!("{sys}/devices/system/cpu/online"),
        "0-15,32-39,42-63\n",
    )
    .unwrap();
    assert!(w.check_at(&sys, &proc).is_some());
    let online = Cpuset::with_tree(|t| *t.topology().online_cpus());
    assert_eq!(
        online,
        cpus("0-15,32-39,42-63"),
        "the tree was not rescanned"
    );
    let _ = std::fs::remove_dir_all(std::path::Path::new(&sys).parent().unwrap());
}

/// `cpuset.memory_pressure` (the kernel's fmeter): with the top's
/// `memory_pressure_enabled` on, allocations that fail under a heap limit count for the
/// cpuset of the thread that made them, and not for another; off, nothing counts.
#[test]
fn memory_pressure_counts_a_cpusets_failed_allocations() {
    if !common::is_child() {
        let (status, err) =
            common::run_child("memory_pressure_counts_a_cpusets_failed_allocations", &[]);
        assert!(status.success(), "child failed: {err}");
        return;
    }
    let read = |cs: Cpuset, f: &str| {
        let mut s = String::new();
        cs.read_file(f, &mut s).unwrap();
        s.trim().to_string()
    };
    let top = Cpuset::top();
    let busy = top.create_child("pressed").unwrap();
    let calm = top.create_child("calm").unwrap();
    assert_eq!(read(top, "cpuset.memory_pressure_enabled"), "0");
    assert_eq!(
        busy.write_file("cpuset.memory_pressure", "1"),
        Err(CpusetError::ReadOnlyFile)
    );
    let committed = cpuslab::stats::memory().committed_bytes;
    cpuslab::options::Options::new()
        .heap_limit(committed + (16 << 20))
        .apply()
        .unwrap();
    // Allocations of 1 MiB until 40 fail, on a thread attached to `busy`.
    let fail = move |cs: Cpuset| {
        std::thread::spawn(move || {
            cs.attach_current().unwrap();
            let l = std::alloc::Layout::from_size_align(1 << 20, 8).unwrap();
            let mut held = Vec::new();
            let mut failed = 0;
            while failed < 40 {
                // SAFETY: a valid layout; what is held is freed below with it.
                let p = unsafe { std::alloc::alloc(l) };
                if p.is_null() {
                    failed += 1;
                } else {
                    held.push(p);
                }
            }
            for p in held {
                // SAFETY: allocated above with `l`.
                unsafe { std::alloc::dealloc(p, l) };
            }
        })
        .join()
        .unwrap()
    };
    fail(busy);
    assert_eq!(
        read(busy, "cpuset.memory_pressure"),
        "0",
        "counted while disabled"
    );
    top.write_file("cpuset.memory_pressure_enabled", "1")
        .unwrap();
    assert_eq!(read(top, "cpuset.memory_pressure_enabled"), "1");
    fail(busy);
    let rate: u64 = read(busy, "cpuset.memory_pressure").parse().unwrap();
    // 40 events in one second: (1000 - 933) * 40 = 2680 once the second is folded in;
    // at least one event's share either way.
    assert!(rate >= 67, "rate {rate}");
    assert_eq!(read(calm, "cpuset.memory_pressure"), "0");
    cpuslab::options::Options::new()
        .heap_limit(0)
        .apply()
        .unwrap();
}
