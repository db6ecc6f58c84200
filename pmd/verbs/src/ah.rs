//! A port's address handles: `ibv_ah`s behind the contract's copyable
//! [`AddressHandle`] values, found by the send path without a lock.
//!
//! A handle's raw value is `generation << 16 | slot`. The slot holds the `ibv_ah`
//! pointer (null when free) and the raw value it was given out as, so a handle destroyed
//! once is refused the second time ([`DevError::NoSuchAh`]) even when its slot was
//! reused, and a send naming a stale handle finds nothing (it is dropped and counted)
//! instead of reaching the slot's new owner.

use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ibpoll_dev::{AddressHandle, AhAttr, Error as DevError, LinkLayer};
use ibpoll_wire::Lid;

use crate::ffi::{self, Ah, Pd};
use crate::sys::verbs::ibv_ah;

/// Address handles one port can have at once.
pub const AH_MAX: usize = 1 << 16;

/// A raw value no handle has (generation 0xFFFF of slot 0xFFFF is never given out).
const NONE: u32 = u32::MAX;

struct Alloc {
    /// The owning handles, by slot.
    ahs: Vec<Option<Ah>>,
    /// The generation each slot gives out next.
    gens: Vec<u16>,
    free: Vec<u32>,
}

/// The address handles of one port.
pub(crate) struct AhTable {
    /// By slot: the live `ibv_ah`, or null.
    ptrs: Box<[AtomicPtr<ibv_ah>]>,
    /// By slot: the raw value of the handle that lives there, or [`NONE`].
    raws: Box<[AtomicU32]>,
    alloc: Mutex<Alloc>,
}

impl std::fmt::Debug for AhTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = self.alloc.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("AhTable")
            .field("live", &a.ahs.iter().filter(|x| x.is_some()).count())
            .finish()
    }
}

impl AhTable {
    pub(crate) fn new() -> AhTable {
        AhTable {
            ptrs: (0..AH_MAX)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            raws: (0..AH_MAX).map(|_| AtomicU32::new(NONE)).collect(),
            alloc: Mutex::new(Alloc {
                ahs: Vec::new(),
                gens: Vec::new(),
                free: Vec::new(),
            }),
        }
    }

    /// Creates an address handle on port `port_num`.
    pub(crate) fn create(
        &self,
        pd: &Arc<Pd>,
        port_num: u8,
        link: LinkLayer,
        attr: &AhAttr,
    ) -> Result<AddressHandle, DevError> {
        check(link, attr)?;
        let fattr = ffi::AhAttr {
            dlid: attr.dlid.0,
            sl: attr.sl,
            src_path_bits: attr.src_path_bits,
            static_rate: attr.static_rate.0,
            port_num,
            grh: attr.grh.map(|g| ffi::GrhAttr {
                dgid: g.dgid.0,
                sgid_index: g.sgid_index,
                flow_label: g.flow_label,
                hop_limit: g.hop_limit,
                traffic_class: g.traffic_class,
            }),
        };
        let mut a = self.alloc.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = match a.free.pop() {
            Some(s) => s as usize,
            None if a.ahs.len() < AH_MAX => {
                a.ahs.push(None);
                a.gens.push(0);
                a.ahs.len() - 1
            }
            None => {
                return Err(DevError::Exhausted {
                    what: "address handles on this port",
                    limit: AH_MAX,
                })
            }
        };
        let ah = match Ah::new(pd, &fattr) {
            Ok(ah) => ah,
            Err(e) => {
                a.free.push(slot as u32);
                return Err(DevError::Driver {
                    op: "create_ah",
                    source: Box::new(e),
                });
            }
        };
        let mut gen = a.gens[slot];
        if gen == u16::MAX && slot == usize::from(u16::MAX) {
            gen = 0;
        }
        a.gens[slot] = gen.wrapping_add(1);
        let raw = (u32::from(gen) << 16) | slot as u32;
        // Release: pairs with the Acquire loads in `get`; the handle's value reaches a
        // sending lcore through the snapshot that names it, after this store.
        self.raws[slot].store(raw, Ordering::Release);
        self.ptrs[slot].store(ah.as_ptr(), Ordering::Release);
        a.ahs[slot] = Some(ah);
        Ok(AddressHandle::from_raw(raw))
    }

