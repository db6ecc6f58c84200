//! Instruction counts of one 32-packet alloc + free burst, for callgrind:
//!
//! ```text
//! cargo build --release -p ibpoll-mem --example burst_ir
//! valgrind --tool=callgrind --toggle-collect='burst_ir::burst_*' target/release/examples/burst_ir
//! ```
//!
//! Each `burst_*` function allocates 32 buffers and frees them once; it runs `ITERS`
//! times on a registered lcore, so its inclusive Ir / `ITERS` is the cost per burst
//! (`callgrind_annotate --inclusive=yes`; the one cache refill of the first call is
//! spread over all). `burst_option_slots` is the old path (`Option` slots, a drop per
//! buffer), `burst_array` the `MbufArray` one (one TLS lookup per call),
//! `burst_handle` the same through an `LcoreMem`.

use std::hint::black_box;

use ibpoll_mem::{
    register_lcore, HugepagePolicy, LcoreMem, Mbuf, MbufArray, Mempool, MempoolConfig,
};

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

/// `MbufArray` burst: one TLS lookup for the alloc, one for the bulk free.
#[inline(never)]
fn burst_array(pool: &Mempool, arr: &mut MbufArray) {
    let n = pool.alloc_bulk_into(arr, BURST);
    assert_eq!(n, BURST);
    arr.clear();
}

/// The same through an `LcoreMem` handle: the cache slot resolved once, outside.
#[inline(never)]
fn burst_handle(mem: &mut LcoreMem<'_>, arr: &mut MbufArray) {
    let n = mem.alloc_bulk(arr, BURST);
    assert_eq!(n, BURST);
    mem.free_bulk(arr);
}

fn main() {
    // Logs (the pool's warnings) on standard error, filtered by RUST_LOG (default warn),
    // as in every program of the workspace.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let pool = Mempool::new(MempoolConfig {
        hugepages: HugepagePolicy::Never,
        ..MempoolConfig::new("burst-ir", 8192)
    })
    .expect("pool");
    let lcore = register_lcore(0).expect("lcore 0");
    let mut mem = pool.lcore_handle(&lcore);
    let mut slots: [Option<Mbuf>; BURST] = [const { None }; BURST];
    let mut arr = MbufArray::with_capacity(BURST);
    for _ in 0..ITERS {
        burst_option_slots(black_box(&pool), &mut slots);
    }
    for _ in 0..ITERS {
        burst_array(black_box(&pool), &mut arr);
    }
    for _ in 0..ITERS {
        burst_handle(black_box(&mut mem), &mut arr);
    }
    assert_eq!(pool.in_use(), 0);
    println!("{ITERS} iterations of each burst_* function; divide its Ir by {ITERS}");
}
