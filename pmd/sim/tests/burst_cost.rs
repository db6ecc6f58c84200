//! A fixed amount of send and receive work for counting instructions per packet with
//! callgrind: bursts of 32 IPv4/UDP packets of 64 bytes from one UD QP to another,
//! each burst sent with one `tx_burst` and received with one `rx_burst`, on a
//! registered lcore (pool caches on), as a data lcore does. Ignored by default (it
//! checks only that every packet arrives); run it as
//!
//! ```text
//! valgrind --tool=callgrind target/release/deps/burst_cost-<hash> --ignored --exact unicast_bursts
//! ```
//!
//! and divide the inclusive cost of `tx_burst` and `rx_burst` by `BURSTS * 32`.

use ibpoll_dev::{Device, TxDst, UdQpConfig};
use ibpoll_mem::{HugepagePolicy, MbufArray, Mempool, MempoolConfig};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::{ipoib, QKey};

const BURST: usize = 32;
const BURSTS: usize = 4096;

fn cached_pool(name: &str) -> Mempool {
    Mempool::new(MempoolConfig {
        name: name.to_owned(),
        n_bufs: 4096,
        cache_size: 256,
        hugepages: HugepagePolicy::Never,
        ..MempoolConfig::default()
    })
    .expect("pool")
}

#[test]
#[ignore = "a workload for callgrind, not a check"]
fn unicast_bursts() {
    let _lcore = ibpoll_mem::register_lcore(0).expect("lcore 0 is free");
    let f = SimFabric::new(FabricConfig::default());
    let (a, b) = (f.add_node("a", 1), f.add_node("b", 1));
    let (pa, pb) = (a.open_port(1).unwrap(), b.open_port(1).unwrap());
    let (pool_a, pool_b) = (cached_pool("a"), cached_pool("b"));
    let cfg = |pool: &Mempool| UdQpConfig::new(pool.clone(), 0, QKey::IPOIB_DEFAULT);
    let mut qa = pa.create_ud_qp(&cfg(&pool_a)).unwrap();
    let mut qb = pb.create_ud_qp(&cfg(&pool_b)).unwrap();
    let ah = pa
        .create_ah(&ibpoll_dev::AhAttr {
            dlid: pb.attr().lid,
            sl: 0,
            src_path_bits: 0,
            static_rate: ibpoll_wire::Rate::GBPS_10,
            grh: None,
        })
        .unwrap();
    let mut pkt = [0u8; 68];
    pkt[..2].copy_from_slice(&ipoib::EtherType::IPV4.0.to_be_bytes());
    pkt[4] = 0x45;
    pkt[13] = 17;
    let dst = [TxDst {
        ah,
        qpn: qb.qpn,
        qkey: QKey::IPOIB_DEFAULT,
    }; BURST];
    let mut tx = MbufArray::with_capacity(BURST);
    let mut rx = MbufArray::with_capacity(BURST);
    let mut received = 0;
    for i in 0..BURSTS * BURST {
        let mut m = pool_a.alloc().expect("buffer");
        pkt[24] = i as u8; // a few flows
        m.append(pkt.len()).unwrap().copy_from_slice(&pkt);
        tx.push(m).expect("room for a burst");
        if tx.is_full() {
            assert_eq!(qa.tx.tx_burst(&mut tx, &dst), BURST);
            let n = qb.rx[0].rx_burst(&mut rx);
            received += n;
            rx.clear();
        }
    }
    assert_eq!(received, BURSTS * BURST);
}
