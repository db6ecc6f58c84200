//! `MbufArray` against a model built on `Vec<Mbuf>`, driven by random operations: two
//! arrays (a burst and a side array, as a classifier's exceptions) and their two models
//! hold buffers tagged with a serial number (`meta.user`); after every operation the tag
//! sequences match, and each pool's `in_use` equals the buffers the four containers hold,
//! so nothing the array frees in bulk is lost or freed twice. Buffers come from two pools
//! (one with small lcore caches, one without), mixed in one array, on a registered lcore
//! so bulk frees go through cache flushes.

use ibpoll_mem::{register_lcore, HugepagePolicy, Mbuf, MbufArray, Mempool, MempoolConfig};
use proptest::prelude::*;

const CAP: usize = 12;
const SIDE_CAP: usize = 5;

#[derive(Clone, Debug)]
enum Op {
    /// Push `n` fresh buffers one by one, from pool `p % 2`.
    Push(u8, usize),
    /// Bulk-allocate up to `n` into the burst from pool `p % 2`.
    AllocInto(u8, usize),
    Pop,
    SwapRemove(usize),
    Take(usize),
    /// `drain_front(n)`, consuming `k` of them.
    DrainFront(usize, usize),
    Truncate(usize),
    Clear,
    /// Keep tags whose bit `b` is clear.
    RetainMut(u8),
    /// Move tags whose bit `b` is set to the side array.
    PartitionInto(u8),
    MoveTo(usize),
    /// Burst takes from the side array's front.
    ExtendFromSide,
    /// Side array takes from the burst's front.
    SideExtendFrom,
    /// Write a tag through `IndexMut` / `get_mut`.
    Retag(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0..CAP + 3; // past the end too
    prop_oneof![
        (any::<u8>(), 0..CAP + 3).prop_map(|(p, n)| Op::Push(p, n)),
        (any::<u8>(), 0..CAP + 3).prop_map(|(p, n)| Op::AllocInto(p, n)),
        Just(Op::Pop),
        i.clone().prop_map(Op::SwapRemove),
        i.clone().prop_map(Op::Take),
        (i.clone(), i.clone()).prop_map(|(n, k)| Op::DrainFront(n, k)),
        i.clone().prop_map(Op::Truncate),
        Just(Op::Clear),
        (0u8..4).prop_map(Op::RetainMut),
        (0u8..4).prop_map(Op::PartitionInto),
        i.clone().prop_map(Op::MoveTo),
        Just(Op::ExtendFromSide),
        Just(Op::SideExtendFrom),
        i.prop_map(Op::Retag),
    ]
}

struct World {
    pools: [Mempool; 2],
    next_tag: u64,
    arr: MbufArray,
    side: MbufArray,
    model: Vec<Mbuf>,
    side_model: Vec<Mbuf>,
}

fn tags(s: &[Mbuf]) -> Vec<u64> {
    s.iter().map(|m| m.meta().user).collect()
}

impl World {
    fn new(cached: &Mempool, uncached: &Mempool) -> World {
        World {
            pools: [cached.clone(), uncached.clone()],
            next_tag: 0,
            arr: MbufArray::with_capacity(CAP),
            side: MbufArray::with_capacity(SIDE_CAP),
            model: Vec::new(),
            side_model: Vec::new(),
        }
    }

    /// Two buffers with the same new tag: one for the array, one for the model.
    fn pair(&mut self, p: u8) -> (Mbuf, Mbuf) {
        let pool = &self.pools[usize::from(p % 2)];
        let (mut a, mut b) = (pool.alloc().unwrap(), pool.alloc().unwrap());
        a.meta_mut().user = self.next_tag;
        b.meta_mut().user = self.next_tag;
        self.next_tag += 1;
        (a, b)
    }

