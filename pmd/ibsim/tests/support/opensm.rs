// Shared by pmd/ibsim/tests/opensm.rs and pmd/verbs/tests/umad_opensm.rs (include!d:
// one copy of the OpenSM fabric, the judge and the request table).

use std::fmt::Write as _;
use std::io::Read as _;
use std::ops::{Deref, DerefMut};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ibpoll_ctrl::{CtrlConfig, GroupAddr, GroupPhase, Request};
use ibpoll_dev::{Clock, Device, Mad, MadAddr, MadChannel, MonotonicClock, Port};
use ibpoll_pmd_ibsim::{Error, HybridFabric, HybridPort, IbsimMadChannel, IbsimPort};
use ibpoll_pmd_sim::sa::{PathEnd, Requester, SaConfig, SubnetAdmin};
use ibpoll_pmd_sim::{FabricConfig, SimDevice, SimFabric};
use ibpoll_testkit as testkit;
use ibpoll_testkit::data::{send_direct, Direct};
use ibpoll_wire::ipoib::{broadcast_mgid, ipv4_mcast_mgid, McastScope};
use ibpoll_wire::mad::{Method, Status};
use ibpoll_wire::mcmember::{self, mask as mcm, JoinState};
use ibpoll_wire::path_record::{self, mask as prm};
use ibpoll_wire::sa::{Attribute, ComponentMask, SaMad, Selector};
use ibpoll_wire::{Gid, IbMtu, Lid, PKey, QKey};

/// One ibsim fabric at a time in this process.
static FABRIC: Mutex<()> = Mutex::new(());

const TOPOLOGY: &str = r#"Hca 1 "sm"
[1] "Switch1"[1]

Switch 8 "Switch1"
[1] "sm"[1]
[2] "hostA"[1]
[3] "hostB"[1]

Hca 1 "hostA"
[1] "Switch1"[2]

Hca 1 "hostB"
[1] "Switch1"[3]
"#;

/// How long the subnet may take to come up (OpenSM's first sweep).
const SUBNET_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one SA request waits for its answer before it is sent again.
const SA_RETRY: Duration = Duration::from_secs(1);
/// How many times an SA request is sent before the test gives up.
const SA_TRIES: u32 = 5;

// ------------------------------------------------------------------ tools

struct Tools {
    ibsim: PathBuf,
    opensm: PathBuf,
    umad2sim: PathBuf,
}

/// A program on PATH, or in the sbin directories a non-root PATH lacks (Debian installs
/// opensm in /usr/sbin).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// ibsim's LD_PRELOAD library: `$IBSIM_UMAD2SIM`, else `<libdir>/umad2sim/libumad2sim.so`.
fn find_umad2sim() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IBSIM_UMAD2SIM") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let mut dirs: Vec<PathBuf> = ["/usr/lib64", "/usr/lib", "/usr/local/lib"]
        .iter()
        .map(PathBuf::from)
        .collect();
    // Debian's multiarch directories (/usr/lib/x86_64-linux-gnu, ...).
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        dirs.extend(rd.flatten().map(|e| e.path()));
    }
    dirs.into_iter()
        .map(|d| d.join("umad2sim/libumad2sim.so"))
        .find(|p| p.is_file())
}

fn find_tools() -> Result<Tools, String> {
    let ibsim = which("ibsim");
    let opensm = which("opensm");
    let umad2sim = find_umad2sim();
    match (ibsim, opensm, umad2sim) {
        (Some(ibsim), Some(opensm), Some(umad2sim)) => Ok(Tools {
            ibsim,
            opensm,
            umad2sim,
        }),
        (i, o, u) => {
            let mut missing = Vec::new();
            if i.is_none() {
                missing.push("ibsim (package ibsim-utils)");
            }
            if u.is_none() {
                missing.push("umad2sim/libumad2sim.so (package ibsim-utils)");
            }
            if o.is_none() {
                missing.push("opensm (package opensm)");
            }
            Err(missing.join(", "))
        }
    }
}

/// The tools, or `None` (the test is skipped, with the reason printed) when one is
/// missing; with `CI` set a missing tool fails the test instead.
fn tools_or_skip(test: &str) -> Option<Tools> {
    match find_tools() {
        Ok(t) => Some(t),
        Err(missing) if std::env::var_os("CI").is_some() => panic!(
            "CI is set but {missing} is missing: .ci/run must install the Debian packages \
             opensm and ibsim-utils"
        ),
        Err(missing) => {
            eprintln!("SKIPPED {test}: {missing} not found");
            None
        }
    }
}

// ------------------------------------------------------------------ processes

/// The processes and files of one fabric; dropping it kills exactly the processes it
/// started (by PID) and removes its directory, unless the test is failing: then the
/// logs stay and their path is printed.
struct Fabric {
    dir: PathBuf,
    opensm: Option<Child>,
    ibsim: Option<Child>,
    /// False for [`Fabric::attach`]: another process started it and cleans it up.
    owned: bool,
}

