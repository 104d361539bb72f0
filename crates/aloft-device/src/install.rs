//! The streaming installer: authenticated chunks in, plaintext into the
//! inactive slot, progress persisted for resume, whole-image check at the end.

use alloc::vec::Vec;

#[cfg(feature = "decrypt")]
use aloft_protocol::ContentKey;
#[cfg(feature = "decrypt")]
use aloft_protocol::payload::ChunkDecryptor;
use aloft_protocol::pb::PayloadEncoding;
use aloft_protocol::prost::Message as _;
use aloft_protocol::signed_chunks::{ChunkVerifier, PayloadLayout};
use aloft_protocol::trust::Manifest;
use embedded_storage::nor_flash::NorFlash;

use crate::device::{AcceptedOffer, Device, slot_record, write_trailer};
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

/// How the installer opens each chunk before any byte of it is written.
// One installer exists at a time, on the stack: the AES key schedule's size
// costs nothing, and boxing it would allocate.
#[allow(clippy::large_enum_variant)]
enum ChunkOpener {
    /// AES-256-GCM, in place (an encrypted release).
    #[cfg(feature = "decrypt")]
    Decrypt(ChunkDecryptor),
    /// A Merkle proof to the manifest's root (a signature-only release).
    Verify(ChunkVerifier),
}

impl ChunkOpener {
    fn next_index(&self) -> u32 {
        match self {
            #[cfg(feature = "decrypt")]
            Self::Decrypt(d) => d.next_index(),
            Self::Verify(v) => v.next_index(),
        }
    }

    fn is_finished(&self) -> bool {
        match self {
            #[cfg(feature = "decrypt")]
            Self::Decrypt(d) => d.is_finished(),
            Self::Verify(v) => v.is_finished(),
        }
    }

    /// The chunk's authenticated plaintext, a prefix of `chunk`.
    fn open<'c>(&mut self, chunk: &'c mut [u8]) -> Result<&'c [u8], aloft_protocol::Error> {
        match self {
            #[cfg(feature = "decrypt")]
            Self::Decrypt(d) => d.decrypt_next(chunk),
            Self::Verify(v) => v.verify_next(chunk),
        }
    }
}

