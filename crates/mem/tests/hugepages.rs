//! Memory source: hugetlb pages when reserved, normal pages otherwise. Passes either way;
//! with `vm.nr_hugepages = 0` the hugepage-backed checks print why they are skipped.
//!
//! Manual check of both paths (root): `echo 64 > /proc/sys/vm/nr_hugepages`, run this
//! test, `echo 0 > /proc/sys/vm/nr_hugepages`, run it again.

use ibpoll_mem::{Error, HugepagePolicy, Mempool, MempoolConfig, HUGEPAGE_SIZE};

fn free_hugepages() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn cfg(name: &str, hugepages: HugepagePolicy) -> MempoolConfig {
    // 1024 x (128 + 2048) bytes + 64 KiB of headers: 2 x 2 MiB pages.
    MempoolConfig {
        data_room: 2048,
        cache_size: 32,
        hugepages,
        ..MempoolConfig::new(name, 1024)
    }
}

fn exercise(p: &Mempool) {
    let r = p.region();
    assert_eq!(r.addr % HUGEPAGE_SIZE, 0);
    assert_eq!(r.len % HUGEPAGE_SIZE, 0);
    let mut bufs: Vec<_> = (0..p.capacity()).map(|_| p.alloc().unwrap()).collect();
    for m in &mut bufs {
        assert!(r.contains(m.buf_addr(), m.buf_len()));
        m.buf_mut().fill(0xa5);
    }
    drop(bufs);
    assert_eq!(p.in_use(), 0);
}

// One test, so the free-page count it reads is not changed by a sibling test meanwhile.
#[test]
fn hugepage_policies() {
    let never = Mempool::new(cfg("never", HugepagePolicy::Never)).unwrap();
    assert!(!never.region().hugepages);
    exercise(&never);

    let free = free_hugepages();
    let prefer = Mempool::new(cfg("prefer", HugepagePolicy::Prefer)).unwrap();
    if free >= 2 {
        assert!(
            prefer.region().hugepages,
            "{free} free hugepages but Prefer fell back"
        );
    } else {
        assert!(!prefer.region().hugepages);
    }
    exercise(&prefer);
    drop(prefer);

    let free = free_hugepages();
    match Mempool::new(cfg("require", HugepagePolicy::Require)) {
        Ok(p) => {
            assert!(p.region().hugepages);
            exercise(&p);
        }
        Err(e @ Error::HugepagesUnavailable { pages: 2, .. }) => {
            assert!(free < 2, "{free} free hugepages but Require failed: {e}");
            let msg = e.to_string();
            assert!(msg.contains("echo 2 > /proc/sys/vm/nr_hugepages"), "{msg}");
            assert!(std::error::Error::source(&e).is_some());
            eprintln!(
                "skipped the hugepage-backed Require check: {free} free 2 MiB hugepages \
                 (echo 64 > /proc/sys/vm/nr_hugepages to run it); the error path was checked"
            );
        }
        Err(e) => panic!("unexpected error: {e:?}"),
    }
}
