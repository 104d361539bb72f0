//! The power-safe state record and its log.
//!
//! The state partition is split into two halves ("banks"). Each bank is an
//! append-only log of fixed-size records (`record_len` bytes: the fields,
//! then a CRC-32 over them, padded to the write size). The current state is
//! the valid record with the highest sequence number in either bank. A new
//! record is appended after the last non-blank slot of the current bank; when
//! that bank is full, the *other* bank is erased and the record goes to its
//! first slot. Every cut therefore leaves the previous record intact:
//! a torn record fails its CRC and is skipped (its slot is never reused),
//! and an interrupted or partial erase only touches the bank that does not
//! hold the newest record (left-over old records there have lower sequence
//! numbers).

use aloft_protocol::pb;
use aloft_protocol::{Digest, ReleaseId, SecurityVersion, UnixTime, Version};
use embedded_storage::nor_flash::NorFlash;

use crate::crc::crc32;
use crate::layout::{Layout, MAX_WRITE_SIZE, Slot};
use crate::{Error, flash};

/// Most reports the state holds; when full, the oldest is dropped.
pub const MAX_REPORTS: usize = 4;
/// Longest release id stored (as [`aloft_protocol::types::MAX_ID_LEN`]).
const MAX_NAME: usize = 64;
/// Record format 2: slot records with versions, the TrustRoot reference and
/// the server-clock disagreement.
const MAGIC: u32 = 0xA10F_0002;

const NAME_LEN: usize = 1 + MAX_NAME;
const TRIAL_LEN: usize = 1 + 1 + 1 + NAME_LEN;
const SLOT_LEN: usize = 1 + 32 + 12 + 4;
const TRUST_LEN: usize = 1 + 4 + 4 + 32 + 8;
const INSTALL_LEN: usize = 1 + 1 + NAME_LEN + 32 + 4;
const REPORT_LEN: usize = 1 + 4 + 1 + 1 + NAME_LEN;
/// Encoded record length before padding, CRC included.
pub(crate) const RAW_LEN: usize = 4
    + 4
    + 3
    + TRIAL_LEN
    + 4
    + 8
    + 8
    + 4
    + 4
    + 2 * SLOT_LEN
    + TRUST_LEN
    + INSTALL_LEN
    + MAX_REPORTS * REPORT_LEN
    + 4;
const RECORD_MAX: usize = RAW_LEN + MAX_WRITE_SIZE;

/// On-flash length of one record for flash `F` (padded to its write size).
pub(crate) const fn record_len<F: NorFlash>() -> usize {
    RAW_LEN.div_ceil(F::WRITE_SIZE) * F::WRITE_SIZE
}

/// A release id in a fixed-size form (no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Name {
    len: u8,
    bytes: [u8; MAX_NAME],
}

impl Name {
    pub(crate) fn new(id: &ReleaseId) -> Self {
        let s = id.as_str().as_bytes();
        let mut bytes = [0u8; MAX_NAME];
        let len = s.len().min(MAX_NAME);
        bytes[..len].copy_from_slice(&s[..len]);
        Self {
            len: len as u8,
            bytes,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    pub(crate) fn release_id(&self) -> Option<ReleaseId> {
        ReleaseId::new(self.as_str()).ok()
    }
}

/// A pending trial: the slot, its attempts left and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Trial {
    pub slot: Slot,
    pub attempts_left: u8,
    pub release: Name,
}

/// What a slot holds, recorded when its image was verified (at install or
/// provisioning): the manifest digest it must match to boot, and the
/// version and security version that manifest names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotRecord {
    pub manifest_digest: Digest,
    pub version: Version,
    pub security_version: SecurityVersion,
}

/// Which TrustRoot copy is current, and what it must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TrustRef {
    /// Copy 0 or 1 of the state partition's TrustRoot area.
    pub copy: u8,
    pub version: u32,
    /// Encoded envelope length in the copy.
    pub len: u32,
    /// The root's payload digest (`VerifiedTrustRoot::digest`).
    pub digest: Digest,
    pub expires_at: UnixTime,
}