/// An install in progress. Created by [`Device::begin_install`] (an
/// encrypted release) or [`Device::begin_signature_only_install`]; feed it
/// the wire chunks from [`Installer::next_chunk`] on, then
/// [`Installer::finish`]. Dropping it (a lost connection) loses nothing
/// durable: a later begin for the same manifest resumes.
pub struct Installer<'d, F: NorFlash> {
    dev: &'d mut Device<F>,
    manifest: Manifest,
    envelope: Vec<u8>,
    chunks: ChunkOpener,
    chunk_size: u32,
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
            .field("release", self.manifest.release_id())
            .field("slot", &self.slot)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl<F: NorFlash> Device<F> {
    /// Starts (or resumes) installing an encrypted offer this device
    /// verified ([`Device::verify_offer`]) into the inactive slot, with `key`
    /// the unwrapped content key. A signature-only offer is refused here
    /// (use [`Device::begin_signature_only_install`]).
    ///
    /// See [`Device::begin_signature_only_install`] for what both re-check.
    #[cfg(feature = "decrypt")]
    pub fn begin_install(
        &mut self,
        offer: &AcceptedOffer,
        key: &ContentKey,
    ) -> Result<Installer<'_, F>, Error> {
        let layout = offer.update.manifest().payload_layout();
        let PayloadLayout::Encrypted(params) = layout else {
            return Err(aloft_protocol::Error::InvalidField(
                "content key (given for a signature-only release)",
            )
            .into());
        };
        self.begin(offer, |first| {
            Ok(ChunkOpener::Decrypt(ChunkDecryptor::new(
                key, params, first,
            )?))
        })
    }

    /// Starts (or resumes) installing a signature-only offer this device
    /// verified ([`Device::verify_offer`]) into the inactive slot: each
    /// chunk's Merkle proof is checked against the manifest's root before
    /// any byte of it is written. An encrypted offer is refused here.
    ///
    /// Every field it acts on comes from the verified manifest, and it
    /// re-checks them against the device's state now: the offer was
    /// verified under the current TrustRoot, for this product and
    /// hardware, at or above the security floor, newer than the last
    /// confirmed image, and fits the slot and its manifest area. Refuses a
    /// pending trial and an install of another release in progress;
    /// resumes from the last durable chunk when the same manifest is in
    /// progress. Moves the attested time as far as the offer's
    /// [`crate::TimePolicy`] bound allows, and remembers how far the
    /// server's clock was beyond it.
    pub fn begin_signature_only_install(
        &mut self,
        offer: &AcceptedOffer,
    ) -> Result<Installer<'_, F>, Error> {
        let layout = offer.update.manifest().payload_layout();
        let PayloadLayout::SignatureOnly(params) = layout else {
            return Err(aloft_protocol::Error::InvalidField(
                "content key (missing for an encrypted release)",
            )
            .into());
        };
        self.begin(offer, |first| {
            Ok(ChunkOpener::Verify(ChunkVerifier::new(params, first)?))
        })
    }

    /// The checks and state change both installs share; `opener` makes the
    /// chunk opener from the first chunk to write.
    fn begin(
        &mut self,
        offer: &AcceptedOffer,
        opener: impl FnOnce(u32) -> Result<ChunkOpener, aloft_protocol::Error>,
    ) -> Result<Installer<'_, F>, Error> {
        use aloft_protocol::Error as P;
        self.refresh()?;
        if self.trust_root()?.digest() != offer.update.root_digest() {
            return Err(Error::OfferFromAnotherRoot);
        }
        let m = offer.update.manifest();
        let encoding: PayloadEncoding = m.payload_encoding();
        self.check_payload(encoding)?;
        if offer.update.directive().manifest_digest() != m.digest() {
            return Err(P::ManifestMismatch.into());
        }
        if m.product() != self.config.product {
            return Err(P::WrongProduct.into());
        }
        if !m.hardware().contains(&self.config.hardware) {
            return Err(P::IncompatibleHardware.into());
        }
        if m.security_version() < self.state.security_floor {
            return Err(P::SecurityVersionBelowFloor {
                floor: self.state.security_floor,
                offered: m.security_version(),
            }
            .into());
        }
        let current = self.active_version().ok_or(Error::NoBootableSlot)?;
        if m.version() <= current {
            return Err(P::NotNewer {
                current,
                offered: m.version(),
            }
            .into());
        }
        let slot = self.inactive_slot();
        let capacity = self.layout.image_capacity(slot);
        if m.image_len() > u64::from(capacity) {
            return Err(P::ImageTooLarge {
                image_len: m.image_len(),
                capacity: capacity.into(),
            }
            .into());
        }
        let manifest_envelope = m.envelope().encode_to_vec();
        if manifest_envelope.len() + 4 > self.layout.trailer_len(slot) as usize {
            return Err(Error::ManifestTooLarge);
        }
        if self.state.trial.is_some() {
            return Err(Error::TrialPending);
        }
        let chunk_size = m.chunk_size();
        let image_len = m.image_len();
        let sector = self.layout.slot(slot).sector_size;
        let mut st = self.state;
        st.time_floor = st.time_floor.max(offer.attested);
        st.server_ahead = offer.server_ahead;
        let resume_from = match st.install {
            Some(i) if i.manifest_digest == m.digest() && i.slot == slot => {
                // All bytes below next_chunk's offset are durable; the sector
                // holding that offset may be half written: restart there.
                let durable = u64::from(i.next_chunk) * u64::from(chunk_size);
                let durable = durable.min(image_len) as u32;
                durable / sector * sector
            }
            Some(_) => return Err(Error::InstallInProgress),
            None => {
                st.install = Some(Install {
                    slot,
                    release: Device::<F>::release_name(m.release_id()),
                    manifest_digest: m.digest(),
                    next_chunk: 0,
                });
                // The slot is about to be overwritten: nothing bootable there.
                st.slots[slot.index()] = None;
                0
            }
        };
        if st != self.state {
            self.commit(st)?;
        }
        let first = resume_from / chunk_size;
        let chunks = opener(first)?;
        let manifest = m.manifest().clone();
        let offset = self.layout.slot(slot).offset;
        let progress_every = self.progress_interval(slot);
        Ok(Installer {
            manifest,
            envelope: manifest_envelope,
            chunks,
            chunk_size,
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
        self.chunks.next_index()
    }

    /// The slot being written.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// Authenticates the next chunk in place in `chunk` (an encrypted
    /// release: its ciphertext then tag, decrypted in place; a
    /// signature-only one: its plaintext then Merkle proof), then writes the
    /// plaintext to the slot, erasing
    /// sectors just ahead of the data. Nothing of a chunk that fails
    /// authentication reaches flash; a chunk past the manifest's length is
    /// refused ([`aloft_protocol::Error::PayloadTooLong`]). Progress is
    /// persisted each time the durable data crosses a multiple of the
    /// progress interval ([`Device::set_progress_interval`]).
    /// Allocates nothing.
    pub fn write_chunk(&mut self, chunk: &mut [u8]) -> Result<ChunkProgress, Error> {
        if self.chunks.is_finished() {
            return Err(aloft_protocol::Error::PayloadTooLong.into());
        }
        let index = self.chunks.next_index();
        let start = u64::from(index) * u64::from(self.chunk_size);
        let plain = self.chunks.open(chunk)?;
        let end = start + plain.len() as u64;
        let capacity = self.dev.layout.image_capacity(self.slot);
        if end > self.manifest.image_len() || end > u64::from(capacity) {
            return Err(aloft_protocol::Error::PayloadTooLong.into());
        }
        let base = self.dev.layout.slot(self.slot).offset;
        let abs_start = base + start as u32;
        let skip = self.floor.saturating_sub(abs_start).min(plain.len() as u32) as usize;
        self.append(&plain[skip..])?;
        if self.chunks.is_finished() {
            self.flush_carry()?;
        }
        self.persist_if_due()?;
        Ok(ChunkProgress {
            next_chunk: self.chunks.next_index(),
            complete: self.chunks.is_finished(),
        })
    }

    /// Checks the whole image (re-read from flash) against the manifest's
    /// SHA-256, writes the manifest next to it, then in one durable record
    /// marks the slot pending with the configured trial attempts, clears the
    /// install and queues an "installed" report. On a digest mismatch the
    /// slot is not marked, the install is cleared and an "install failed"
    /// report queued.
    pub fn finish(self) -> Result<(), Error> {
        if !self.chunks.is_finished() {
            return Err(Error::Incomplete);
        }
        let dev = self.dev;
        let part = *dev.layout.slot(self.slot);
        let m = &self.manifest;
        let digest = flash::hash(&mut dev.flash, part.offset, m.image_len())?;
        let name = Device::<F>::release_name(m.release_id());
        if digest != m.image_digest() {
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
        st.slots[self.slot.index()] = Some(slot_record(m));
        st.trial = Some(Trial {
            slot: self.slot,
            attempts_left: dev.config.trial_attempts.max(1),
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
        if durable / every <= self.persisted / every || self.chunks.is_finished() {
            return Ok(());
        }
        let next_chunk = durable / self.chunk_size;
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
