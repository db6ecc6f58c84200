//! Headroom / data window arithmetic against a plain model: a `Vec<u8>` buffer with an
//! offset and a length, driven by random operations.

use ibpoll_mem::{HugepagePolicy, Mbuf, Mempool, MempoolConfig};
use proptest::prelude::*;

const HEADROOM: usize = 64;
const DATA_ROOM: usize = 200;
const BUF_LEN: usize = HEADROOM + DATA_ROOM;

#[derive(Clone, Debug)]
enum Op {
    Prepend(usize, u8),
    Adj(usize),
    Append(usize, u8),
    Trim(usize),
    SetData(usize, usize),
    Reset,
    WriteData(u8),
}

fn op() -> impl Strategy<Value = Op> {
    // Sizes run past the buffer so the failure paths are hit too.
    let n = prop_oneof![
        0..=8usize,
        0..=BUF_LEN + 8,
        Just(usize::MAX),
        Just(u32::MAX as usize + 1)
    ];
    prop_oneof![
        (n.clone(), any::<u8>()).prop_map(|(n, b)| Op::Prepend(n, b)),
        n.clone().prop_map(Op::Adj),
        (n.clone(), any::<u8>()).prop_map(|(n, b)| Op::Append(n, b)),
        n.clone().prop_map(Op::Trim),
        (n.clone(), n).prop_map(|(o, l)| Op::SetData(o, l)),
        Just(Op::Reset),
        any::<u8>().prop_map(Op::WriteData),
    ]
}

struct Model {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

fn check(m: &Mbuf, model: &Model) {
    assert_eq!(m.data_offset(), model.off);
    assert_eq!(m.len(), model.len);
    assert_eq!(m.is_empty(), model.len == 0);
    assert_eq!(m.headroom(), model.off);
    assert_eq!(m.tailroom(), BUF_LEN - model.off - model.len);
    assert_eq!(m.buf(), &model.buf[..]);
    assert_eq!(m.data(), &model.buf[model.off..model.off + model.len]);
}

fn pool() -> Mempool {
    Mempool::new(MempoolConfig {
        headroom: HEADROOM as u32,
        data_room: DATA_ROOM as u32,
        cache_size: 0,
        hugepages: HugepagePolicy::Never,
        ..MempoolConfig::new("model", 4)
    })
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mbuf_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let pool = pool();
        let mut m = pool.alloc().unwrap();
        m.buf_mut().fill(0);
        let mut model = Model { buf: vec![0; BUF_LEN], off: HEADROOM, len: 0 };
        check(&m, &model);
        for op in ops {
            match op {
                Op::Prepend(n, b) => {
                    let ok = n <= model.off;
                    match m.prepend(n) {
                        Some(s) => {
                            prop_assert!(ok);
                            prop_assert_eq!(s.len(), n);
                            s.fill(b);
                            model.off -= n;
                            model.len += n;
                            model.buf[model.off..model.off + n].fill(b);
                        }
                        None => prop_assert!(!ok),
                    }
                }
                Op::Adj(n) => {
                    let ok = n <= model.len;
                    prop_assert_eq!(m.adj(n), ok);
                    if ok {
                        model.off += n;
                        model.len -= n;
                    }
                }
                Op::Append(n, b) => {
                    let end = model.off + model.len;
                    let ok = n <= BUF_LEN - end;
                    match m.append(n) {
                        Some(s) => {
                            prop_assert!(ok);
                            prop_assert_eq!(s.len(), n);
                            s.fill(b);
                            model.buf[end..end + n].fill(b);
                            model.len += n;
                        }
                        None => prop_assert!(!ok),
                    }
                }
                Op::Trim(n) => {
                    let ok = n <= model.len;
                    prop_assert_eq!(m.trim(n), ok);
                    if ok {
                        model.len -= n;
                    }
                }
                Op::SetData(o, l) => {
                    let ok = o.checked_add(l).is_some_and(|e| e <= BUF_LEN);
                    prop_assert_eq!(m.set_data(o, l), ok);
                    if ok {
                        model.off = o;
                        model.len = l;
                    }
                }
                Op::Reset => {
                    m.meta_mut().user = 5;
                    m.reset();
                    prop_assert_eq!(m.meta().user, 0);
                    model.off = HEADROOM;
                    model.len = 0;
                }
                Op::WriteData(b) => {
                    m.data_mut().fill(b);
                    model.buf[model.off..model.off + model.len].fill(b);
                }
            }
            check(&m, &model);
        }
    }
}

#[test]
fn edge_cases() {
    let pool = pool();
    let mut m = pool.alloc().unwrap();
    // Whole headroom can be prepended, one byte more cannot.
    assert!(m.prepend(HEADROOM + 1).is_none());
    assert_eq!(m.prepend(HEADROOM).unwrap().len(), HEADROOM);
    assert_eq!(m.headroom(), 0);
    assert!(m.prepend(1).is_none());
    assert_eq!(m.prepend(0).unwrap().len(), 0);
    // Whole tailroom can be appended.
    assert!(m.append(DATA_ROOM + 1).is_none());
    assert_eq!(m.append(DATA_ROOM).unwrap().len(), DATA_ROOM);
    assert_eq!((m.len(), m.tailroom()), (BUF_LEN, 0));
    assert!(m.append(1).is_none());
    // Strip it all from both ends.
    assert!(!m.adj(BUF_LEN + 1));
    assert!(m.adj(40));
    assert!(!m.trim(BUF_LEN));
    assert!(m.trim(BUF_LEN - 40));
    assert!(m.is_empty());
    assert_eq!(m.data_offset(), 40);
    // Receive path: the DMA wrote at offset 0, GRH first.
    assert!(m.set_data(0, BUF_LEN));
    assert!(!m.set_data(1, BUF_LEN));
    assert!(!m.set_data(usize::MAX, 2));
    assert!(m.set_data(BUF_LEN, 0));
    assert!(m.set_data(0, 40 + 4 + 20));
    assert!(m.adj(40 + 4));
    assert_eq!(m.len(), 20);
    m.reset();
    assert_eq!((m.data_offset(), m.len()), (HEADROOM, 0));
}
