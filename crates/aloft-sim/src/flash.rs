//! The virtual devices' flash: aloft-device's NOR simulator behind a switch
//! that cuts the power at a chosen moment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aloft_device::sim::{Fault, FaultMode, SimError, SimFlash};
use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};

/// Write granularity of the simulated flash.
pub const WRITE_SIZE: usize = 4;
/// Sector size of the simulated flash.
pub const SECTOR: usize = 4096;

/// The simulator's NOR part.
pub type Nor = SimFlash<WRITE_SIZE, SECTOR>;

/// Shared trigger: once set, the next erase or program is torn and the
/// power is gone until [`CutFlash::restore`].
#[derive(Debug, Default)]
pub struct PowerSwitch(AtomicBool);

impl PowerSwitch {
    /// Cuts the power at the next flash operation.
    pub fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A [`Nor`] whose power a [`PowerSwitch`] can cut mid-operation (a torn
/// write, as on a real part losing power while programming).
#[derive(Debug)]
pub struct CutFlash {
    inner: Nor,
    switch: Arc<PowerSwitch>,
}

impl CutFlash {
    /// Wraps `inner`.
    pub fn new(inner: Nor, switch: Arc<PowerSwitch>) -> Self {
        Self { inner, switch }
    }

    /// Power comes back.
    pub fn restore(&mut self) {
        self.inner.power_cycle();
        self.inner.disarm();
    }

    /// Whether the power is on.
    pub fn is_powered(&self) -> bool {
        self.inner.is_powered()
    }

    fn maybe_cut(&mut self) {
        if self.switch.0.swap(false, Ordering::SeqCst) {
            let at = self.inner.ops();
            self.inner.arm(Fault {
                mode: FaultMode::TornWrite,
                at,
            });
        }
    }
}

impl ErrorType for CutFlash {
    type Error = SimError;
}

impl ReadNorFlash for CutFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        self.inner.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl NorFlash for CutFlash {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        self.maybe_cut();
        self.inner.erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        self.maybe_cut();
        self.inner.write(offset, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_tears_the_next_operation_and_restore_brings_power_back() {
        let switch = Arc::new(PowerSwitch::default());
        let mut f = CutFlash::new(Nor::uniform(2), switch.clone());
        f.write(0, &[0; 8]).unwrap();
        switch.cut();
        assert!(f.write(8, &[0; 64]).is_err());
        assert!(!f.is_powered());
        assert!(f.write(128, &[0; 4]).is_err(), "no power until restored");
        f.restore();
        f.write(128, &[0; 4]).unwrap();
        let mut b = [0u8; 4];
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [0; 4], "earlier data survives");
    }
}