/// An install in progress, for resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Install {
    pub slot: Slot,
    pub release: Name,
    pub manifest_digest: Digest,
    pub next_chunk: u32,
}

/// What a report says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportKind {
    /// Image downloaded and verified, slot marked for trial.
    Installed,
    /// New image running and confirmed after its health check.
    Confirmed,
    /// Downloaded but not running: the trial failed and the old slot is back.
    RolledBack,
    /// The install was refused or failed.
    InstallFailed,
}

impl ReportKind {
    const fn code(self) -> u8 {
        match self {
            Self::Installed => 1,
            Self::Confirmed => 2,
            Self::RolledBack => 3,
            Self::InstallFailed => 4,
        }
    }

    const fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Self::Installed),
            2 => Some(Self::Confirmed),
            3 => Some(Self::RolledBack),
            4 => Some(Self::InstallFailed),
            _ => None,
        }
    }

    /// The wire enum.
    pub fn to_pb(self) -> pb::ReportKind {
        match self {
            Self::Installed => pb::ReportKind::Installed,
            Self::Confirmed => pb::ReportKind::Confirmed,
            Self::RolledBack => pb::ReportKind::RolledBack,
            Self::InstallFailed => pb::ReportKind::InstallFailed,
        }
    }
}

/// Why, in a word (a code on flash, text on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportDetail {
    /// Nothing to add.
    None,
    /// The trial image was started as often as allowed without confirming.
    AttemptsExhausted,
    /// The trial image failed verification at boot (signature, digest, floor).
    VerificationFailed,
    /// The downloaded image did not match the manifest digest.
    DigestMismatch,
    /// The install was abandoned.
    Aborted,
}

impl ReportDetail {
    const fn code(self) -> u8 {
        match self {
            Self::None => 0,
            Self::AttemptsExhausted => 1,
            Self::VerificationFailed => 2,
            Self::DigestMismatch => 3,
            Self::Aborted => 4,
        }
    }

    const fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Self::None),
            1 => Some(Self::AttemptsExhausted),
            2 => Some(Self::VerificationFailed),
            3 => Some(Self::DigestMismatch),
            4 => Some(Self::Aborted),
            _ => None,
        }
    }

    /// Human-readable text for the report's `detail` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::AttemptsExhausted => "attempts exhausted",
            Self::VerificationFailed => "image failed verification at boot",
            Self::DigestMismatch => "digest mismatch",
            Self::Aborted => "install aborted",
        }
    }
}

/// A report id: a per-device counter, unique and never reused, so the
/// server can record each report once however often it is re-sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReportId(pub u32);

impl ReportId {
    /// Its wire form (4 bytes big-endian).
    pub const fn to_bytes(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    /// From its wire form; `None` unless exactly 4 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(|b| Self(u32::from_be_bytes(b)))
    }
}

/// A report waiting for the server's acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Stable id.
    pub id: ReportId,
    /// What happened.
    pub kind: ReportKind,
    /// The release concerned.
    pub release_id: ReleaseId,
    /// Why.
    pub detail: ReportDetail,
}