impl Fabric {
    fn start(tools: &Tools) -> Fabric {
        Fabric::start_with(tools, TOPOLOGY)
    }

    /// Starts ibsim on `topology` (ibnetdiscover format) and OpenSM on its node "sm".
    fn start_with(tools: &Tools, topology: &str) -> Fabric {
        assert!(
            !ibsim_listening(),
            "another ibsim is already running on this machine (the abstract socket \
             \"sim:ctl\" is bound); stop it first: ibsim's socket names are global"
        );
        let dir = std::env::temp_dir().join(format!(
            "ibpoll-opensm-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("create the fabric's temp dir");
        std::fs::write(dir.join("net.topo"), topology).expect("write net.topo");
        // An empty config: OpenSM's defaults, whatever /etc/opensm holds.
        std::fs::write(dir.join("opensm.conf"), "").expect("write opensm.conf");
        let mut fabric = Fabric {
            dir,
            opensm: None,
            ibsim: None,
            owned: true,
        };

        let log = |name: &str| std::fs::File::create(fabric.dir.join(name)).expect("log file");
        let (out, err) = (log("ibsim.out"), log("ibsim.err"));
        fabric.ibsim = Some(
            Command::new(&tools.ibsim)
                // -s: start the fabric at once; -n: no console on stdin.
                .args(["-s", "-n", "net.topo"])
                .current_dir(&fabric.dir)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("spawn ibsim"),
        );
        let start = Instant::now();
        while !ibsim_listening() {
            if let Some(status) = fabric
                .ibsim
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("ibsim exited ({status}):\n{}", fabric.logs());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "ibsim did not bind sim:ctl within 10 s:\n{}",
                fabric.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        let (out, err) = (log("opensm.out"), log("opensm.err"));
        fabric.opensm = Some(
            Command::new(&tools.opensm)
                .arg("-F")
                .arg(fabric.dir.join("opensm.conf"))
                .arg("-P")
                .arg(fabric.dir.join("partitions.conf"))
                .arg("-f")
                .arg(fabric.dir.join("opensm.log"))
                .env("SIM_HOST", "sm")
                .env("LD_PRELOAD", &tools.umad2sim)
                .env("OSM_CACHE_DIR", &fabric.dir)
                // umad2sim writes its fake sysfs under ./sys-<pid>.
                .current_dir(&fabric.dir)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("spawn opensm"),
        );
        fabric
    }

    /// The fabric another process started in `dir` (its logs are read from there; its
    /// processes are not ours to watch or stop).
    #[allow(dead_code)] // used by pmd/verbs' umad test only
    fn attach(dir: PathBuf) -> Fabric {
        Fabric {
            dir,
            opensm: None,
            ibsim: None,
            owned: false,
        }
    }

    fn check_alive(&mut self) {
        let mut exited = None;
        for (name, child) in [("ibsim", &mut self.ibsim), ("opensm", &mut self.opensm)] {
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                exited = Some((name, status));
            }
        }
        if let Some((name, status)) = exited {
            panic!("{name} exited ({status}):\n{}", self.logs());
        }
    }

    /// The tail of every log, for failure messages.
    fn logs(&self) -> String {
        let mut s = String::new();
        for name in [
            "ibsim.out",
            "ibsim.err",
            "opensm.out",
            "opensm.err",
            "opensm.log",
        ] {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(self.dir.join(name)) {
                let _ = f.read_to_string(&mut text);
            }
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            let _ = writeln!(s, "--- {name} (last {} lines)", tail.len());
            for l in tail {
                let _ = writeln!(s, "{l}");
            }
        }
        s
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // OpenSM first: it is ibsim's client.
        for child in [self.opensm.take(), self.ibsim.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.owned {
        } else if std::thread::panicking() {
            eprintln!("fabric logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// True if something is bound to ibsim's control socket (the abstract name
/// `sim:ctl\0`, terminating NUL included, as ibsim binds it).
fn ibsim_listening() -> bool {
    let Ok(addr) = SocketAddr::from_abstract_name(b"sim:ctl\0") else {
        return false;
    };
    UnixDatagram::unbound()
        .and_then(|s| s.connect_addr(&addr))
        .is_ok()
}

// ------------------------------------------------------------------ SA client

/// A blocking SA client over any MAD channel (ibsim's sockets, or libibumad under
/// umad2sim), one request outstanding at a time.
struct OpenSm {
    ch: Box<dyn MadChannel>,
    to: MadAddr,
    tid: u64,
    /// Requests answered.
    answered: u64,
    /// MADs received that answered nothing in flight.
    unmatched: u64,
}

impl OpenSm {
    fn new(ch: IbsimMadChannel) -> OpenSm {
        let to = ch.sa_addr();
        OpenSm::over(Box::new(ch), to)
    }

    /// A client over `ch`, sending to the SA at `to`.
    fn over(ch: Box<dyn MadChannel>, to: MadAddr) -> OpenSm {
        OpenSm {
            ch,
            to,
            // Bits 48..63 set: ibsim overwrites them with its client slot (< 10), umad
            // bits 32..47 with its agent; the transport owns bits 32..63, so answers are
            // matched on the low 32 bits.
            tid: 0xA5A5_0000_0000_0000,
            answered: 0,
            unmatched: 0,
        }
    }

    /// Sends `req` with a fresh TID (written into it) and waits for the answer.
    fn call(&mut self, req: &mut Mad, fabric: &mut Fabric) -> Mad {
        self.tid += 1;
        let tid = self.tid;
        req[8..16].copy_from_slice(&tid.to_be_bytes());
        for _ in 0..SA_TRIES {
            self.ch.send(req, self.to).expect("send a MAD");
            let sent = Instant::now();
            while sent.elapsed() < SA_RETRY {
                if let Some((m, _)) = self.ch.recv() {
                    if m[12..16] == tid.to_be_bytes()[4..] && m[3] & 0x80 != 0 {
                        // Bits 32..63 are the transport's: give the answer the request's,
                        // so that answers compare by what the SA decided.
                        let mut m = m;
                        m[8..12].copy_from_slice(&req[8..12]);
                        self.answered += 1;
                        return m;
                    }
                    self.unmatched += 1;
                    continue;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            fabric.check_alive();
        }
        panic!(
            "OpenSM did not answer TID {tid:#x} ({} tries; channel {:?}):\n{}",
            SA_TRIES,
            self.ch,
            fabric.logs()
        );
    }
}

fn status(m: &Mad) -> Status {
    Status(u16::from_be_bytes([m[4], m[5]]))
}

fn mcmember_of(m: &Mad) -> mcmember::Repr {
    match SaMad::parse(m).expect("an SA MAD").attribute {
        Attribute::McMember(r) => r,
        other => panic!("not an MCMemberRecord: {other:?}"),
    }
}

fn mcmember_request(method: Method, mask: ComponentMask, rec: mcmember::Repr) -> Mad {
    SaMad::request(method, 0, mask, Attribute::McMember(rec)).to_bytes()
}

// ------------------------------------------------------------------ the judge

/// One simulated host: its channel to OpenSM and what our SA is told about it.
struct Host {
    name: &'static str,
    osm: OpenSm,
    requester: Requester,
}

/// Which host sends a request.
#[derive(Debug, Clone, Copy)]
enum Sender {
    A = 0,
    B = 1,
}

/// OpenSM and the simulated SA side by side.
struct Judge<'a> {
    hosts: Vec<Host>,
    fabric: &'a mut Fabric,
    ours: SubnetAdmin,
    ends: Vec<(Gid, PathEnd)>,
    /// One line per compared request, printed at the end.
    table: Vec<(String, Status, Status)>,
}

/// The bytes of an answer both SAs define: the SA header and the first record (the
/// record answered, or the request's record echoed with an error). OpenSM leaves the
/// rest of its answer buffer uninitialised.
fn defined_len(m: &Mad) -> usize {
    let record = match u16::from_be_bytes([m[16], m[17]]) {
        0x0035 => path_record::RECORD_LEN,
        _ => mcmember::RECORD_SIZE,
    };
    56 + record
}

impl Judge<'_> {
    fn oracle(&self) -> impl Fn(&Gid) -> Option<PathEnd> + '_ {
        |g: &Gid| {
            self.ends
                .iter()
                .find(|(x, _)| x == g)
                .map(|(_, e)| e.clone())
        }
    }

    /// Our SA's answer to `req` (TID and all, as OpenSM got it) from host `from`, on
    /// `sa`.
    fn ours_on(&self, sa: &mut SubnetAdmin, from: Sender, req: &Mad) -> Mad {
        let oracle = self.oracle();
        sa.handle(req, &self.hosts[from as usize].requester, &oracle)
            .expect("the simulated SA answers every request sent here")
    }

    /// Sends `req` from host `from` to OpenSM; returns OpenSM's answer and the request
    /// as sent (with its TID).
    fn osm(&mut self, from: Sender, mut req: Mad) -> (Mad, Mad) {
        let answer = self.hosts[from as usize].osm.call(&mut req, self.fabric);
        (answer, req)
    }

    /// Sends `req` from host `from` to OpenSM and to our SA; records both statuses
    /// under `what` and prints where the answers' defined bytes differ.
    fn both(&mut self, from: Sender, what: &str, req: Mad) -> (Mad, Mad) {
        let (osm, req) = self.osm(from, req);
        let mut ours_sa = std::mem::replace(&mut self.ours, SubnetAdmin::new(SaConfig::default()));
        let ours = self.ours_on(&mut ours_sa, from, &req);
        self.ours = ours_sa;
        let what = format!("{what} [{}]", self.hosts[from as usize].name);
        println!("{what:<74} OpenSM {}  ours {}", status(&osm), status(&ours));
        let n = defined_len(&osm);
        let differ: Vec<usize> = (0..n).filter(|&i| osm[i] != ours[i]).collect();
        if !differ.is_empty() {
            println!("    answers differ at bytes {differ:?}");
            println!("    OpenSM {:02x?}", &osm[..n]);
            println!("    ours   {:02x?}", &ours[..n]);
        }
        self.table.push((what, status(&osm), status(&ours)));
        (osm, ours)
    }

    /// [`Judge::both`] from hostA.
    fn agree(&mut self, what: &str, req: Mad) -> (Mad, Mad) {
        self.agree_from(Sender::A, what, req)
    }

    /// [`Judge::both`], asserting that the answers agree: status, header and record.
    fn agree_from(&mut self, from: Sender, what: &str, req: Mad) -> (Mad, Mad) {
        let (osm, ours) = self.both(from, what, req);
        assert_eq!(
            status(&osm),
            status(&ours),
            "{what}: OpenSM answered {}, our SA {}",
            status(&osm),
            status(&ours)
        );
        let n = defined_len(&osm);
        assert_eq!(
            osm[..n],
            ours[..n],
            "{what}: same status, different answers (see the bytes printed above)"
        );
        (osm, ours)
    }
}

fn path_end(p: &IbsimPort) -> PathEnd {
    PathEnd {
        lid: p.lid,
        mtu: p.mtu().unwrap_or(IbMtu::Mtu2048),
        rate: p.rate().unwrap_or(ibpoll_wire::Rate::GBPS_10),
        pkeys: if p.pkeys.is_empty() {
            vec![PKey::DEFAULT]
        } else {
            p.pkeys.clone()
        },
    }
}

/// A create request for `mgid` copying the broadcast group's parameters (what IPoIB
/// sends, and the mask OpenSM needs to create a group).
fn create_request(bcast: &mcmember::Repr, mgid: Gid, port_gid: Gid, js: JoinState) -> Mad {
    let rec = mcmember::Repr {
        mgid,
        port_gid,
        join_state: js,
        mtu_selector: Selector::Exactly,
        rate_selector: Selector::Exactly,
        ..*bcast
    };
    let mask = mcm::MGID
        | mcm::PORT_GID
        | mcm::JOIN_STATE
        | mcm::QKEY
        | mcm::MTU_SELECTOR
        | mcm::MTU
        | mcm::TCLASS
        | mcm::PKEY
        | mcm::RATE_SELECTOR
        | mcm::RATE
        | mcm::SL
        | mcm::FLOW_LABEL
        | mcm::HOP_LIMIT;
    mcmember_request(Method::SET, mask, rec)
}

fn leave_request(mgid: Gid, port_gid: Gid, js: JoinState) -> Mad {
    let rec = mcmember::Repr {
        mgid,
        port_gid,
        join_state: js,
        ..mcmember::Repr::default()
    };
    mcmember_request(
        Method::DELETE,
        mcm::MGID | mcm::PORT_GID | mcm::JOIN_STATE,
        rec,
    )
}

fn get_group_request(mgid: Gid) -> Mad {
    let rec = mcmember::Repr {
        mgid,
        ..mcmember::Repr::default()
    };
    mcmember_request(Method::GET, mcm::MGID, rec)
}

/// The broadcast group's record, polled for: the SA answers once OpenSM's sweep is done.
fn wait_for_broadcast(osm: &mut OpenSm, fabric: &mut Fabric) -> mcmember::Repr {
    let up = Instant::now();
    loop {
        let m = osm.call(
            &mut get_group_request(broadcast_mgid(PKey::DEFAULT)),
            fabric,
        );
        if status(&m).is_ok() {
            return mcmember_of(&m);
        }
        assert!(
            up.elapsed() < SUBNET_UP_TIMEOUT,
            "OpenSM's SA did not report the broadcast group within {SUBNET_UP_TIMEOUT:?} \
             (last status {}):\n{}",
            status(&m),
            fabric.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ------------------------------------------------------------------ the test

/// The request/status table: each request sent to OpenSM (from hostA, some from hostB)
/// and to the simulated SA, their answers compared; prints the table at the end.
fn request_table(judge: &mut Judge<'_>, a: &IbsimPort, b: &IbsimPort, bcast: &mcmember::Repr) {
    let bcast = *bcast;
    let bcast_mgid = broadcast_mgid(PKey::DEFAULT);
    // (a) FullMember join of the broadcast group.
    let join_bcast = mcmember::Repr {
        mgid: bcast_mgid,
        port_gid: a.gid(),
        pkey: PKey::DEFAULT,
        join_state: JoinState::FULL_MEMBER,
        ..mcmember::Repr::default()
    };
    let (osm, ours) = judge.agree(
        "(a) join broadcast FullMember, mask MGID|PortGID|P_Key|JoinState",
        mcmember_request(
            Method::SET,
            mcm::MGID | mcm::PORT_GID | mcm::PKEY | mcm::JOIN_STATE,
            join_bcast,
        ),
    );
    assert!(status(&osm).is_ok());
    let osm_rec = mcmember_of(&osm);
    assert_eq!(osm_rec.qkey, QKey(0x0B1B));
    assert_eq!(osm_rec.mlid, Lid(0xC000));
    assert_eq!(mcmember_of(&ours), osm_rec);

    // (b) Create 239.1.1.1's group as a full member, leave it, and find it gone.
    let g1 = ipv4_mcast_mgid([239, 1, 1, 1], PKey::DEFAULT, McastScope::LINK_LOCAL);
    let (osm, ours) = judge.agree(
        "(b) create 239.1.1.1 FullMember, broadcast's parameters",
        create_request(&bcast, g1, a.gid(), JoinState::FULL_MEMBER),
    );
    assert!(status(&osm).is_ok());
    let (osm_rec, ours_rec) = (mcmember_of(&osm), mcmember_of(&ours));
    println!(
        "    MLID: OpenSM {:#06x}, ours {:#06x}",
        osm_rec.mlid.0, ours_rec.mlid.0
    );
    assert_eq!(osm_rec.mlid, ours_rec.mlid);
    let (osm, _) = judge.agree(
        "(b) leave 239.1.1.1 FullMember, mask MGID|PortGID|JoinState",
        leave_request(g1, a.gid(), JoinState::FULL_MEMBER),
    );
    assert!(status(&osm).is_ok());
    let (osm, _) = judge.agree("(b) get 239.1.1.1 after the leave", get_group_request(g1));
    assert!(!status(&osm).is_ok(), "OpenSM still has 239.1.1.1's group");

    // (c) SendOnlyFullMember creating a group. The mirror runs with SendOnlyFullMember
    // support (SimFabric's and SaConfig's default); the IBA 1.2 rules
    // (send_only_full_member = false) are shown beside it.
    let g2 = ipv4_mcast_mgid([239, 1, 1, 2], PKey::DEFAULT, McastScope::LINK_LOCAL);
    let create_sofm = create_request(&bcast, g2, a.gid(), JoinState::SEND_ONLY_FULL_MEMBER);
    let mut iba12_sa = SubnetAdmin::new(SaConfig {
        subnet_prefix: a.gid_prefix,
        send_only_full_member: false,
        ..SaConfig::default()
    });
    let iba12 = judge.ours_on(&mut iba12_sa, Sender::A, &create_sofm);
    let (osm, _) = judge.agree("(c) create 239.1.1.2 SendOnlyFullMember", create_sofm);
    let what = "(c) create 239.1.1.2 SendOnlyFullMember (ours: send_only_full_member = false)";
    println!(
        "{what:<74} OpenSM {}  ours {}",
        status(&osm),
        status(&iba12)
    );
    judge
        .table
        .push((what.into(), status(&osm), status(&iba12)));
    if status(&osm).is_ok() {
        let r = mcmember_of(&osm);
        println!(
            "    OpenSM created it: MLID {:#06x}, JoinState {:?}",
            r.mlid.0, r.join_state
        );
        judge.agree(
            "(c) get 239.1.1.2 (created send-only)",
            get_group_request(g2),
        );
        judge.agree(
            "(c) leave 239.1.1.2 SendOnlyFullMember",
            leave_request(g2, a.gid(), JoinState::SEND_ONLY_FULL_MEMBER),
        );
        let (osm, _) = judge.agree(
            "(c) get 239.1.1.2 after its only member left",
            get_group_request(g2),
        );
        assert!(
            !status(&osm).is_ok(),
            "OpenSM keeps a group without members"
        );
    }
    // A send-only full member joining an existing group.
    let mut sofm_bcast = join_bcast;
    sofm_bcast.join_state = JoinState::SEND_ONLY_FULL_MEMBER;
    judge.agree(
        "(c) join broadcast SendOnlyFullMember (already FullMember)",
        mcmember_request(
            Method::SET,
            mcm::MGID | mcm::PORT_GID | mcm::PKEY | mcm::JOIN_STATE,
            sofm_bcast,
        ),
    );
    judge.agree(
        "(c) leave broadcast SendOnlyFullMember",
        leave_request(bcast_mgid, a.gid(), JoinState::SEND_ONLY_FULL_MEMBER),
    );

    // A send-only full member keeps a group alive after the last FullMember left.
    let g6 = ipv4_mcast_mgid([239, 1, 1, 6], PKey::DEFAULT, McastScope::LINK_LOCAL);
    judge.agree(
        "(c) create 239.1.1.6 FullMember",
        create_request(&bcast, g6, a.gid(), JoinState::FULL_MEMBER),
    );
    let mut sofm_b = join_bcast;
    sofm_b.mgid = g6;
    sofm_b.port_gid = b.gid();
    sofm_b.join_state = JoinState::SEND_ONLY_FULL_MEMBER;
    judge.agree_from(
        Sender::B,
        "(c) join 239.1.1.6 SendOnlyFullMember",
        mcmember_request(
            Method::SET,
            mcm::MGID | mcm::PORT_GID | mcm::PKEY | mcm::JOIN_STATE,
            sofm_b,
        ),
    );
    judge.agree(
        "(c) leave 239.1.1.6 FullMember",
        leave_request(g6, a.gid(), JoinState::FULL_MEMBER),
    );
    let (osm, _) = judge.agree(
        "(c) get 239.1.1.6 (only a SendOnlyFullMember left)",
        get_group_request(g6),
    );
    println!(
        "    OpenSM {} the group alive for its SendOnlyFullMember",
        if status(&osm).is_ok() {
            "keeps"
        } else {
            "does not keep"
        }
    );
    judge.agree_from(
        Sender::B,
        "(c) leave 239.1.1.6 SendOnlyFullMember",
        leave_request(g6, b.gid(), JoinState::SEND_ONLY_FULL_MEMBER),
    );
    judge.agree(
        "(c) get 239.1.1.6 after everyone left",
        get_group_request(g6),
    );
    // A NonMember does not keep a group alive.
    let g7 = ipv4_mcast_mgid([239, 1, 1, 7], PKey::DEFAULT, McastScope::LINK_LOCAL);
    judge.agree(
        "(c) create 239.1.1.7 FullMember",
        create_request(&bcast, g7, a.gid(), JoinState::FULL_MEMBER),
    );
    let mut nm_b = sofm_b;
    nm_b.mgid = g7;
    nm_b.join_state = JoinState::NON_MEMBER;
    judge.agree_from(
        Sender::B,
        "(c) join 239.1.1.7 NonMember",
        mcmember_request(
            Method::SET,
            mcm::MGID | mcm::PORT_GID | mcm::PKEY | mcm::JOIN_STATE,
            nm_b,
        ),
    );
    judge.agree(
        "(c) leave 239.1.1.7 FullMember",
        leave_request(g7, a.gid(), JoinState::FULL_MEMBER),
    );
    judge.agree(
        "(c) get 239.1.1.7 (only a NonMember left)",
        get_group_request(g7),
    );
    judge.agree_from(
        Sender::B,
        "(c) leave 239.1.1.7 NonMember",
        leave_request(g7, b.gid(), JoinState::NON_MEMBER),
    );

    // (d) PathRecord hostA -> hostB.
    let pr = path_record::Repr {
        sgid: a.gid(),
        dgid: b.gid(),
        ..path_record::Repr::default()
    };
    let (osm, _) = judge.agree(
        "(d) PathRecord Get hostA -> hostB, mask SGID|DGID",
        SaMad::request(
            Method::GET,
            0,
            prm::SGID | prm::DGID,
            Attribute::PathRecord(pr),
        )
        .to_bytes(),
    );
    assert!(status(&osm).is_ok());
    let path = match SaMad::parse(&osm).expect("an SA MAD").attribute {
        Attribute::PathRecord(p) => p,
        other => panic!("not a PathRecord: {other:?}"),
    };
    println!("    OpenSM path: {path:?}");
    assert_eq!(path.dlid, b.lid, "DLID is hostB's LID");
    assert_eq!(path.slid, a.lid, "SLID is hostA's LID");

    // (e) Bad requests: the same status from both.
    judge.agree(
        "(e) join broadcast without JoinState in the mask",
        mcmember_request(Method::SET, mcm::MGID | mcm::PORT_GID, join_bcast),
    );
    let mut wrong_qkey = join_bcast;
    wrong_qkey.qkey = QKey(0x1234);
    judge.agree(
        "(e) join broadcast with Q_Key 0x1234",
        mcmember_request(
            Method::SET,
            mcm::MGID | mcm::PORT_GID | mcm::JOIN_STATE | mcm::QKEY,
            wrong_qkey,
        ),
    );
    judge.agree(
        "(e) leave broadcast NonMember (holds FullMember only)",
        leave_request(bcast_mgid, a.gid(), JoinState::NON_MEMBER),
    );
    let g3 = ipv4_mcast_mgid([239, 1, 1, 3], PKey::DEFAULT, McastScope::LINK_LOCAL);
    judge.agree(
        "(e) create 239.1.1.3 as SendOnlyNonMember",
        create_request(&bcast, g3, a.gid(), JoinState::SEND_ONLY_NON_MEMBER),
    );
    let g4 = ipv4_mcast_mgid([239, 1, 1, 4], PKey::DEFAULT, McastScope::LINK_LOCAL);
    judge.agree(
        "(e) leave unknown group 239.1.1.4",
        leave_request(g4, a.gid(), JoinState::FULL_MEMBER),
    );
    // More of the same kind, cheap to ask.
    let g5 = ipv4_mcast_mgid([239, 1, 1, 5], PKey::DEFAULT, McastScope::LINK_LOCAL);
    judge.agree(
        "(e) create 239.1.1.5 with only MGID|PortGID|JoinState",
        mcmember_request(
            Method::SET,
            mcm::MGID | mcm::PORT_GID | mcm::JOIN_STATE,
            mcmember::Repr {
                mgid: g5,
                ..join_bcast
            },
        ),
    );
    judge.agree(
        "(e) join broadcast for an unknown PortGID",
        mcmember_request(
            Method::SET,
            mcm::MGID | mcm::PORT_GID | mcm::JOIN_STATE,
            mcmember::Repr {
                port_gid: Gid::new(a.gid_prefix, 0xdead_beef),
                ..join_bcast
            },
        ),
    );
    judge.agree(
        "(e) join broadcast asking MTU > 2048",
        mcmember_request(
            Method::SET,
            mcm::MGID | mcm::PORT_GID | mcm::JOIN_STATE | mcm::MTU_SELECTOR | mcm::MTU,
            mcmember::Repr {
                mtu_selector: Selector::GreaterThan,
                mtu: IbMtu::Mtu2048.code(),
                ..join_bcast
            },
        ),
    );
    judge.agree(
        "(e) join broadcast with P_Key 0x8001 (another partition)",
        mcmember_request(
            Method::SET,
            mcm::MGID | mcm::PORT_GID | mcm::JOIN_STATE | mcm::PKEY,
            mcmember::Repr {
                pkey: PKey(0x8001),
                ..join_bcast
            },
        ),
    );
    // Not an error: 0x7fff is the default partition's limited-membership P_Key.
    judge.agree(
        "join broadcast with P_Key 0x7fff (limited member of 0xffff)",
        mcmember_request(
            Method::SET,
            mcm::MGID | mcm::PORT_GID | mcm::JOIN_STATE | mcm::PKEY,
            mcmember::Repr {
                pkey: PKey(0x7fff),
                ..join_bcast
            },
        ),
    );
    let unknown = path_record::Repr {
        sgid: a.gid(),
        dgid: Gid::new(a.gid_prefix, 0xdead_beef),
        ..path_record::Repr::default()
    };
    judge.agree(
        "(e) PathRecord Get to an unknown DGID",
        SaMad::request(
            Method::GET,
            0,
            prm::SGID | prm::DGID,
            Attribute::PathRecord(unknown),
        )
        .to_bytes(),
    );

    // Clean up hostA's broadcast membership, on both.
    judge.agree(
        "leave broadcast FullMember",
        leave_request(bcast_mgid, a.gid(), JoinState::FULL_MEMBER),
    );

    println!("\n{:<86} {:>6} {:>6}", "request", "OpenSM", "ours");
    for (what, o, u) in &judge.table {
        println!("{what:<86} {o} {u}{}", if o == u { "" } else { "  DIFFER" });
    }
}

// ------------------------------------------------------------------ the real controller

/// How long a controller may take to bring its link up (OpenSM answers in milliseconds).
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any other controller step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// [`TOPOLOGY`] with hostA's and hostB's node GUIDs set (ibsim's `caguid=` sets the GUID
/// of the next node), so that their ports have the GIDs of the simulated ports.
fn topology_with_guids(host_a: u64, host_b: u64) -> String {
    format!(
        r#"Hca 1 "sm"
[1] "Switch1"[1]

Switch 8 "Switch1"
[1] "sm"[1]
[2] "hostA"[1]
[3] "hostB"[1]

caguid={host_a:#018x}
Hca 1 "hostA"
[1] "Switch1"[2]

caguid={host_b:#018x}
Hca 1 "hostB"
[1] "Switch1"[3]
"#
    )
}

/// One IPoIB interface run by the real controller on a [`HybridPort`]: its SA is
/// OpenSM, its packets travel on the simulated fabric. The test plays its data core.
struct CtlHost {
    ip: [u8; 4],
    port: Arc<HybridPort>,
    host: testkit::CtlHost,
}

impl Deref for CtlHost {
    type Target = testkit::CtlHost;

    fn deref(&self) -> &testkit::CtlHost {
        &self.host
    }
}

impl DerefMut for CtlHost {
    fn deref_mut(&mut self) -> &mut testkit::CtlHost {
        &mut self.host
    }
}

impl CtlHost {
    /// The interface `name` with address `ip` on `port`, whose data side is port 1 of
    /// the simulated node `dev`.
    fn new(
        name: &'static str,
        ip: [u8; 4],
        dev: &SimDevice,
        port: Arc<HybridPort>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        CtlHost::with_config(name, ip, dev, port, clock, CtrlConfig::default())
    }

    /// [`CtlHost::new`] with `cfg` (its address set to `ip`).
    fn with_config(
        name: &'static str,
        ip: [u8; 4],
        dev: &SimDevice,
        port: Arc<HybridPort>,
        clock: Arc<dyn Clock>,
        cfg: CtrlConfig,
    ) -> Self {
        let (qp, pool) = ctl_qp(name, &port);
        let cfg = CtrlConfig {
            ipv4: Some(ip),
            ..cfg
        };
        let host =
            testkit::CtlHost::on_port(name, dev.port_id(1), port.clone(), qp, cfg, pool, clock);
        CtlHost { ip, port, host }
    }

    /// Hands a request to the controller, as the data core does.
    fn request(&mut self, req: Request) {
        self.cores[0]
            .requests
            .send(req)
            .expect("the request ring has room");
    }

    /// Sends packet `seq` to a group through the data core's snapshot (it must be
    /// Joined there).
    fn send_mcast(&mut self, mgid: Gid, seq: u32) {
        let m = self.packet(seq);
        let h = &mut self.host;
        let sent = send_direct(&h.cores[0], &mut *h.tx, Direct::Group(&mgid), m)
            .unwrap_or_else(|_| panic!("{}: the group is in the snapshot", h.name));
        assert_eq!(sent, 1, "{}: multicast send", h.name);
    }

    fn describe(&self) -> String {
        format!(
            "{}: {:?}\n  stats {:?}\n  hybrid {:?}\n",
            self.name,
            self.ctl,
            self.ctl.stats(),
            self.port.counters()
        )
    }
}

/// An interface's QPs and pool on a hybrid port, in the default partition.
fn ctl_qp(name: &str, port: &Arc<HybridPort>) -> (testkit::data::IpoibQp, ibpoll_mem::Mempool) {
    let pool = testkit::pool(&format!("ctl-{name}"), 1024);
    let pkey_index = port
        .sim_port()
        .attr()
        .pkey_index(PKey::DEFAULT)
        .expect("the simulated port is in the default partition");
    (testkit::ipoib_qp(&**port, pkey_index, &pool, 256), pool)
}

/// Steps every host (with a 1 ms pause between rounds, in real time) until `done`
/// holds; returns how long it took. Panics with the hosts' state and the fabric's logs
/// after `timeout`.
fn drive(
    hosts: &mut [&mut CtlHost],
    fabric: &mut Fabric,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&[&mut CtlHost]) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut next_check = start;
    loop {
        for h in hosts.iter_mut() {
            h.step();
        }
        if done(hosts) {
            let took = start.elapsed();
            println!("{what}: {took:?}");
            return took;
        }
        let now = Instant::now();
        if now.duration_since(start) > timeout {
            let state: String = hosts.iter().map(|h| h.describe()).collect();
            panic!(
                "{what}: not reached within {timeout:?}\n{state}{}",
                fabric.logs()
            );
        }
        if now >= next_check {
            fabric.check_alive();
            next_check = now + Duration::from_millis(500);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// OpenSM's record of `port_gid`'s membership of `mgid` (MCMemberRecord Get, mask
/// MGID|PortGID, and JoinState when `js` is given: then only a membership with exactly
/// those JoinState bits matches), or its status when there is none. OpenSM answers a
/// request without an SM_Key (untrusted) with PortGID and JoinState zeroed (IBA p923),
/// so the JoinState is checked by matching, not read.
fn membership(
    osm: &mut OpenSm,
    fabric: &mut Fabric,
    mgid: Gid,
    port_gid: Gid,
    js: Option<JoinState>,
) -> Result<mcmember::Repr, Status> {
    let rec = mcmember::Repr {
        mgid,
        port_gid,
        join_state: js.unwrap_or(JoinState::NONE),
        ..mcmember::Repr::default()
    };
    let mask = match js {
        Some(_) => mcm::MGID | mcm::PORT_GID | mcm::JOIN_STATE,
        None => mcm::MGID | mcm::PORT_GID,
    };
    let m = osm.call(&mut mcmember_request(Method::GET, mask, rec), fabric);
    if status(&m).is_ok() {
        Ok(mcmember_of(&m))
    } else {
        Err(status(&m))
    }
}


/// The groups OpenSM lists `port_gid` as a member of (MCMemberRecord GetTable, mask
/// PortGID, sent from that port: `saquery -m` without an SM_Key shows the same, PortGID
/// and JoinState zeroed). One MAD holds at most three records (ibsim carries no RMPP),
/// which is all the tests need. Returns the MGIDs in OpenSM's order.
fn listed_groups(osm: &mut OpenSm, fabric: &mut Fabric, port_gid: Gid) -> Vec<Gid> {
    let rec = mcmember::Repr {
        port_gid,
        ..mcmember::Repr::default()
    };
    let m = osm.call(
        &mut mcmember_request(Method::GET_TABLE, mcm::PORT_GID, rec),
        fabric,
    );
    if status(&m) == Status::ERR_NO_RECORDS {
        return Vec::new();
    }
    assert!(status(&m).is_ok(), "GetTable: status {}", status(&m));
    let p = ibpoll_wire::sa::Packet::new_checked(&m[..]).expect("an SA MAD");
    let stride = usize::from(p.attribute_offset()) * 8;
    if stride == 0 {
        return Vec::new();
    }
    // The channel zeroes what the sender did not write: the records end at the first
    // one without a multicast MGID.
    let mut out = Vec::new();
    for rec in p.data().chunks_exact(stride) {
        let r = mcmember::Repr::parse(&mcmember::Packet::new_checked(rec).expect("a record"))
            .expect("a record");
        if !r.mgid.is_multicast() {
            break;
        }
        out.push(r.mgid);
    }
    out
}
