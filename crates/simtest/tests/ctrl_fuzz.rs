//! The control-plane fuzz target's body (`ibpoll_simtest::ctrlfuzz`) on stable: its
//! committed seed corpus (`fuzz/seeds/ctrl`, which CI's fuzz smoke run starts from) and
//! a few thousand pseudo-random inputs, each with every invariant checked after every
//! operation. `cargo test -p ibpoll-simtest --test ctrl_fuzz -- --ignored` writes the
//! corpus again from the sequences below.

use std::path::PathBuf;

use ibpoll_pmd_sim::SimRng;
use ibpoll_simtest::ctrlfuzz::{run, Reached};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/ctrl")
}

/// The operations of the input language, as bytes (see `ctrlfuzz`).
mod op {
    /// Answers the latest request with OK (an MCMemberRecord with MLID 0xC000 | `x`, or
    /// a PathRecord).
    pub fn answer_ok(x: u8) -> Vec<u8> {
        vec![0, 0, 0, 1, x, 1, 3, 1, 0, 0, 1]
    }
    /// Answers the `back`-th latest request with status index `status` (4: 0x0200, 5:
    /// 0x0100, 6: busy).
    pub fn answer_status(back: u8, status: u8) -> Vec<u8> {
        vec![0, back, status, 1, 1, 1, 3, 1, 0, 0, 1]
    }
    /// Time passes: 3 = 100 ms, 5 = 1 s, 7 = 20 s.
    pub fn time(k: u8) -> Vec<u8> {
        vec![5, k]
    }
    pub fn subscribe(g: u8) -> Vec<u8> {
        vec![7, g, 0]
    }
    pub fn unsubscribe(g: u8) -> Vec<u8> {
        vec![7, g, 1]
    }
    pub fn admin(up: bool) -> Vec<u8> {
        vec![7, 0, 2, u8::from(!up)]
    }
    /// 0 down, 1 up, 2 SM restart (`arg`: the MTU), 3 P_Key table (`arg`: which), 4
    /// LID, 5 a bare event (`arg`: which).
    pub fn port(what: u8, arg: u8) -> Vec<u8> {
        match what {
            0 | 1 | 4 => vec![4, what],
            _ => vec![4, what, arg],
        }
    }
    /// An ARP request (or reply) from 10.0.0.`from` for our address.
    pub fn arp(from: u8, reply: bool) -> Vec<u8> {
        let kind = if reply { 5 } else { 1 };
        vec![6, kind, from, 0, from, 1, 0, 0, 0, 0, 0x48 + from, 0]
    }
    /// A data core's packet to group `g`.
    pub fn send_group(g: u8) -> Vec<u8> {
        vec![8, 0, g << 1]
    }
    /// A data core's packet to 10.0.0.`h`.
    pub fn send_hop(h: u8) -> Vec<u8> {
        vec![8, 0, h << 1 | 1]
    }
}

fn seq(cfg: u8, ops: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![cfg];
    for o in ops {
        v.extend_from_slice(o);
    }
    v
}

fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    use op::*;
    // The startup cleanup's listing (answered: nothing to clean), then the broadcast
    // join.
    let up = [time(3), answer_ok(0), time(3), answer_ok(0), time(3)];
    let with_up = |cfg: u8, rest: &[Vec<u8>]| {
        let mut ops = up.to_vec();
        ops.extend_from_slice(rest);
        seq(cfg, &ops)
    };
    vec![
        ("link_up", seq(0, &up)),
        (
            "join_and_send",
            with_up(
                0,
                &[
                    subscribe(1),
                    time(3),
                    answer_ok(1),
                    send_group(1),
                    send_group(3),
                    time(3),
                    answer_ok(3),
                    time(5),
                ],
            ),
        ),
        (
            "arp_and_path",
            with_up(
                0,
                &[
                    arp(2, false),
                    send_hop(2),
                    time(3),
                    answer_ok(0),
                    send_hop(2),
                    arp(3, true),
                    time(5),
                ],
            ),
        ),
        (
            "flush_storm",
            with_up(
                1 << 5,
                &[
                    subscribe(1),
                    subscribe(2),
                    time(3),
                    answer_ok(1),
                    answer_status(1, 0),
                    port(0, 0),
                    time(3),
                    port(1, 0),
                    time(3),
                    answer_ok(0),
                    port(2, 1),
                    time(3),
                    answer_ok(0),
                    port(3, 2),
                    time(5),
                    port(4, 0),
                    port(5, 4),
                    time(7),
                    answer_ok(0),
                ],
            ),
        ),
        (
            "silent_sa",
            with_up(
                0x80,
                &[
                    subscribe(1),
                    subscribe(2),
                    subscribe(3),
                    time(7),
                    time(7),
                    admin(false),
                    time(7),
                    time(7),
                    admin(true),
                    time(5),
                ],
            ),
        ),
        (
            "refusals",
            with_up(
                0,
                &[
                    subscribe(1),
                    time(3),
                    answer_status(0, 5),
                    time(5),
                    time(5),
                    answer_status(0, 4),
                    unsubscribe(1),
                    send_group(4),
                    time(3),
                    answer_status(0, 6),
                    time(7),
                ],
            ),
        ),
    ]
}

#[test]
#[ignore = "writes fuzz/seeds/ctrl"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in corpus() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The committed corpus runs clean and, together, gets the controller somewhere: the
/// link up, groups Joined, a neighbour resolved, flushes, packets sent.
#[test]
fn the_seed_corpus_runs_clean_and_reaches_the_states_it_was_written_for() {
    let mut all = Reached::default();
    let mut files = 0;
    for e in std::fs::read_dir(corpus_dir()).expect("fuzz/seeds/ctrl") {
        let path = e.unwrap().path();
        let r = run(&std::fs::read(&path).unwrap());
        files += 1;
        assert!(r.link_up, "{}: the link never came up", path.display());
        all.joined_max = all.joined_max.max(r.joined_max);
        all.neighbours_max = all.neighbours_max.max(r.neighbours_max);
        all.flushes += r.flushes;
        all.tx_sent += r.tx_sent;
    }
    assert_eq!(
        files,
        corpus().len(),
        "the corpus on disk is not the one written here"
    );
    assert!(all.joined_max >= 2, "{all:?}");
    assert!(all.neighbours_max >= 1, "{all:?}");
    assert!(all.flushes >= 3, "{all:?}");
    assert!(all.tx_sent >= 2, "{all:?}");
}

/// Pseudo-random inputs (and the corpus with random bytes appended): nothing breaks.
#[test]
fn random_inputs_break_nothing() {
    let n = if cfg!(debug_assertions) { 200 } else { 3000 };
    let seeds = corpus();
    let mut rng = SimRng::seed_from_u64(0xc7_1f_u64);
    for i in 0..n {
        let mut input = if i % 2 == 0 {
            seeds[rng.index(seeds.len())].1.clone()
        } else {
            Vec::new()
        };
        let len = rng.index(400);
        input.extend((0..len).map(|_| rng.next_u64() as u8));
        run(&input);
    }
}