impl Report {
    /// Its wire form.
    pub fn to_pb(&self) -> pb::Report {
        pb::Report {
            report_id: self.id.to_bytes().to_vec(),
            kind: self.kind.to_pb() as i32,
            release_id: self.release_id.as_str().into(),
            detail: self.detail.as_str().into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StoredReport {
    pub id: u32,
    pub kind: ReportKind,
    pub detail: ReportDetail,
    pub release: Name,
}

/// Everything the device must remember across power cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State {
    /// The last confirmed slot: started when no trial is pending.
    pub active: Slot,
    /// The slot started at the last boot.
    pub booted: Slot,
    /// Whether the image started at the last boot is confirmed.
    pub confirmed: bool,
    pub trial: Option<Trial>,
    pub security_floor: SecurityVersion,
    pub time_floor: UnixTime,
    /// How far ahead of the accepted attested time the last directive's
    /// server time was (0: they agreed).
    pub server_ahead: u64,
    pub boot_count: u32,
    pub next_report_id: u32,
    /// What each slot holds (None: nothing bootable there).
    pub slots: [Option<SlotRecord>; 2],
    /// The current TrustRoot.
    pub trust: TrustRef,
    pub install: Option<Install>,
    pub reports: [Option<StoredReport>; MAX_REPORTS],
}

impl State {
    pub(crate) fn factory(slot_a: SlotRecord, trust: TrustRef) -> Self {
        Self {
            active: Slot::A,
            booted: Slot::A,
            confirmed: true,
            trial: None,
            security_floor: slot_a.security_version,
            time_floor: UnixTime(0),
            server_ahead: 0,
            boot_count: 0,
            next_report_id: 1,
            slots: [Some(slot_a), None],
            trust,
            install: None,
            reports: [None; MAX_REPORTS],
        }
    }

    /// Queues a report; drops the oldest when the queue is full.
    pub(crate) fn push_report(&mut self, kind: ReportKind, release: Name, detail: ReportDetail) {
        let id = self.next_report_id;
        self.next_report_id = self.next_report_id.wrapping_add(1);
        let free = self.reports.iter().position(Option::is_none);
        let at = free.unwrap_or_else(|| {
            let mut oldest = 0;
            for (i, r) in self.reports.iter().enumerate() {
                if let (Some(r), Some(o)) = (r, &self.reports[oldest])
                    && r.id < o.id
                {
                    oldest = i;
                }
            }
            oldest
        });
        self.reports[at] = Some(StoredReport {
            id,
            kind,
            detail,
            release,
        });
    }

    fn encode(&self, seq: u32, out: &mut [u8; RECORD_MAX]) {
        let mut w = Writer { buf: out, pos: 0 };
        w.u32(MAGIC);
        w.u32(seq);
        w.u8(self.active.index() as u8);
        w.u8(self.booted.index() as u8);
        w.u8(self.confirmed as u8);
        match &self.trial {
            Some(t) => {
                w.u8(1);
                w.u8(t.slot.index() as u8);
                w.u8(t.attempts_left);
                w.name(&t.release);
            }
            None => w.zeros(TRIAL_LEN),
        }
        w.u32(self.security_floor.0);
        w.u64(self.time_floor.0);
        w.u64(self.server_ahead);
        w.u32(self.boot_count);
        w.u32(self.next_report_id);
        for slot in &self.slots {
            match slot {
                Some(r) => {
                    w.u8(1);
                    w.bytes(r.manifest_digest.as_bytes());
                    w.u32(r.version.major);
                    w.u32(r.version.minor);
                    w.u32(r.version.patch);
                    w.u32(r.security_version.0);
                }
                None => w.zeros(SLOT_LEN),
            }
        }
        w.u8(self.trust.copy);
        w.u32(self.trust.version);
        w.u32(self.trust.len);
        w.bytes(self.trust.digest.as_bytes());
        w.u64(self.trust.expires_at.0);
        match &self.install {
            Some(i) => {
                w.u8(1);
                w.u8(i.slot.index() as u8);
                w.name(&i.release);
                w.bytes(i.manifest_digest.as_bytes());
                w.u32(i.next_chunk);
            }
            None => w.zeros(INSTALL_LEN),
        }
        for r in &self.reports {
            match r {
                Some(r) => {
                    w.u8(1);
                    w.u32(r.id);
                    w.u8(r.kind.code());
                    w.u8(r.detail.code());
                    w.name(&r.release);
                }
                None => w.zeros(REPORT_LEN),
            }
        }
        debug_assert_eq!(w.pos, RAW_LEN - 4);
        let crc = crc32(&w.buf[..RAW_LEN - 4]);
        w.u32(crc);
    }

    fn decode(buf: &[u8]) -> Option<(u32, Self)> {
        if buf.len() < RAW_LEN {
            return None;
        }
        let crc = u32::from_le_bytes(buf[RAW_LEN - 4..RAW_LEN].try_into().ok()?);
        if crc32(&buf[..RAW_LEN - 4]) != crc {
            return None;
        }
        let mut r = Reader { buf, pos: 0 };
        if r.u32()? != MAGIC {
            return None;
        }
        let seq = r.u32()?;
        let active = Slot::from_index(r.u8()?)?;
        let booted = Slot::from_index(r.u8()?)?;
        let confirmed = r.flag()?;
        let trial = if r.flag()? {
            Some(Trial {
                slot: Slot::from_index(r.u8()?)?,
                attempts_left: r.u8()?,
                release: r.name()?,
            })
        } else {
            r.skip(TRIAL_LEN - 1);
            None
        };
        let security_floor = SecurityVersion(r.u32()?);
        let time_floor = UnixTime(r.u64()?);
        let server_ahead = r.u64()?;
        let boot_count = r.u32()?;
        let next_report_id = r.u32()?;
        let mut slots = [None; 2];
        for slot in &mut slots {
            *slot = if r.flag()? {
                Some(SlotRecord {
                    manifest_digest: r.digest()?,
                    version: Version::new(r.u32()?, r.u32()?, r.u32()?),
                    security_version: SecurityVersion(r.u32()?),
                })
            } else {
                r.skip(SLOT_LEN - 1);
                None
            };
        }
        let trust = TrustRef {
            copy: match r.u8()? {
                c @ (0 | 1) => c,
                _ => return None,
            },
            version: r.u32()?,
            len: r.u32()?,
            digest: r.digest()?,
            expires_at: UnixTime(r.u64()?),
        };
        let install = if r.flag()? {
            Some(Install {
                slot: Slot::from_index(r.u8()?)?,
                release: r.name()?,
                manifest_digest: r.digest()?,
                next_chunk: r.u32()?,
            })
        } else {
            r.skip(INSTALL_LEN - 1);
            None
        };
        let mut reports = [None; MAX_REPORTS];
        for slot in &mut reports {
            *slot = if r.flag()? {
                Some(StoredReport {
                    id: r.u32()?,
                    kind: ReportKind::from_code(r.u8()?)?,
                    detail: ReportDetail::from_code(r.u8()?)?,
                    release: r.name()?,
                })
            } else {
                r.skip(REPORT_LEN - 1);
                None
            };
        }
        let state = Self {
            active,
            booted,
            confirmed,
            trial,
            security_floor,
            time_floor,
            server_ahead,
            boot_count,
            next_report_id,
            slots,
            trust,
            install,
            reports,
        };
        Some((seq, state))
    }
}

struct Writer<'a> {
    buf: &'a mut [u8; RECORD_MAX],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn zeros(&mut self, n: usize) {
        self.buf[self.pos..self.pos + n].fill(0);
        self.pos += n;
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn name(&mut self, n: &Name) {
        self.u8(n.len);
        self.bytes(&n.bytes);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }
    fn skip(&mut self, n: usize) {
        self.pos += n;
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn flag(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn digest(&mut self) -> Option<Digest> {
        Digest::from_slice(self.take(32)?).ok()
    }
    fn name(&mut self) -> Option<Name> {
        let len = self.u8()?;
        if len as usize > MAX_NAME {
            return None;
        }
        let bytes = self.take(MAX_NAME)?.try_into().ok()?;
        Some(Name { len, bytes })
    }
}

/// Where the next record goes and the sequence number of the newest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogPos {
    bank: u32,
    next: u32,
    seq: u32,
}

fn record_offset<F: NorFlash>(layout: &Layout, bank: u32, index: u32) -> u32 {
    layout.state.offset + bank * layout.bank_size() + index * record_len::<F>() as u32
}

fn per_bank<F: NorFlash>(layout: &Layout) -> u32 {
    layout.bank_size() / record_len::<F>() as u32
}

/// Scans both banks; returns the newest valid state and where to append.
pub(crate) fn load<F: NorFlash>(flash: &mut F, layout: &Layout) -> Result<(State, LogPos), Error> {
    let len = record_len::<F>();
    let mut buf = [0u8; RECORD_MAX];
    let mut best: Option<(u32, u32, State)> = None; // (seq, bank, state)
    let mut after_last = [0u32; 2];
    for bank in 0..2u32 {
        for index in 0..per_bank::<F>(layout) {
            let rec = &mut buf[..len];
            flash::read(flash, record_offset::<F>(layout, bank, index), rec)?;
            if rec.iter().all(|&b| b == 0xFF) {
                continue;
            }
            after_last[bank as usize] = index + 1;
            if let Some((seq, st)) = State::decode(rec)
                && best.as_ref().is_none_or(|(s, _, _)| seq > *s)
            {
                best = Some((seq, bank, st));
            }
        }
    }
    let (seq, bank, state) = best.ok_or(Error::NotProvisioned)?;
    Ok((
        state,
        LogPos {
            bank,
            next: after_last[bank as usize],
            seq,
        },
    ))
}

/// Appends `state` as the newest record. On error the position is unknown:
/// the caller must [`load`] again before the next append.
pub(crate) fn append<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    pos: &mut LogPos,
    state: &State,
) -> Result<(), Error> {
    let len = record_len::<F>();
    let mut buf = [0xFFu8; RECORD_MAX];
    let Some(seq) = pos.seq.checked_add(1) else {
        return renumber(flash, layout, pos, state);
    };
    state.encode(seq, &mut buf);
    let (bank, index) = if pos.next < per_bank::<F>(layout) {
        (pos.bank, pos.next)
    } else {
        let other = 1 - pos.bank;
        let from = layout.state.offset + other * layout.bank_size();
        flash
            .erase(from, from + layout.bank_size())
            .map_err(Error::flash)?;
        (other, 0)
    };
    flash
        .write(record_offset::<F>(layout, bank, index), &buf[..len])
        .map_err(Error::flash)?;
    *pos = LogPos {
        bank,
        next: index + 1,
        seq,
    };
    Ok(())
}

/// [`append`] when the sequence number has run out (a log written four
/// billion times, or a damaged one whose valid record claims `u32::MAX`):
/// writes `state` as record 1 at the start of the other half, then erases
/// this half, whose records would otherwise outrank it. A power cut before
/// that erase completes leaves the old newest record in charge (the append
/// is lost, as with any cut before a write completes) and the next append
/// renumbers again; after it, only record 1 remains.
fn renumber<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    pos: &mut LogPos,
    state: &State,
) -> Result<(), Error> {
    let len = record_len::<F>();
    let mut buf = [0xFFu8; RECORD_MAX];
    state.encode(1, &mut buf);
    let other = 1 - pos.bank;
    let half = |bank: u32| layout.state.offset + bank * layout.bank_size();
    flash
        .erase(half(other), half(other) + layout.bank_size())
        .map_err(Error::flash)?;
    flash
        .write(record_offset::<F>(layout, other, 0), &buf[..len])
        .map_err(Error::flash)?;
    flash
        .erase(half(pos.bank), half(pos.bank) + layout.bank_size())
        .map_err(Error::flash)?;
    *pos = LogPos {
        bank: other,
        next: 1,
        seq: 1,
    };
    Ok(())
}

