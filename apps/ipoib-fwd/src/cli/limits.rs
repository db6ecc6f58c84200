//! The values both programs accept, and the words they refuse the others with:
//! `PROG: error: --flag: what is wrong: what to give` and exit status 2.

use std::time::Duration;

/// The longest run, seconds (`--duration`).
pub const DURATION_MAX_S: f64 = 86_400.0;
/// The highest `--rate`, packets per second: far above what the embedded fabric
/// carries, so that any number below it means a rate and not "as fast as it goes".
pub const RATE_MAX_PPS: f64 = 1e9;
/// The most UDP flows (distinct source ports) a generator spreads its traffic over.
pub const FLOWS_MAX: usize = 400;
/// The most IPv4 multicast groups pktgen sends to (239.1.0.1 to 239.1.0.250).
pub const MCAST_GROUPS_MAX: usize = 250;
/// The longest sleep of an idle lcore per idle iteration (`--idle-sleep-us`): longer
/// sleeps would let a run overshoot its end by as much, per lcore and per packet.
pub const IDLE_SLEEP_US_MAX: u64 = 10_000;
/// The default bound of a capture (`--pcap-max-bytes`): 1 GiB.
pub const PCAP_MAX_BYTES_DEFAULT: u64 = 1 << 30;

/// A flag's value was refused (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {msg}")]
pub struct BadFlag {
    /// The flag, e.g. `--duration`.
    pub flag: &'static str,
    /// What is wrong and what to give instead.
    pub msg: String,
}

/// A refusal of `flag`.
pub fn bad(flag: &'static str, msg: impl Into<String>) -> BadFlag {
    BadFlag {
        flag,
        msg: msg.into(),
    }
}

/// `--duration SECS`: above 0, at most [`DURATION_MAX_S`].
pub fn duration(flag: &'static str, secs: f64) -> Result<Duration, BadFlag> {
    if !secs.is_finite() || secs <= 0.0 || secs > DURATION_MAX_S {
        return Err(bad(
            flag,
            format!("{secs} is not a duration: give seconds above 0 (at most {DURATION_MAX_S})"),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `--rate PPS|max`: packets per second, 1 to [`RATE_MAX_PPS`] (fractions and
/// exponents allowed, e.g. 2.5e5), or `max`; `None` means max.
pub fn rate(flag: &'static str, text: &str) -> Result<Option<f64>, BadFlag> {
    let t = text.trim();
    if t == "max" {
        return Ok(None);
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && (1.0..=RATE_MAX_PPS).contains(&v) => Ok(Some(v)),
        Ok(v) if v.is_finite() && v > RATE_MAX_PPS => Err(bad(
            flag,
            format!("{t} packets per second is more than {RATE_MAX_PPS:e}: give at most that, or \"max\""),
        )),
        Ok(_) => Err(bad(
            flag,
            format!("{t} packets per second sends nothing: give at least 1, or \"max\""),
        )),
        Err(_) => Err(bad(
            flag,
            format!("{t:?} is neither a number of packets per second nor \"max\""),
        )),
    }
}

/// `--flows N`: `min` to [`FLOWS_MAX`].
pub fn flows(flag: &'static str, n: usize, min: usize) -> Result<usize, BadFlag> {
    if n < min || n > FLOWS_MAX {
        return Err(bad(
            flag,
            format!("{n} is out of range: give {min} to {FLOWS_MAX}"),
        ));
    }
    Ok(n)
}

/// `--cores N`: 1 to the CPUs this process may run on.
pub fn cores(flag: &'static str, n: usize, usable: usize) -> Result<usize, BadFlag> {
    if n == 0 {
        return Err(bad(flag, "0 CPUs cannot run anything: give at least 1"));
    }
    if n > usable {
        return Err(bad(
            flag,
            format!(
                "{n} asked for but this process may run on {usable} CPUs: give at most {usable}"
            ),
        ));
    }
    Ok(n)
}

/// `--idle-sleep-us US`: 1 to [`IDLE_SLEEP_US_MAX`].
pub fn idle_sleep_us(flag: &'static str, us: i64) -> Result<Duration, BadFlag> {
    match u64::try_from(us) {
        Ok(us @ 1..=IDLE_SLEEP_US_MAX) => Ok(Duration::from_micros(us)),
        _ => Err(bad(
            flag,
            format!("{us} is out of range: give 1 to {IDLE_SLEEP_US_MAX} microseconds"),
        )),
    }
}

/// `--pcap-max-bytes N`: at least one frame's room (4096), at most 2^50.
pub fn pcap_max_bytes(flag: &'static str, n: u64) -> Result<u64, BadFlag> {
    if !(4096..=1 << 50).contains(&n) {
        return Err(bad(
            flag,
            format!("{n} is out of range: give 4096 to {} bytes", 1u64 << 50),
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_names_its_flag_and_the_range() {
        assert!(duration("--duration", 0.5).is_ok());
        for bad_s in [
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            86_400.5,
        ] {
            let e = duration("--duration", bad_s).unwrap_err();
            assert_eq!(e.flag, "--duration");
            assert!(e.to_string().contains("86400"), "{e}");
        }
        assert_eq!(rate("--rate", "max"), Ok(None));
        assert_eq!(rate("--rate", " 2.5e5 "), Ok(Some(250_000.0)));
        assert_eq!(rate("--rate", "1e9"), Ok(Some(1e9)));
        for (t, says) in [
            ("0", "sends nothing"),
            ("-inf", "sends nothing"),
            ("1e12", "more than"),
            ("fast", "neither"),
            ("MAX", "neither"),
        ] {
            let e = rate("--rate", t).unwrap_err().to_string();
            assert!(e.starts_with("--rate: ") && e.contains(says), "{t}: {e}");
        }
        assert!(flows("--flows", 0, 0).is_ok() && flows("--flows", 0, 1).is_err());
        assert!(flows("--flows", 401, 0)
            .unwrap_err()
            .to_string()
            .contains("0 to 400"));
        assert!(cores("--cores", 3, 2).is_err() && cores("--cores", 0, 2).is_err());
        assert_eq!(
            idle_sleep_us("--idle-sleep-us", 10_000),
            Ok(Duration::from_millis(10))
        );
        for us in [0, -1, 10_001, 1_000_000] {
            assert!(idle_sleep_us("--idle-sleep-us", us).is_err(), "{us}");
        }
        assert!(pcap_max_bytes("--pcap-max-bytes", 100).is_err());
    }
}
