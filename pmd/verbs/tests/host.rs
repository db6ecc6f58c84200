//! What a machine without RDMA sees: the typed errors and their one-line fixes. Also
//! checks the committed bindings against rdma-core's headers.
//!
//! On a machine with a real device these tests check the other side of the same
//! question: with `IBPOLL_RXE=1` (set by scripts/vm-test.sh inside its VM) a device must
//! open.

use std::path::Path;
use std::process::Command;

use ibpoll_pmd_verbs::{Context, Error, Library, NoDevice, UmadLibrary};

fn rxe_expected() -> bool {
    std::env::var_os("IBPOLL_RXE").is_some_and(|v| v == "1")
}

#[test]
fn a_missing_library_names_the_package() {
    let e = Library::load_from("libibverbs-not-here.so.1").unwrap_err();
    assert!(matches!(e, Error::LibraryMissing { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.contains("libibverbs-not-here.so.1"), "{msg}");
    assert!(
        msg.contains("apt install ibverbs-providers rdma-core"),
        "{msg}"
    );
    let e = UmadLibrary::load_from("libibumad-not-here.so.3").unwrap_err();
    assert!(e.to_string().contains("libibumad3"), "{e}");
}

/// Opening "any verbs device" here: without rdma-core the library is missing; with it
/// but without a device (this machine, CI) the error says which of ib_uverbs or a
/// provider to check. A real device (the VM) must open.
#[test]
fn opening_a_device_where_none_can_work_says_why() {
    let lib = match Library::load() {
        Ok(lib) => lib,
        Err(e) => {
            assert!(!rxe_expected(), "IBPOLL_RXE=1 but {e}");
            assert!(matches!(e, Error::LibraryMissing { .. }), "{e:?}");
            assert!(e.to_string().contains("apt install"), "{e}");
            println!("as expected here: {e}");
            return;
        }
    };
    match Context::open(&lib, None) {
        Ok(ctx) => {
            println!("a device is present: {ctx:?}");
            assert!(Path::new("/sys/class/infiniband_verbs").exists());
        }
        Err(e) => {
            assert!(!rxe_expected(), "IBPOLL_RXE=1 but {e}");
            let uverbs = Path::new("/sys/class/infiniband_verbs").exists();
            let want = if uverbs {
                NoDevice::NoneFound
            } else {
                NoDevice::NoUverbs
            };
            assert!(matches!(&e, Error::NoDevice(w) if *w == want), "{e:?}");
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            let fix = if uverbs {
                "ibverbs-providers"
            } else {
                "modprobe ib_uverbs"
            };
            assert!(msg.contains(fix), "{msg}");
            println!("as expected here: {msg}");
        }
    }
}

#[test]
fn asking_for_an_unknown_device_lists_the_ones_there() {
    let Ok(lib) = Library::load() else { return };
    match Context::open(&lib, Some("no-such-hca")) {
        Err(Error::NoSuchDevice { name, available }) => {
            assert_eq!(name, "no-such-hca");
            assert!(rxe_expected() || !available.is_empty());
        }
        Err(Error::NoDevice(_)) => assert!(!rxe_expected()),
        other => panic!("{other:?}"),
    }
}

/// Regenerates the bindings with bindgen/gen.sh and compares them with the committed
/// ones. Skipped (with the reason) only when rdma-core's headers are absent; with the
/// headers but without bindgen it fails: CI installs both.
#[test]
fn bindings_match_headers() {
    let headers = [
        "/usr/include/infiniband/verbs.h",
        "/usr/include/infiniband/umad.h",
    ];
    if let Some(h) = headers.iter().find(|h| !Path::new(h).exists()) {
        eprintln!("SKIPPED bindings_match_headers: {h} is absent (apt install libibverbs-dev libibumad-dev)");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("ibpoll-bindgen-{}", std::process::id()));
    let run = Command::new(dir.join("bindgen/gen.sh"))
        .arg(&out)
        .output()
        .expect("run bindgen/gen.sh");
    assert!(
        run.status.success(),
        "bindgen/gen.sh failed (is bindgen installed? apt install bindgen):\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for f in ["verbs.rs", "umad.rs"] {
        let committed =
            std::fs::read_to_string(dir.join("src/sys").join(f)).expect("committed bindings");
        let fresh = std::fs::read_to_string(out.join(f)).expect("regenerated bindings");
        assert!(
            committed == fresh,
            "src/sys/{f} differs from what bindgen/gen.sh generates from the installed headers \
             (diff {} {}); regenerate with pmd/verbs/bindgen/gen.sh",
            dir.join("src/sys").join(f).display(),
            out.join(f).display()
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// The driver asked for a verbs device where none can work (this machine, CI): a typed
/// set-up error, one line with its fix, from `VerbsDevice::open` and `open_first`; with
/// `IBPOLL_RXE=1` (the VM) rxe0 opens as an `ibpoll_dev::Device`.
#[test]
fn asking_the_driver_for_a_device_here_is_a_typed_error() {
    use ibpoll_dev::Device;
    use ibpoll_pmd_verbs::VerbsDevice;
    if rxe_expected() {
        let dev = VerbsDevice::open("rxe0").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dev.name(), "rxe0");
        assert!(dev.port_count() >= 1);
        return;
    }
    for opened in [VerbsDevice::open("mlx5_0"), VerbsDevice::open_first()] {
        let e = match opened {
            Ok(dev) => {
                println!("this machine has an RDMA device: {dev:?}");
                return;
            }
            Err(e) => e,
        };
        assert!(e.is_setup(), "a set-up diagnostic: {e:?}");
        assert!(
            matches!(
                e,
                Error::NoDevice(_) | Error::LibraryMissing { .. } | Error::NoSuchDevice { .. }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        let fixes = ["modprobe ib_uverbs", "ibverbs-providers", "ibv_devices"];
        assert!(fixes.iter().any(|f| msg.contains(f)), "{msg}");
        println!("as expected here: {msg}");
    }
}
