//! The hugepage fallback is logged once per process, as a warning. Its own binary (one
//! test) because the once-per-process flag is global.

use std::io::Write;
use std::sync::{Arc, Mutex};

use ibpoll_mem::{HugepagePolicy, Mempool, MempoolConfig};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn fallback_warned_once() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let pools: Vec<Mempool> = tracing::subscriber::with_default(subscriber, || {
        (0..3)
            .map(|i| {
                Mempool::new(MempoolConfig {
                    cache_size: 0,
                    hugepages: HugepagePolicy::Prefer,
                    ..MempoolConfig::new(format!("log{i}"), 16)
                })
                .unwrap()
            })
            .collect()
    });
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let warnings = log.matches("falling back to normal pages").count();
    let fell_back = pools.iter().filter(|p| !p.region().hugepages).count();
    if fell_back == 0 {
        assert_eq!(warnings, 0, "{log}");
    } else {
        assert_eq!(warnings, 1, "{log}");
        assert!(
            log.contains("WARN") && log.contains("nr_hugepages"),
            "{log}"
        );
    }
}