/// Erases both halves of the state log (not the TrustRoot copies) and writes
/// `state` as its first record.
pub(crate) fn format<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    state: &State,
) -> Result<LogPos, Error> {
    flash
        .erase(
            layout.state.offset,
            layout.state.offset + 2 * layout.bank_size(),
        )
        .map_err(Error::flash)?;
    let mut pos = LogPos {
        bank: 0,
        next: 0,
        seq: 0,
    };
    append(flash, layout, &mut pos, state)?;
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let slot_a = SlotRecord {
            manifest_digest: Digest::from_bytes([7; 32]),
            version: Version::new(1, 2, 3),
            security_version: SecurityVersion(3),
        };
        let trust = TrustRef {
            copy: 1,
            version: 4,
            len: 321,
            digest: Digest::from_bytes([5; 32]),
            expires_at: UnixTime(1_800_000_000),
        };
        let mut s = State::factory(slot_a, trust);
        let name = Name::new(&ReleaseId::new("fw-1.2.3").unwrap());
        s.trial = Some(Trial {
            slot: Slot::B,
            attempts_left: 2,
            release: name,
        });
        s.slots[1] = Some(SlotRecord {
            manifest_digest: Digest::from_bytes([8; 32]),
            version: Version::new(1, 3, 0),
            security_version: SecurityVersion(4),
        });
        s.server_ahead = 77;
        s.install = Some(Install {
            slot: Slot::B,
            release: name,
            manifest_digest: Digest::from_bytes([9; 32]),
            next_chunk: 17,
        });
        s.push_report(
            ReportKind::RolledBack,
            name,
            ReportDetail::AttemptsExhausted,
        );
        s.time_floor = UnixTime(1_700_000_000);
        s
    }

    #[test]
    fn record_round_trips_and_rejects_any_flipped_bit() {
        let s = sample();
        let mut buf = [0xFF; RECORD_MAX];
        s.encode(42, &mut buf);
        assert_eq!(State::decode(&buf[..RAW_LEN]), Some((42, s)));
        for i in 0..RAW_LEN {
            let mut bad = buf;
            bad[i] ^= 0x10;
            assert_eq!(State::decode(&bad[..RAW_LEN]), None, "flip at byte {i}");
        }
    }

    /// Found by the `device_state` fuzz target: a valid record with sequence
    /// number `u32::MAX` made the next append overflow (a panic in a debug
    /// build; in release the new record, numbered 0, lost to the old one).
    #[cfg(feature = "sim")]
    #[test]
    fn a_log_whose_sequence_ran_out_starts_again_at_one_and_keeps_the_newest_state() {
        use crate::layout::Partition;
        let layout = Layout {
            state: Partition::new(0, 8192, 1024),
            slot_a: Partition::new(8192, 16384, 1024),
            slot_b: Partition::new(24576, 16384, 1024),
            manifest_area: 1024,
            trust_area: 1024,
        };
        let mut flash = crate::sim::SimFlash::<4, 1024>::uniform(40);
        let mut pos = format(&mut flash, &layout, &sample()).unwrap();
        pos.seq = u32::MAX - 1;
        let mut s = sample();
        s.server_ahead = 1;
        append(&mut flash, &layout, &mut pos, &s).unwrap();
        assert_eq!(load(&mut flash, &layout).unwrap().1.seq, u32::MAX);
        // The next append renumbers instead of overflowing.
        s.server_ahead = 2;
        append(&mut flash, &layout, &mut pos, &s).unwrap();
        let (loaded, at) = load(&mut flash, &layout).unwrap();
        assert_eq!(
            (loaded.server_ahead, at.seq),
            (2, 1),
            "the newest state wins"
        );
        s.server_ahead = 3;
        append(&mut flash, &layout, &mut pos, &s).unwrap();
        let (loaded, at) = load(&mut flash, &layout).unwrap();
        assert_eq!((loaded.server_ahead, at.seq), (3, 2));
    }

    #[test]
    fn report_queue_drops_oldest_when_full() {
        let mut s = sample();
        let name = Name::new(&ReleaseId::new("x").unwrap());
        for _ in 0..MAX_REPORTS + 2 {
            s.push_report(ReportKind::Installed, name, ReportDetail::None);
        }
        let mut ids: [u32; MAX_REPORTS] = core::array::from_fn(|i| s.reports[i].unwrap().id);
        ids.sort_unstable();
        assert_eq!(ids, [4, 5, 6, 7]);
    }
}

