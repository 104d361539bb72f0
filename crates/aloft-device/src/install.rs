//! The streaming installer: authenticated chunks in, plaintext into the
//! inactive slot, progress persisted for resume, whole-image check at the end.

use alloc::vec::Vec;

use aloft_protocol::envelope::decode_envelope;
use aloft_protocol::payload::{ChunkDecryptor, PayloadParams};
use aloft_protocol::trust::{VerifiedManifest, VerifiedUpdate};
use aloft_protocol::{ContentKey, Digest};
use embedded_storage::nor_flash::NorFlash;

use crate::device::{Device, write_trailer};
use crate::layout::{MAX_WRITE_SIZE, Slot};
use crate::state::{Install, ReportDetail, ReportKind, Trial};
use crate::{Error, flash};

/// What [`Installer::write_chunk`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkProgress {
    /// Index of the chunk expected next.
    pub next_chunk: u32,
    /// Whether every chunk has been written (call [`Installer::finish`]).
    pub complete: bool,
}

/// An install in progress. Created by [`Device::begin_install`]; feed it the
/// ciphertext chunks from [`Installer::next_chunk`] on, then
/// [`Installer::finish`]. Dropping it (a lost connection) loses nothing
/// durable: a later `begin_install` for the same manifest resumes.
pub struct Installer<'d, F: NorFlash> {
    dev: &'d mut Device<F>,
    manifest: VerifiedManifest,
    envelope: Vec<u8>,
    decryptor: ChunkDecryptor,
    params: PayloadParams,
    slot: Slot,
    /// Next byte offset in the slot that this session writes.
    pos: u32,
    /// Bytes below this offset are durable from an earlier session: skipped.
    floor: u32,
    /// Bytes below this offset are erased (or written) in this session.
    erased_end: u32,
    /// Plaintext not yet written because it does not fill a write word.
    carry: [u8; MAX_WRITE_SIZE],
    carry_len: usize,
    /// Offset covered by the last persisted progress.
    persisted: u32,
    /// Progress is persisted when the data crosses a multiple of this.
    progress_every: u32,
}

impl<F: NorFlash> core::fmt::Debug for Installer<'_, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Installer")
            .field("release", &self.manifest.release_id)
            .field("slot", &self.slot)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl<F: NorFlash> Device<F> {
    /// Starts (or resumes) installing `update` into the inactive slot.
    ///
    /// `manifest_envelope` is the encoded signed manifest envelope (stored
    /// with the image so the bootloader can re-verify it); `key` the
    /// unwrapped content key. Refuses: a manifest envelope that is not the
    /// one `update` verified; another product or hardware revision; a
    /// security version below the floor; an image larger than the slot; a
    /// pending trial; an install of another release in progress. Resumes
    /// from the last durable chunk when the same manifest is in progress.
    /// Raises the attested-time floor to the directive's server time.
    pub fn begin_install(
        &mut self,
        update: &VerifiedUpdate,
        manifest_envelope: &[u8],
        key: &ContentKey,
    ) -> Result<Installer<'_, F>, Error> {
        use aloft_protocol::Error as P;
        self.refresh()?;
        let m = &update.manifest;
        let envelope = decode_envelope(manifest_envelope)?;
        if Digest::of(&envelope.payload) != m.digest || update.directive.manifest_digest != m.digest
        {
            return Err(P::ManifestMismatch.into());
        }
        if m.product != self.config.product {
            return Err(P::WrongProduct.into());
        }
        if !m.hardware.contains(&self.config.hardware) {
            return Err(P::IncompatibleHardware.into());
        }
        if m.security_version < self.state.security_floor {
            return Err(P::SecurityVersionBelowFloor {
                floor: self.state.security_floor,
                offered: m.security_version,
            }
            .into());
        }
        let slot = self.inactive_slot();
        let capacity = self.layout.image_capacity(slot);
        if m.image_len > u64::from(capacity) {
            return Err(P::ImageTooLarge {
                image_len: m.image_len,
                capacity: capacity.into(),
            }
            .into());
        }
        if manifest_envelope.len() + 4 > self.layout.trailer_len(slot) as usize {
            return Err(Error::ManifestTooLarge);
        }
        if self.state.trial.is_some() {
            return Err(Error::TrialPending);
        }
        let params = m.payload_params();
        let sector = self.layout.slot(slot).sector_size;
        let mut st = self.state;
        st.time_floor = st.time_floor.max(update.directive.server_time);
        let resume_from = match st.install {
            Some(i) if i.manifest_digest == m.digest && i.slot == slot => {
                // All bytes below next_chunk's offset are durable; the sector
                // holding that offset may be half written: restart there.
                let durable = u64::from(i.next_chunk) * u64::from(params.chunk_size);
                let durable = durable.min(m.image_len) as u32;
                durable / sector * sector
            }
            Some(_) => return Err(Error::InstallInProgress),
            None => {
                st.install = Some(Install {
                    slot,
                    release: Device::<F>::release_name(&m.release_id),
                    manifest_digest: m.digest,
                    next_chunk: 0,
                });
                // The slot is about to be overwritten: nothing bootable there.
                st.slot_manifest[slot.index()] = None;
                0
            }
        };
        if st != self.state {
            self.commit(st)?;
        }
        let first = resume_from / params.chunk_size;
        let decryptor = ChunkDecryptor::new(key, params, first)?;
        let offset = self.layout.slot(slot).offset;
        let progress_every = self.progress_interval(slot);
        Ok(Installer {
            manifest: m.clone(),
            envelope: manifest_envelope.to_vec(),
            decryptor,
            params,
            slot,
            pos: offset + resume_from,
            floor: offset + resume_from,
            erased_end: offset + resume_from,
            carry: [0xFF; MAX_WRITE_SIZE],
            carry_len: 0,
            persisted: resume_from,
            progress_every,
            dev: self,
        })
    }

    /// Abandons the install in progress (if any) and queues an
    /// "install failed" report for it.
    pub fn abort_install(&mut self) -> Result<(), Error> {
        self.refresh()?;
        let mut st = self.state;
        if let Some(i) = st.install.take() {
            st.push_report(ReportKind::InstallFailed, i.release, ReportDetail::Aborted);
            self.commit(st)?;
        }
        Ok(())
    }
}

