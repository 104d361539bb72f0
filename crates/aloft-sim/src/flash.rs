//! The virtual devices' flash: a NOR flash with the rules of aloft-device's
//! simulator (`SimFlash`: erase to `0xFF` by whole sectors, program only
//! erased bytes, aligned to the write size, bounds checked), but stored
//! copy-on-write per sector so that a fleet shares what its devices have in
//! common: every device is a clone of one provisioned template, and only
//! the sectors a device writes become its own. An idle device costs its
//! state sectors; erased sectors are one shared buffer. A [`PowerSwitch`]
//! tears the next program operation, as a power cut does, and the flash
//! stays dead until [`CowFlash::restore`].
//!
//! A differential test runs random operation sequences on this flash and on
//! `SimFlash` and requires the same results and the same bytes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use aloft_device::sim::SimError;
use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};

/// Write granularity of the simulated flash.
pub const WRITE_SIZE: usize = 4;
/// Sector size of the simulated flash.
pub const SECTOR: usize = 4096;

static ERASED: LazyLock<Arc<Vec<u8>>> = LazyLock::new(|| Arc::new(vec![0xFF; SECTOR]));

/// Shared trigger: once set, the next erase or program is cut (a program
/// is torn: a prefix of its words lands, one of them partly).
#[derive(Debug, Default)]
pub struct PowerSwitch(AtomicBool);

impl PowerSwitch {
    /// Cuts the power at the next flash operation.
    pub fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A copy-on-write NOR flash of whole [`SECTOR`]s; see the module docs.
#[derive(Clone, Debug)]
pub struct CowFlash {
    sectors: Vec<Arc<Vec<u8>>>,
    powered: bool,
    switch: Arc<PowerSwitch>,
}

impl CowFlash {
    /// `sectors` erased sectors.
    pub fn new(sectors: usize) -> Self {
        Self {
            sectors: vec![ERASED.clone(); sectors],
            powered: true,
            switch: Arc::default(),
        }
    }

    /// A copy sharing every sector with `self`, cut by `switch`.
    pub fn share(&self, switch: Arc<PowerSwitch>) -> Self {
        Self {
            sectors: self.sectors.clone(),
            powered: true,
            switch,
        }
    }

    /// Power comes back.
    pub fn restore(&mut self) {
        self.powered = true;
    }

    /// Whether the power is on.
    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// Bytes held by this flash alone (sectors shared with no other copy
    /// and not erased): its memory cost in a fleet.
    pub fn private_bytes(&self) -> usize {
        self.sectors
            .iter()
            .filter(|s| Arc::strong_count(s) == 1 && !Arc::ptr_eq(s, &ERASED))
            .count()
            * SECTOR
    }

    fn check(&self, offset: u32, len: usize) -> Result<(usize, usize), SimError> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        let start = offset as usize;
        let end = start.checked_add(len).ok_or(SimError::OutOfBounds)?;
        if end > self.sectors.len() * SECTOR {
            return Err(SimError::OutOfBounds);
        }
        Ok((start, end))
    }

    fn byte(&self, at: usize) -> u8 {
        self.sectors[at / SECTOR][at % SECTOR]
    }

    fn program(&mut self, start: usize, bytes: &[u8]) {
        let mut at = start;
        for chunk in bytes.chunks(SECTOR) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let (s, o) = (at / SECTOR, at % SECTOR);
                let n = rest.len().min(SECTOR - o);
                let sector = Arc::make_mut(&mut self.sectors[s]);
                for (dst, src) in sector[o..o + n].iter_mut().zip(&rest[..n]) {
                    *dst &= *src;
                }
                at += n;
                rest = &rest[n..];
            }
        }
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random number generator failed");
    u64::from_le_bytes(b)
}

impl aloft_device::EraseSectors for CowFlash {
    fn sector_at(&self, offset: u32) -> Option<(u32, u32)> {
        aloft_device::uniform_sector_at(SECTOR, self.sectors.len() * SECTOR, offset)
    }
}

impl ErrorType for CowFlash {
    type Error = SimError;
}

impl ReadNorFlash for CowFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        let (start, _) = self.check(offset, bytes.len())?;
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = self.byte(start + i);
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.sectors.len() * SECTOR
    }
}

