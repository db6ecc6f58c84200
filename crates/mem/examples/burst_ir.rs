//! Instruction counts of one 32-packet alloc + free burst, for callgrind:
//!
//! ```text
//! cargo build --release -p ibpoll-mem --example burst_ir
//! valgrind --tool=callgrind --toggle-collect='burst_ir::burst_*' target/release/examples/burst_ir
//! ```
//!
//! Each `burst_*` function allocates 32 buffers and frees them once; it runs `ITERS`
//! times on a registered lcore after a warm-up, so Ir / `ITERS` is the cost per burst.

use std::hint::black_box;

use ibpoll_mem::{register_lcore, HugepagePolicy, Mbuf, Mempool, MempoolConfig};

const BURST: usize = 32;
const ITERS: usize = 10_000;

#[inline(never)]
fn burst_option_slots(pool: &Mempool, slots: &mut [Option<Mbuf>; BURST]) {
    let n = pool.alloc_bulk(slots);
    assert_eq!(n, BURST);
    for s in slots.iter_mut() {
        drop(s.take());
    }
}

fn main() {
    let pool = Mempool::new(MempoolConfig {
        hugepages: HugepagePolicy::Never,
        ..MempoolConfig::new("burst-ir", 8192)
    })
    .expect("pool");
    let _lcore = register_lcore(0).expect("lcore 0");
    let mut slots: [Option<Mbuf>; BURST] = [const { None }; BURST];
    for _ in 0..ITERS {
        burst_option_slots(black_box(&pool), &mut slots);
    }
    assert_eq!(pool.in_use(), 0);
    println!("{ITERS} iterations of each burst_* function; divide its Ir by {ITERS}");
}