impl<F: NorFlash> Installer<'_, F> {
    /// Index of the chunk to send next (the resume point after `begin`).
    pub fn next_chunk(&self) -> u32 {
        self.decryptor.next_index()
    }

    /// The slot being written.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// Authenticates and decrypts the next chunk in place in `chunk` (its
    /// ciphertext then tag), then writes the plaintext to the slot, erasing
    /// sectors just ahead of the data. Nothing of a chunk that fails
    /// authentication reaches flash; a chunk past the manifest's length is
    /// refused ([`aloft_protocol::Error::PayloadTooLong`]). Progress is
    /// persisted each time the durable data crosses a multiple of the
    /// progress interval ([`Device::set_progress_interval`]).
    /// Allocates nothing.
    pub fn write_chunk(&mut self, chunk: &mut [u8]) -> Result<ChunkProgress, Error> {
        if self.decryptor.is_finished() {
            return Err(aloft_protocol::Error::PayloadTooLong.into());
        }
        let index = self.decryptor.next_index();
        let start = u64::from(index) * u64::from(self.params.chunk_size);
        let plain = self.decryptor.decrypt_next(chunk)?;
        let end = start + plain.len() as u64;
        let capacity = self.dev.layout.image_capacity(self.slot);
        if end > self.manifest.image_len || end > u64::from(capacity) {
            return Err(aloft_protocol::Error::PayloadTooLong.into());
        }
        let base = self.dev.layout.slot(self.slot).offset;
        let abs_start = base + start as u32;
        let skip = self.floor.saturating_sub(abs_start).min(plain.len() as u32) as usize;
        self.append(&plain[skip..])?;
        if self.decryptor.is_finished() {
            self.flush_carry()?;
        }
        self.persist_if_due()?;
        Ok(ChunkProgress {
            next_chunk: self.decryptor.next_index(),
            complete: self.decryptor.is_finished(),
        })
    }

    /// Checks the whole image (re-read from flash) against the manifest's
    /// SHA-256, writes the manifest next to it, then in one durable record
    /// marks the slot pending with the configured trial attempts, clears the
    /// install and queues an "installed" report. On a digest mismatch the
    /// slot is not marked, the install is cleared and an "install failed"
    /// report queued.
    pub fn finish(self) -> Result<(), Error> {
        if !self.decryptor.is_finished() {
            return Err(Error::Incomplete);
        }
        let dev = self.dev;
        let part = *dev.layout.slot(self.slot);
        let m = &self.manifest;
        let digest = flash::hash(&mut dev.flash, part.offset, m.image_len)?;
        let name = Device::<F>::release_name(&m.release_id);
        if digest != m.image_digest {
            let mut st = dev.state;
            st.install = None;
            st.push_report(
                ReportKind::InstallFailed,
                name,
                ReportDetail::DigestMismatch,
            );
            dev.commit(st)?;
            return Err(Error::DigestMismatch);
        }
        write_trailer(&mut dev.flash, &dev.layout, self.slot, &self.envelope)?;
        let trailer = dev.layout.trailer_offset(self.slot);
        let len_ok = flash::equals(
            &mut dev.flash,
            trailer,
            &(self.envelope.len() as u32).to_le_bytes(),
        )?;
        if !len_ok || !flash::equals(&mut dev.flash, trailer + 4, &self.envelope)? {
            return Err(Error::DigestMismatch);
        }
        let mut st = dev.state;
        st.install = None;
        st.slot_manifest[self.slot.index()] = Some(m.digest);
        st.trial = Some(Trial {
            slot: self.slot,
            attempts_left: dev.config.trial_attempts.max(1),
            security_version: m.security_version,
            release: name,
        });
        st.push_report(ReportKind::Installed, name, ReportDetail::None);
        dev.commit(st)
    }

    /// Writes `data` at `self.pos`, word-aligned, keeping a partial word in
    /// the carry buffer.
    fn append(&mut self, mut data: &[u8]) -> Result<(), Error> {
        let w = F::WRITE_SIZE;
        if self.carry_len > 0 {
            let n = (w - self.carry_len).min(data.len());
            self.carry[self.carry_len..self.carry_len + n].copy_from_slice(&data[..n]);
            self.carry_len += n;
            data = &data[n..];
            if self.carry_len < w {
                return Ok(());
            }
            self.write_words_from_carry()?;
        }
        let bulk = data.len() / w * w;
        if bulk > 0 {
            self.ensure_erased(self.pos + bulk as u32)?;
            self.dev
                .flash
                .write(self.pos, &data[..bulk])
                .map_err(Error::flash)?;
            self.pos += bulk as u32;
        }
        let rest = &data[bulk..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_len = rest.len();
        Ok(())
    }

    fn write_words_from_carry(&mut self) -> Result<(), Error> {
        let w = F::WRITE_SIZE;
        self.ensure_erased(self.pos + w as u32)?;
        let word = self.carry;
        self.dev
            .flash
            .write(self.pos, &word[..w])
            .map_err(Error::flash)?;
        self.pos += w as u32;
        self.carry = [0xFF; MAX_WRITE_SIZE];
        self.carry_len = 0;
        Ok(())
    }

    fn flush_carry(&mut self) -> Result<(), Error> {
        if self.carry_len > 0 {
            // Pad with the erased value; the digest covers image_len bytes only.
            self.carry[self.carry_len..].fill(0xFF);
            self.write_words_from_carry()?;
        }
        Ok(())
    }

    /// Erases whole sectors until `end` is covered, never past the image area.
    fn ensure_erased(&mut self, end: u32) -> Result<(), Error> {
        let part = *self.dev.layout.slot(self.slot);
        let limit = part.offset + self.dev.layout.image_capacity(self.slot);
        while self.erased_end < end {
            let next = self.erased_end + part.sector_size;
            if next > limit {
                return Err(aloft_protocol::Error::PayloadTooLong.into());
            }
            self.dev
                .flash
                .erase(self.erased_end, next)
                .map_err(Error::flash)?;
            self.erased_end = next;
        }
        Ok(())
    }

    /// Persists the resume point when durable data crossed a multiple of
    /// the progress interval.
    fn persist_if_due(&mut self) -> Result<(), Error> {
        let durable = self.pos - self.dev.layout.slot(self.slot).offset;
        let every = self.progress_every;
        if durable / every <= self.persisted / every || self.decryptor.is_finished() {
            return Ok(());
        }
        let next_chunk = durable / self.params.chunk_size;
        let mut st = self.dev.state;
        let Some(install) = st.install.as_mut() else {
            return Ok(());
        };
        if next_chunk <= install.next_chunk {
            return Ok(());
        }
        install.next_chunk = next_chunk;
        self.dev.commit(st)?;
        self.persisted = durable;
        Ok(())
    }
}
