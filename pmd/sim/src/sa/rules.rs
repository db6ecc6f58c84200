//! Port rules that joins and paths share: partition membership (OpenSM's
//! `osm_physp_*` P_Key helpers) and the order of IBA rates.

use ibpoll_wire::{PKey, Rate};

/// OpenSM `osm_physp_has_pkey`: the table holds a P_Key of the same partition.
pub(super) fn has_pkey(table: &[PKey], pkey: PKey) -> bool {
    pkey.base() != 0 && table.iter().any(|p| p.base() == pkey.base())
}

/// OpenSM `osm_physp_share_pkey`: some P_Key lets the two ports talk.
pub(super) fn share_pkey(a: &[PKey], b: &[PKey]) -> bool {
    a.iter().any(|x| b.iter().any(|y| x.matches(*y)))
}

/// OpenSM `osm_physp_share_this_pkey`.
pub(super) fn share_this_pkey(a: &[PKey], b: &[PKey], pkey: PKey) -> bool {
    let find = |t: &[PKey]| {
        t.iter()
            .copied()
            .find(|p| p.base() == pkey.base() && pkey.base() != 0)
    };
    match (find(a), find(b)) {
        (Some(x), Some(y)) => x.is_full_member() || y.is_full_member(),
        _ => false,
    }
}

/// OpenSM `osm_physp_find_common_pkey`: the first (lowest partition number) P_Key of
/// `a` that lets it talk to `b`, as `a` holds it.
pub(super) fn common_pkey(a: &[PKey], b: &[PKey]) -> Option<PKey> {
    let mut sorted: Vec<PKey> = a.iter().copied().filter(|p| p.base() != 0).collect();
    sorted.sort_by_key(|p| p.base());
    sorted.into_iter().find(|x| b.iter().any(|y| x.matches(*y)))
}

/// The next slower IBA rate (OpenSM `ib_path_rate_get_prev`).
pub(super) fn rate_prev(r: Rate) -> Option<Rate> {
    let speed = r.mbps()?;
    (0u8..64)
        .map(Rate)
        .filter(|c| c.mbps().is_some_and(|s| s < speed))
        .max_by_key(|c| c.mbps())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_rules() {
        let full = PKey(0xFFFF);
        let limited = PKey(0x7FFF);
        // Membership is by partition number; P_Key 0 (base 0) is never held.
        assert!(has_pkey(&[limited], full));
        assert!(!has_pkey(&[PKey(0x8001)], full));
        assert!(!has_pkey(&[PKey(0x8000)], PKey(0x8000)));
        // Two limited members of a partition cannot talk; a full one can talk to both.
        assert!(!share_pkey(&[limited], &[limited]));
        assert!(share_pkey(&[limited], &[full]));
        assert!(!share_this_pkey(&[limited], &[limited], full));
        assert!(share_this_pkey(&[full], &[limited], limited));
        assert!(!share_this_pkey(&[full], &[full], PKey(0x8001)));
        // The common P_Key is the lowest partition number, as the first port holds it.
        let a = [PKey(0xFFFF), PKey(0x8002), PKey(0x0001)];
        let b = [PKey(0xFFFF), PKey(0x8001)];
        assert_eq!(common_pkey(&a, &b), Some(PKey(0x0001)));
        assert_eq!(common_pkey(&a[..2], &b), Some(PKey(0xFFFF)));
        assert_eq!(common_pkey(&[PKey(0x8002)], &b), None);
    }

    #[test]
    fn rate_prev_is_the_next_slower_defined_rate() {
        assert_eq!(rate_prev(Rate::GBPS_10), Some(Rate::GBPS_5));
        assert_eq!(rate_prev(Rate::GBPS_40), Some(Rate::GBPS_30));
        assert_eq!(rate_prev(Rate::GBPS_30), Some(Rate(19))); // 28 Gb/s
        assert_eq!(rate_prev(Rate::GBPS_2_5), None);
        assert_eq!(rate_prev(Rate(0)), None);
    }
}