    fn check(&self) {
        assert_eq!(tags(self.arr.as_slice()), tags(&self.model));
        assert_eq!(tags(self.side.as_slice()), tags(&self.side_model));
        assert_eq!(self.arr.len(), self.model.len());
        assert_eq!(self.arr.room(), CAP - self.model.len());
        assert_eq!(self.arr.is_full(), self.model.len() == CAP);
        assert_eq!(self.arr.is_empty(), self.model.is_empty());
        for (i, pool) in self.pools.iter().enumerate() {
            let id = pool.id();
            let held = [
                self.arr.as_slice(),
                self.side.as_slice(),
                &self.model,
                &self.side_model,
            ]
            .iter()
            .flat_map(|s| s.iter())
            .filter(|m| m.pool_id() == id)
            .count();
            assert_eq!(pool.in_use(), held, "pool {i}: in_use vs buffers held");
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Push(p, n) => {
                for _ in 0..n {
                    let (a, b) = self.pair(p);
                    match self.arr.push(a) {
                        Ok(()) => self.model.push(b),
                        Err(back) => {
                            assert_eq!(self.model.len(), CAP);
                            assert_eq!(back.meta().user, b.meta().user);
                        }
                    }
                }
            }
            Op::AllocInto(p, n) => {
                let pool = self.pools[usize::from(p % 2)].clone();
                let start = self.arr.len();
                let got = pool.alloc_bulk_into(&mut self.arr, n);
                assert_eq!(got, n.min(CAP - start));
                for k in start..start + got {
                    let mut b = pool.alloc().unwrap();
                    self.arr[k].meta_mut().user = self.next_tag;
                    b.meta_mut().user = self.next_tag;
                    self.next_tag += 1;
                    self.model.push(b);
                }
            }
            Op::Pop => {
                let (a, b) = (self.arr.pop(), self.model.pop());
                assert_eq!(a.map(|m| m.meta().user), b.map(|m| m.meta().user));
            }
            Op::SwapRemove(i) if i < self.model.len() => {
                let (a, b) = (self.arr.swap_remove(i), self.model.swap_remove(i));
                assert_eq!(a.meta().user, b.meta().user);
            }
            Op::Take(i) if i < self.model.len() => {
                let (a, b) = (self.arr.take(i), self.model.remove(i));
                assert_eq!(a.meta().user, b.meta().user);
            }
            Op::SwapRemove(_) | Op::Take(_) => {}
            Op::DrainFront(n, k) => {
                let want = n.min(self.model.len());
                let mut d = self.arr.drain_front(n);
                assert_eq!(d.len(), want);
                let got: Vec<u64> = d.by_ref().take(k).map(|m| m.meta().user).collect();
                drop(d);
                let expect: Vec<u64> = self
                    .model
                    .drain(..k.min(want))
                    .map(|m| m.meta().user)
                    .collect();
                assert_eq!(got, expect);
            }
            Op::Truncate(n) => {
                self.arr.truncate(n);
                self.model.truncate(n);
            }
            Op::Clear => {
                self.arr.clear();
                self.model.clear();
            }
            Op::RetainMut(bit) => {
                let keep = |m: &Mbuf| m.meta().user & (1 << bit) == 0;
                self.arr.retain_mut(|m| keep(m));
                self.model.retain(keep);
            }
            Op::PartitionInto(bit) => {
                let moves = |m: &Mbuf| m.meta().user & (1 << bit) != 0;
                let moved = self.arr.partition_into(&mut self.side, |m| !moves(m));
                let mut kept = Vec::new();
                let mut model_moved = 0;
                for m in self.model.drain(..) {
                    if moves(&m) && self.side_model.len() < SIDE_CAP {
                        self.side_model.push(m);
                        model_moved += 1;
                    } else {
                        kept.push(m);
                    }
                }
                self.model = kept;
                assert_eq!(moved, model_moved);
            }
            Op::MoveTo(i) => {
                let ok = i < self.model.len() && self.side_model.len() < SIDE_CAP;
                assert_eq!(self.arr.move_to(i, &mut self.side).is_ok(), ok);
                if ok {
                    let m = self.model.swap_remove(i);
                    self.side_model.push(m);
                }
            }
            Op::ExtendFromSide => {
                let n = self.arr.extend_from(&mut self.side);
                assert_eq!(n, (CAP - self.model.len()).min(self.side_model.len()));
                self.model.extend(self.side_model.drain(..n));
            }
            Op::SideExtendFrom => {
                let n = self.side.extend_from(&mut self.arr);
                assert_eq!(n, (SIDE_CAP - self.side_model.len()).min(self.model.len()));
                self.side_model.extend(self.model.drain(..n));
            }
            Op::Retag(i) => {
                if i < self.model.len() {
                    let t = self.next_tag;
                    self.next_tag += 1;
                    self.arr[i].meta_mut().user = t;
                    self.model[i].meta_mut().user = t;
                } else {
                    assert!(self.arr.get_mut(i).is_none());
                }
            }
        }
    }
}

fn pools() -> (Mempool, Mempool) {
    let cfg = |name: &str, cache_size| MempoolConfig {
        data_room: 64,
        cache_size,
        hugepages: HugepagePolicy::Never,
        ..MempoolConfig::new(name, 4 * (CAP + SIDE_CAP) as u32)
    };
    (
        Mempool::new(cfg("model-cached", 4)).unwrap(),
        Mempool::new(cfg("model-uncached", 0)).unwrap(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn array_matches_vec_model(ops in prop::collection::vec(op(), 1..60)) {
        let _g = register_lcore(60).unwrap();
        let (cached, uncached) = pools();
        let mut w = World::new(&cached, &uncached);
        for op in ops {
            w.apply(op);
            w.check();
        }
        drop(w);
        prop_assert_eq!(cached.in_use(), 0);
        prop_assert_eq!(uncached.in_use(), 0);
    }

    /// The same on an unregistered thread: every bulk free goes to the backends.
    #[test]
    fn array_matches_vec_model_unregistered(ops in prop::collection::vec(op(), 1..60)) {
        let (cached, uncached) = pools();
        let mut w = World::new(&cached, &uncached);
        for op in ops {
            w.apply(op);
            w.check();
        }
        drop(w);
        prop_assert_eq!(cached.in_use(), 0);
        prop_assert_eq!(uncached.in_use(), 0);
    }
}