impl NorFlash for CowFlash {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        if from > to || to as usize > self.capacity() {
            return Err(SimError::OutOfBounds);
        }
        if !(from as usize).is_multiple_of(SECTOR) || !(to as usize).is_multiple_of(SECTOR) {
            return Err(SimError::NotAligned);
        }
        if self.switch.0.swap(false, Ordering::SeqCst) {
            self.powered = false;
            return Err(SimError::PowerLost);
        }
        for s in from as usize / SECTOR..to as usize / SECTOR {
            self.sectors[s] = ERASED.clone();
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        let (start, end) = self.check(offset, bytes.len())?;
        if !start.is_multiple_of(WRITE_SIZE) || !bytes.len().is_multiple_of(WRITE_SIZE) {
            return Err(SimError::NotAligned);
        }
        if let Some(i) = (start..end).position(|at| self.byte(at) != 0xFF) {
            return Err(SimError::NotErased {
                offset: (start + i) as u32,
            });
        }
        if self.switch.0.swap(false, Ordering::SeqCst) {
            // Torn: some whole words, then part of one word, then no power.
            let words = bytes.len() / WRITE_SIZE;
            let seed = random_u64();
            let done = (seed as usize % words.max(1)) * WRITE_SIZE;
            self.program(start, &bytes[..done]);
            if done < bytes.len() {
                let partial = (seed >> 32) as usize % WRITE_SIZE;
                self.program(start + done, &bytes[done..done + partial]);
                let last = bytes[done + partial] | 0x0F;
                self.program(start + done + partial, &[last]);
            }
            self.powered = false;
            return Err(SimError::PowerLost);
        }
        self.program(start, bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_device::sim::SimFlash;

    fn rng(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn behaves_like_the_device_simulator() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _round in 0..20 {
            let mut cow = CowFlash::new(4);
            let mut sim = SimFlash::<WRITE_SIZE, SECTOR>::uniform(4);
            for _ in 0..400 {
                let cap = 4 * SECTOR as u64;
                match rng(&mut seed) % 3 {
                    0 => {
                        let from = (rng(&mut seed) % 5) as u32 * SECTOR as u32;
                        let to = (rng(&mut seed) % 5) as u32 * SECTOR as u32;
                        let to = if rng(&mut seed).is_multiple_of(8) {
                            to + 1
                        } else {
                            to
                        };
                        assert_eq!(
                            cow.erase(from, to),
                            sim.erase(from, to),
                            "erase {from} {to}"
                        );
                    }
                    1 => {
                        let at = (rng(&mut seed) % (cap + 8)) as u32;
                        let at = if rng(&mut seed).is_multiple_of(4) {
                            at
                        } else {
                            at & !3
                        };
                        let len = (rng(&mut seed) % 64) as usize;
                        let len = if rng(&mut seed).is_multiple_of(4) {
                            len
                        } else {
                            len & !3
                        };
                        let data: Vec<u8> = (0..len).map(|_| rng(&mut seed) as u8).collect();
                        assert_eq!(
                            cow.write(at, &data),
                            sim.write(at, &data),
                            "write {at}+{len}"
                        );
                    }
                    _ => {
                        let at = (rng(&mut seed) % (cap + 8)) as u32;
                        let mut a = vec![0u8; (rng(&mut seed) % 64) as usize];
                        let mut b = a.clone();
                        assert_eq!(cow.read(at, &mut a), sim.read(at, &mut b));
                        assert_eq!(a, b);
                    }
                }
            }
            let mut all = vec![0u8; 4 * SECTOR];
            cow.read(0, &mut all).unwrap();
            assert_eq!(all, sim.bytes());
        }
    }

    #[test]
    fn copies_share_sectors_until_written() {
        let mut template = CowFlash::new(8);
        template.write(0, &[1; 64]).unwrap();
        template.write(5 * SECTOR as u32, &[2; 64]).unwrap();
        let mut a = template.share(Arc::default());
        let b = template.share(Arc::default());
        assert_eq!(a.private_bytes(), 0);
        a.write(64, &[3; 4]).unwrap();
        assert_eq!(
            a.private_bytes(),
            SECTOR,
            "only the written sector is copied"
        );
        let mut x = [0u8; 4];
        b.clone().read(64, &mut x).unwrap();
        assert_eq!(x, [0xFF; 4], "the other copy is unaffected");
        a.erase(0, SECTOR as u32).unwrap();
        assert_eq!(a.private_bytes(), 0, "erased sectors are shared");
    }

    #[test]
    fn a_cut_tears_the_next_write_and_restore_brings_power_back() {
        let switch = Arc::new(PowerSwitch::default());
        let mut f = CowFlash::new(2).share(switch.clone());
        f.write(0, &[0; 8]).unwrap();
        switch.cut();
        assert_eq!(f.write(8, &[0; 64]), Err(SimError::PowerLost));
        assert!(!f.is_powered());
        assert_eq!(f.write(128, &[0; 4]), Err(SimError::PowerLost));
        let mut b = [0u8; 4];
        assert_eq!(f.read(0, &mut b), Err(SimError::PowerLost));
        f.restore();
        f.write(128, &[0; 4]).unwrap();
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [0; 4], "earlier data survives");
        switch.cut();
        assert_eq!(f.erase(0, SECTOR as u32), Err(SimError::PowerLost));
        f.restore();
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [0; 4], "a cut erase has no effect");
    }
}