/// The state record's reference vector: `tests/vectors/state-record.bin` is
/// [`State::encode`] of a fully populated state (every optional part
/// present, a report of each kind) with sequence number 7, before padding.
/// Regenerate only after a deliberate format change (a new `MAGIC`):
/// `ALOFT_WRITE_VECTORS=1 cargo test -p aloft-device --lib state::vectors`.
#[cfg(test)]
mod vectors {
    extern crate std;

    use super::*;

    const VECTOR: &[u8] = include_bytes!("../tests/vectors/state-record.bin");

    fn populated() -> State {
        let name = |s: &str| Name::new(&ReleaseId::new(s).unwrap());
        let slot = |d: u8, v: (u32, u32, u32), sv: u32| SlotRecord {
            manifest_digest: Digest::from_bytes([d; 32]),
            version: Version::new(v.0, v.1, v.2),
            security_version: SecurityVersion(sv),
        };
        let trust = TrustRef {
            copy: 1,
            version: 3,
            len: 0x0123,
            digest: Digest::from_bytes([0xD3; 32]),
            expires_at: UnixTime(0x0102_0304_0506_0708),
        };
        let mut s = State::factory(slot(0xA1, (1, 2, 3), 2), trust);
        s.active = Slot::A;
        s.booted = Slot::B;
        s.confirmed = false;
        s.trial = Some(Trial {
            slot: Slot::B,
            attempts_left: 2,
            release: name("sensor-1.3.0"),
        });
        s.slots[1] = Some(slot(0xB2, (1, 3, 0), 3));
        s.security_floor = SecurityVersion(2);
        s.time_floor = UnixTime(1_700_000_000);
        s.server_ahead = 600;
        s.boot_count = 41;
        s.install = Some(Install {
            slot: Slot::B,
            release: name("sensor-1.3.0"),
            manifest_digest: Digest::from_bytes([0xB2; 32]),
            next_chunk: 0x0a0b,
        });
        s.next_report_id = 100;
        for (kind, detail, release) in [
            (ReportKind::Installed, ReportDetail::None, "sensor-1.3.0"),
            (ReportKind::Confirmed, ReportDetail::None, "sensor-1.2.3"),
            (
                ReportKind::RolledBack,
                ReportDetail::AttemptsExhausted,
                "sensor-1.2.4",
            ),
            (ReportKind::InstallFailed, ReportDetail::DigestMismatch, "x"),
        ] {
            s.push_report(kind, name(release), detail);
        }
        s
    }

    #[test]
    fn state_record_matches_its_vector_byte_for_byte() {
        let state = populated();
        let mut buf = [0xFF; RECORD_MAX];
        state.encode(7, &mut buf);
        let encoded = &buf[..RAW_LEN];
        if std::env::var_os("ALOFT_WRITE_VECTORS").is_some_and(|v| v == "1") {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/vectors/state-record.bin");
            std::fs::write(path, encoded).unwrap();
            return;
        }
        assert_eq!(VECTOR.len(), RAW_LEN, "the record length changed");
        assert!(
            encoded == VECTOR,
            "the state record encoding changed; if deliberate, bump MAGIC, regenerate with \
             ALOFT_WRITE_VECTORS=1 and say why in the commit"
        );
        assert_eq!(State::decode(VECTOR), Some((7, state)));
        // The magic leads, the CRC-32 of the rest closes the record.
        assert_eq!(VECTOR[..4], MAGIC.to_le_bytes());
        assert_eq!(
            VECTOR[RAW_LEN - 4..],
            crc32(&VECTOR[..RAW_LEN - 4]).to_le_bytes()
        );
    }
}
