//! [`WrappedDevice`]: a device whose ports come wrapped, so that a program opening
//! ports by number (the stack's builder) gets test devices without knowing.

use std::sync::Arc;

use ibpoll_dev::{Device, Error, Port};

/// The wrapping applied to each opened port.
type Wrap = dyn Fn(Arc<dyn Port>) -> Result<Arc<dyn Port>, Error> + Send + Sync;

/// A [`Device`] that opens its inner device's ports and wraps each.
pub struct WrappedDevice {
    inner: Arc<dyn Device>,
    wrap: Box<Wrap>,
}

impl std::fmt::Debug for WrappedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedDevice")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl WrappedDevice {
    /// A device whose ports are `wrap(inner port)`.
    ///
    /// ```ignore
    /// let dev = WrappedDevice::new(sim_device, |p| {
    ///     Ok(Backpressure::new(p, BackpressureConfig::new(seed)) as Arc<dyn Port>)
    /// });
    /// ```
    pub fn new(
        inner: Arc<dyn Device>,
        wrap: impl Fn(Arc<dyn Port>) -> Result<Arc<dyn Port>, Error> + Send + Sync + 'static,
    ) -> Arc<WrappedDevice> {
        Arc::new(WrappedDevice {
            inner,
            wrap: Box::new(wrap),
        })
    }
}

impl Device for WrappedDevice {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn node_guid(&self) -> u64 {
        self.inner.node_guid()
    }

    fn port_count(&self) -> u8 {
        self.inner.port_count()
    }

    fn open_port(&self, port_num: u8) -> Result<Arc<dyn Port>, Error> {
        (self.wrap)(self.inner.open_port(port_num)?)
    }
}