    /// Destroys a handle; [`DevError::NoSuchAh`] when it is not live.
    ///
    /// # Safety
    /// No send naming `ah` is posted and not completed, and none is posted after.
    pub(crate) unsafe fn destroy(&self, ah: AddressHandle) -> Result<(), DevError> {
        let slot = (ah.raw() & 0xFFFF) as usize;
        let mut a = self.alloc.lock().unwrap_or_else(PoisonError::into_inner);
        let live = a.ahs.get(slot).is_some_and(Option::is_some)
            && self.raws[slot].load(Ordering::Relaxed) == ah.raw();
        if !live {
            return Err(DevError::NoSuchAh(ah.raw()));
        }
        self.raws[slot].store(NONE, Ordering::Relaxed);
        self.ptrs[slot].store(std::ptr::null_mut(), Ordering::Relaxed);
        // Dropping it destroys the ibv_ah: the caller guarantees no send names it.
        a.ahs[slot] = None;
        a.free.push(slot as u32);
        Ok(())
    }

    /// The `ibv_ah` of a live handle, null for any other value.
    #[inline]
    pub(crate) fn get(&self, ah: AddressHandle) -> *mut ibv_ah {
        let slot = (ah.raw() & 0xFFFF) as usize;
        // Acquire: pairs with the Release stores in `create`.
        if self.raws[slot].load(Ordering::Acquire) != ah.raw() {
            return std::ptr::null_mut();
        }
        self.ptrs[slot].load(Ordering::Acquire)
    }
}

/// What the link layer requires of an address handle.
fn check(link: LinkLayer, attr: &AhAttr) -> Result<(), DevError> {
    let bad = |reason| {
        Err(DevError::AhAttr {
            dlid: attr.dlid,
            reason,
        })
    };
    match link {
        LinkLayer::Ethernet if attr.grh.is_none() => {
            bad("RoCE addresses by GID: give global routing (a GRH with the destination GID)")
        }
        LinkLayer::Ethernet => Ok(()),
        _ if attr.dlid == Lid(0) => bad("LID 0 is reserved"),
        _ if attr.dlid.is_multicast() && attr.grh.is_none() => {
            bad("a multicast address handle needs global routing (a GRH with the MGID)")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibpoll_dev::GrhAttr;
    use ibpoll_wire::{Gid, Rate};

    fn attr(dlid: u16, grh: bool) -> AhAttr {
        AhAttr {
            dlid: Lid(dlid),
            sl: 0,
            src_path_bits: 0,
            static_rate: Rate::GBPS_10,
            grh: grh.then_some(GrhAttr {
                dgid: Gid::default(),
                flow_label: 0,
                sgid_index: 0,
                hop_limit: 64,
                traffic_class: 0,
            }),
        }
    }

    #[test]
    fn each_link_layer_refuses_what_it_cannot_address() {
        assert!(check(LinkLayer::InfiniBand, &attr(0, true)).is_err());
        assert!(check(LinkLayer::InfiniBand, &attr(0xC001, false)).is_err());
        assert!(check(LinkLayer::InfiniBand, &attr(0xC001, true)).is_ok());
        assert!(check(LinkLayer::InfiniBand, &attr(5, false)).is_ok());
        assert!(check(LinkLayer::Ethernet, &attr(0, false)).is_err());
        assert!(check(LinkLayer::Ethernet, &attr(0, true)).is_ok());
    }

    #[test]
    fn unknown_values_find_nothing_and_are_refused() {
        let t = AhTable::new();
        for raw in [0, 1, 0x0001_0000, NONE] {
            assert!(t.get(AddressHandle::from_raw(raw)).is_null());
            // SAFETY: no handle exists, so no send names one.
            let r = unsafe { t.destroy(AddressHandle::from_raw(raw)) };
            assert!(matches!(r, Err(DevError::NoSuchAh(x)) if x == raw));
        }
    }
}
