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
use aloft_protocol::{Digest, ReleaseId, SecurityVersion, UnixTime};
use embedded_storage::nor_flash::NorFlash;

use crate::crc::crc32;
use crate::layout::{Layout, MAX_WRITE_SIZE, Slot};
use crate::{Error, flash};

/// Most reports the state holds; when full, the oldest is dropped.
pub const MAX_REPORTS: usize = 4;
/// Longest release id stored (as [`aloft_protocol::types::MAX_ID_LEN`]).
const MAX_NAME: usize = 64;
const MAGIC: u32 = 0xA10F_0001;

const NAME_LEN: usize = 1 + MAX_NAME;
const TRIAL_LEN: usize = 1 + 1 + 1 + 4 + NAME_LEN;
const INSTALL_LEN: usize = 1 + 1 + NAME_LEN + 32 + 4;
const REPORT_LEN: usize = 1 + 4 + 1 + 1 + NAME_LEN;
/// Encoded record length before padding, CRC included.
pub(crate) const RAW_LEN: usize =
    4 + 4 + 3 + TRIAL_LEN + 4 + 8 + 4 + 4 + 2 * 33 + INSTALL_LEN + MAX_REPORTS * REPORT_LEN + 4;
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
    pub security_version: SecurityVersion,
    pub release: Name,
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
    pub boot_count: u32,
    pub next_report_id: u32,
    /// Manifest digest each slot must hold to be bootable (None: nothing
    /// bootable there).
    pub slot_manifest: [Option<Digest>; 2],
    pub install: Option<Install>,
    pub reports: [Option<StoredReport>; MAX_REPORTS],
}

impl State {
    pub(crate) fn factory(manifest_digest: Digest, floor: SecurityVersion) -> Self {
        Self {
            active: Slot::A,
            booted: Slot::A,
            confirmed: true,
            trial: None,
            security_floor: floor,
            time_floor: UnixTime(0),
            boot_count: 0,
            next_report_id: 1,
            slot_manifest: [Some(manifest_digest), None],
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
                w.u32(t.security_version.0);
                w.name(&t.release);
            }
            None => w.zeros(TRIAL_LEN),
        }
        w.u32(self.security_floor.0);
        w.u64(self.time_floor.0);
        w.u32(self.boot_count);
        w.u32(self.next_report_id);
        for d in &self.slot_manifest {
            match d {
                Some(d) => {
                    w.u8(1);
                    w.bytes(d.as_bytes());
                }
                None => w.zeros(33),
            }
        }
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
                security_version: SecurityVersion(r.u32()?),
                release: r.name()?,
            })
        } else {
            r.skip(TRIAL_LEN - 1);
            None
        };
        let security_floor = SecurityVersion(r.u32()?);
        let time_floor = UnixTime(r.u64()?);
        let boot_count = r.u32()?;
        let next_report_id = r.u32()?;
        let mut slot_manifest = [None; 2];
        for d in &mut slot_manifest {
            let present = r.flag()?;
            let bytes = r.digest()?;
            *d = present.then_some(bytes);
        }
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
            boot_count,
            next_report_id,
            slot_manifest,
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
    let seq = pos.seq + 1;
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

/// Erases the whole state partition and writes `state` as its first record.
pub(crate) fn format<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    state: &State,
) -> Result<LogPos, Error> {
    flash
        .erase(layout.state.offset, layout.state.end())
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
        let mut s = State::factory(Digest::from_bytes([7; 32]), SecurityVersion(3));
        let name = Name::new(&ReleaseId::new("fw-1.2.3").unwrap());
        s.trial = Some(Trial {
            slot: Slot::B,
            attempts_left: 2,
            security_version: SecurityVersion(4),
            release: name,
        });
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
