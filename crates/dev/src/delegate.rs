//! [`delegate_port!`](crate::delegate_port): the [`Port`](crate::Port) methods a wrapper
//! does not change, forwarded to the port it wraps, by group.

/// Forwards groups of [`Port`](crate::Port) methods to `self.$inner` (an
/// `Arc<dyn Port>` or any `Port`), inside an `impl Port for Wrapper` block, so that a
/// test or tap device writes only what it changes (smoltcp's `phy` wrappers).
///
/// Groups: `info` (`port_num`, `attr`, `ud_caps`), `events` (`poll_event`), `qp`
/// (`create_ud_qp`, `set_qp_qkey`, `move_qp_pkey_index`), `ah` (`create_ah`,
/// `destroy_ah`), `mcast` (`attach_mcast`, `detach_mcast`), `mad`
/// (`open_mad_channel`).
///
/// ```
/// use std::sync::Arc;
/// use ibpoll_dev::{Port, PortEvent};
///
/// /// A port that hides every event.
/// #[derive(Debug)]
/// struct Quiet(Arc<dyn Port>);
///
/// impl Port for Quiet {
///     ibpoll_dev::delegate_port!(0: info, qp, ah, mcast, mad);
///     fn poll_event(&self) -> Option<PortEvent> {
///         None
///     }
/// }
/// ```
#[macro_export]
macro_rules! delegate_port {
    ($inner:tt: info) => {
        fn port_num(&self) -> u8 {
            self.$inner.port_num()
        }
        fn attr(&self) -> $crate::PortAttr {
            self.$inner.attr()
        }
        fn ud_caps(&self) -> $crate::UdCaps {
            self.$inner.ud_caps()
        }
    };
    ($inner:tt: events) => {
        fn poll_event(&self) -> Option<$crate::PortEvent> {
            self.$inner.poll_event()
        }
    };
    ($inner:tt: qp) => {
        fn create_ud_qp(
            &self,
            cfg: &$crate::UdQpConfig,
        ) -> Result<$crate::UdQp, $crate::Error> {
            self.$inner.create_ud_qp(cfg)
        }
        fn set_qp_qkey(
            &self,
            qpn: $crate::__wire::Qpn,
            qkey: $crate::__wire::QKey,
        ) -> Result<(), $crate::Error> {
            self.$inner.set_qp_qkey(qpn, qkey)
        }
        fn move_qp_pkey_index(
            &self,
            parked: &$crate::Parked,
            pkey_index: u16,
        ) -> Result<usize, $crate::Error> {
            self.$inner.move_qp_pkey_index(parked, pkey_index)
        }
    };
    ($inner:tt: ah) => {
        fn create_ah(
            &self,
            attr: &$crate::AhAttr,
        ) -> Result<$crate::AddressHandle, $crate::Error> {
            self.$inner.create_ah(attr)
        }
        unsafe fn destroy_ah(&self, ah: $crate::AddressHandle) -> Result<(), $crate::Error> {
            // SAFETY: the caller's guarantee (no posted or future send names `ah`) is
            // the wrapped port's precondition too.
            unsafe { self.$inner.destroy_ah(ah) }
        }
    };
    ($inner:tt: mcast) => {
        fn attach_mcast(
            &self,
            qpn: $crate::__wire::Qpn,
            mgid: &$crate::__wire::Gid,
            mlid: $crate::__wire::Lid,
        ) -> Result<(), $crate::Error> {
            self.$inner.attach_mcast(qpn, mgid, mlid)
        }
        fn detach_mcast(
            &self,
            qpn: $crate::__wire::Qpn,
            mgid: &$crate::__wire::Gid,
            mlid: $crate::__wire::Lid,
        ) -> Result<(), $crate::Error> {
            self.$inner.detach_mcast(qpn, mgid, mlid)
        }
    };
    ($inner:tt: mad) => {
        fn open_mad_channel(&self) -> Result<Box<dyn $crate::MadChannel>, $crate::Error> {
            self.$inner.open_mad_channel()
        }
    };
    ($inner:tt: $($group:ident),+) => {
        $( $crate::delegate_port!($inner: $group); )+
    };
}
