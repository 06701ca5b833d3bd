//! Counting the rows of each table in a PostgreSQL custom-format archive, as it streams.
//!
//! Job: [`ArchiveCounter`] is fed every byte of `pg_dump --format=custom --compress=0` output,
//! in pieces of any size, as the bytes pass by on their way elsewhere, and reports the rows of
//! every `TABLE DATA` entry. Counting the archive itself means the counts describe exactly the
//! dumped data, without a separate `SELECT count(*)` per table.
//!
//! The format, as PostgreSQL's `pg_backup_archiver.c` (`ReadHead`, `ReadToc`, `ReadInt`,
//! `ReadStr`, `ReadOffset`) and `pg_backup_custom.c` (`_ReadExtraToc`, `_StartData`,
//! `_EndData`, `_StartLOs`, `_skipData`, `_skipLOs`) read and write it, for archive versions
//! 1.12 to 1.16 (PostgreSQL 11 to 17):
//! - An *int* is a sign byte (non-zero: negative) and `intSize` bytes of magnitude, least
//!   significant first. A *string* is an int length (-1: null) and that many bytes.
//! - Header: `PGDMP`; bytes major, minor, revision, `intSize`, `offSize`, format (1: custom);
//!   the compression (1.15 on: a byte, the algorithm, 0 = none; before: an int level, 0 =
//!   none); seven ints of creation time; strings database name, server version, pg_dump
//!   version.
//! - TOC: an int count, then per entry: ints dump id and had-dumper; strings table oid, oid,
//!   tag, desc; an int section; strings defn, drop statement, copy statement, namespace,
//!   tablespace, table access method (1.14 on); an int relkind (1.16 on); strings owner and
//!   with-oids; dependency strings up to a null one; the data offset (a flag byte, 3 = the
//!   entry has no data, then `offSize` bytes).
//! - Data blocks until the stream ends: a type byte (1: data, 3: large objects) and an int
//!   dump id. Data is chunks, each an int length and that many bytes, up to a zero length.
//!   Large objects are, per object, an int OID and chunks as above, up to a zero OID.
//!
//! Invariants:
//! - A table's rows are the raw newlines in its COPY text data (COPY escapes newlines inside
//!   values), less the end-of-copy line `\.` and the two empty lines that pg_dump writes after
//!   the rows (`dumpTableData_copy`). A `\.` line cannot be a row: COPY writes a value `\.`
//!   as `\\.`.
//! - Streaming in bounded memory: data chunks are scanned as they pass, never kept. Only
//!   dump ids, and the tag and namespace of `TABLE DATA` entries, are kept; every other string
//!   is skipped as it passes. Absurd sizes are refused rather than trusted.
//! - Never panics and never fails while fed: the first problem (malformed, unsupported version
//!   or compression, or a stream ending part way through a structure or before a data block
//!   its TOC promised) is kept with its byte offset, later bytes are ignored, and
//!   [`ArchiveCounter::finish`] returns it.
//! - The result does not depend on how the stream is cut into pieces.

use std::collections::HashMap;

/// Archive minor versions read (major is 1): PostgreSQL 11 wrote 1.13, 12 to 15 1.14, 16 1.15,
/// 17 1.16; 1.12 is PostgreSQL 9.0 to 10 before the 2018 search_path fix.
const MINOR_VERSIONS: std::ops::RangeInclusive<u8> = 12..=16;
/// Most TOC entries accepted.
const MAX_TOC_ENTRIES: i64 = 10_000_000;
/// Longest tag, desc or namespace accepted (they are kept).
const MAX_NAME: usize = 1 << 20;
/// The archive format byte of a custom-format archive (`archCustom`).
const FORMAT_CUSTOM: u8 = 1;
/// Block types (`BLK_DATA`, `BLK_BLOBS`).
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
/// Data offset flags (`K_OFFSET_POS_NOT_SET`, `K_OFFSET_POS_SET`, `K_OFFSET_NO_DATA`).
const OFFSET_FLAGS: std::ops::RangeInclusive<u8> = 1..=3;
const OFFSET_NO_DATA: u8 = 3;
/// `\.\n\n\n`, the end of a table's COPY data, as the low 5 bytes of a big-endian u64.
const END_OF_COPY: u64 = u64::from_be_bytes([0, 0, 0, b'\\', b'.', b'\n', b'\n', b'\n']);

/// Rows of one table's data in an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRows {
    pub schema: String,
    pub table: String,
    pub rows: u64,
}

/// What the next field of the archive is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Magic,
    /// Major, minor, revision.
    Version,
    /// `intSize`, `offSize`, format.
    Sizes,
    Compression,
    /// One of the seven ints of the creation time.
    Date(u8),
    /// One of the three header strings.
    HeaderStr(u8),
    TocCount,
    Entry(Field),
    BlockType,
    /// The dump id of a block of this type.
    BlockId(u8),
    /// The length of a table data chunk (0 ends the block); also while its bytes pass.
    ChunkLen,
    /// A large object's OID (0 ends the block).
    LoOid,
    /// The length of a large-object chunk (0 ends the object); also while its bytes pass.
    LoChunkLen,
}

/// The fields of a TOC entry, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    DumpId,
    HadDumper,
    TableOid,
    Oid,
    Tag,
    Desc,
    Section,
    Defn,
    DropStmt,
    CopyStmt,
    Namespace,
    Tablespace,
    TableAm,
    Relkind,
    Owner,
    WithOids,
    Deps,
    Offset,
}

impl Field {
    /// The field after this one in an archive of minor version `minor` (`Deps` repeats until
    /// a null string, `Offset` ends the entry: both are handled by the caller).
    fn after(self, minor: u8) -> Field {
        use Field::*;
        match self {
            DumpId => HadDumper,
            HadDumper => TableOid,
            TableOid => Oid,
            Oid => Tag,
            Tag => Desc,
            Desc => Section,
            Section => Defn,
            Defn => DropStmt,
            DropStmt => CopyStmt,
            CopyStmt => Namespace,
            Namespace => Tablespace,
            Tablespace if minor >= 14 => TableAm,
            Tablespace | TableAm if minor >= 16 => Relkind,
            Tablespace | TableAm | Relkind => Owner,
            Owner => WithOids,
            WithOids | Deps => Deps,
            Offset => Offset,
        }
    }
}

/// How a step's field is encoded.
enum Kind {
    Bytes(usize),
    Int,
    Str,
}

/// The token being read.
enum Tok {
    /// A fixed-size field (bytes, an int, or a string's length) gathered across pieces.
    Fixed {
        buf: [u8; 16],
        have: usize,
        need: usize,
    },
    /// A string's bytes; kept when `kept` is `Some`.
    StrBody {
        len: usize,
        left: usize,
        kept: Option<Vec<u8>>,
    },
    /// A data chunk's bytes, scanned as they pass.
    Chunk { left: u64 },
}

/// A TOC entry's dump id, as far as data blocks are concerned.
struct Slot {
    /// Its index in `tables` when it is a `TABLE DATA` entry.
    table: Option<usize>,
    /// The TOC says a data block follows.
    promised: bool,
    /// Its data block was seen.
    seen: bool,
}

/// The TOC entry being read.
#[derive(Default)]
struct Pending {
    dump_id: i32,
    tag: Vec<u8>,
    table_data: bool,
    copy: bool,
    namespace: Vec<u8>,
}

struct Table {
    rows: TableRows,
    /// Its data is COPY text (the entry has a copy statement), not INSERT statements.
    copy: bool,
}

/// Counts the rows of every table in a custom-format archive fed to it piece by piece.
pub struct ArchiveCounter {
    /// Bytes consumed so far.
    offset: u64,
    /// Where the current step's field starts.
    start: u64,
    error: Option<String>,
    step: Step,
    tok: Tok,
    minor: u8,
    int_size: usize,
    off_size: usize,
    toc_count: i64,
    toc_read: i64,
    entry: Pending,
    slots: HashMap<i32, Slot>,
    tables: Vec<Table>,
    /// The table whose data block is being read.
    counting: Option<usize>,
    newlines: u64,
    data_len: u64,
    /// The last (up to 8) data bytes of the block, the last one lowest.
    tail: u64,
}

impl Default for ArchiveCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl ArchiveCounter {
    pub fn new() -> Self {
        let mut counter = ArchiveCounter {
            offset: 0,
            start: 0,
            error: None,
            step: Step::Magic,
            tok: Tok::Chunk { left: 0 },
            minor: 0,
            int_size: 4,
            off_size: 8,
            toc_count: 0,
            toc_read: 0,
            entry: Pending::default(),
            slots: HashMap::new(),
            tables: Vec::new(),
            counting: None,
            newlines: 0,
            data_len: 0,
            tail: 0,
        };
        counter.begin(Step::Magic);
        counter
    }

    /// Feeds the next bytes of the archive, split anywhere. Never panics, never fails: the first
    /// problem is recorded, and later bytes are ignored.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() && self.error.is_none() {
            rest = rest.get(self.whole_data_chunks(rest)..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            match self.advance(rest) {
                Ok(used) => rest = rest.get(used..).unwrap_or_default(),
                Err(e) => self.error = Some(e),
            }
        }
    }

    /// The rows of every `TABLE DATA` entry, in archive order; an error (a plain message saying
    /// what was wrong and at which byte offset) when the archive was malformed, of an
    /// unsupported version or compression, or ended part way through a structure.
    pub fn finish(self) -> Result<Vec<TableRows>, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let between_blocks =
            self.step == Step::BlockType && matches!(self.tok, Tok::Fixed { have: 0, .. });
        if !between_blocks {
            return Err(format!(
                "the archive ends at byte {} inside {} that starts at byte {}",
                self.offset,
                self.describe(),
                self.start
            ));
        }
        let missing = self
            .slots
            .iter()
            .filter(|(_, s)| s.promised && !s.seen)
            .map(|(id, s)| (*id, s.table))
            .min();
        if let Some((id, table)) = missing {
            let name = table
                .and_then(|t| self.tables.get(t))
                .map(|t| format!(" (table {}.{})", t.rows.schema, t.rows.table))
                .unwrap_or_default();
            return Err(format!(
                "the archive ends at byte {} before the data block of dump id {id}{name} that its TOC promises",
                self.offset
            ));
        }
        Ok(self.tables.into_iter().map(|t| t.rows).collect())
    }

    /// An error about the field that starts at `self.start`.
    fn fail(&self, what: impl std::fmt::Display) -> String {
        format!("{what} (at byte {})", self.start)
    }

    fn describe(&self) -> String {
        match self.step {
            Step::Magic
            | Step::Version
            | Step::Sizes
            | Step::Compression
            | Step::Date(_)
            | Step::HeaderStr(_) => "the header".into(),
            Step::TocCount => "the TOC".into(),
            Step::Entry(f) => format!(
                "TOC entry {} of {} ({f:?})",
                self.toc_read + 1,
                self.toc_count
            ),
            Step::BlockType | Step::BlockId(_) => "a data block header".into(),
            Step::ChunkLen => "a table data block".into(),
            Step::LoOid | Step::LoChunkLen => "a large-object block".into(),
        }
    }

    fn kind(&self, step: Step) -> Kind {
        match step {
            Step::Magic => Kind::Bytes(5),
            Step::Version | Step::Sizes => Kind::Bytes(3),
            Step::Compression if self.minor >= 15 => Kind::Bytes(1),
            Step::BlockType => Kind::Bytes(1),
            Step::Entry(Field::Offset) => Kind::Bytes(1 + self.off_size),
            Step::HeaderStr(_) => Kind::Str,
            Step::Entry(Field::DumpId | Field::HadDumper | Field::Section | Field::Relkind) => {
                Kind::Int
            }
            Step::Entry(_) => Kind::Str,
            Step::Compression
            | Step::Date(_)
            | Step::TocCount
            | Step::BlockId(_)
            | Step::ChunkLen
            | Step::LoOid
            | Step::LoChunkLen => Kind::Int,
        }
    }

    /// Starts reading `step`'s field at the current offset.
    fn begin(&mut self, step: Step) {
        self.step = step;
        self.start = self.offset;
        let need = match self.kind(step) {
            Kind::Bytes(n) => n,
            Kind::Int | Kind::Str => 1 + self.int_size,
        };
        self.tok = Tok::Fixed {
            buf: [0; 16],
            have: 0,
            need,
        };
    }

    /// Consumes a prefix of `input` (at least one byte) and returns its length.
    fn advance(&mut self, input: &[u8]) -> Result<usize, String> {
        match &mut self.tok {
            Tok::Fixed { buf, have, need } => {
                let (have_now, need) = (*have, *need);
                if have_now == 0 && input.len() >= need {
                    // The whole field is in this piece: no copy.
                    let (field, _) = input.split_at(need);
                    self.offset += need as u64;
                    self.on_fixed(field)?;
                    return Ok(need);
                }
                let n = (need - have_now).min(input.len());
                let (part, _) = input.split_at(n);
                let dst = buf
                    .get_mut(have_now..have_now + n)
                    .ok_or_else(|| "internal error: field buffer overflow".to_string())?;
                dst.copy_from_slice(part);
                *have += n;
                self.offset += n as u64;
                if have_now + n == need {
                    let field = *buf;
                    self.on_fixed(field.get(..need).unwrap_or_default())?;
                }
                Ok(n)
            }
            Tok::StrBody { len, left, kept } => {
                let n = (*left).min(input.len());
                let (part, _) = input.split_at(n);
                if let Some(k) = kept.as_mut() {
                    k.extend_from_slice(part);
                }
                *left -= n;
                self.offset += n as u64;
                if *left == 0 {
                    let (len, kept) = (*len, kept.take().unwrap_or_default());
                    self.on_str(Some(len), kept)?;
                }
                Ok(n)
            }
            Tok::Chunk { left } => {
                let n = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                *left -= n as u64;
                let done = *left == 0;
                let (data, _) = input.split_at(n);
                self.offset += n as u64;
                if self.counting.is_some() {
                    self.scan(data);
                }
                if done {
                    self.begin(self.step);
                }
                Ok(n)
            }
        }
    }

    /// The common case, without the general path's per-field steps: pg_dump writes each row
    /// as its own data chunk, so a table is millions of small chunks. Counts the whole chunks
    /// (a positive int length, then that many bytes) that lie entirely within `input` while a
    /// table's data is being read, and returns the bytes used; stops at anything else (a chunk
    /// cut by the piece's end, the block's end, a length to refuse), which the general path
    /// then reads.
    fn whole_data_chunks(&mut self, input: &[u8]) -> usize {
        if self.step != Step::ChunkLen
            || self.counting.is_none()
            || !matches!(self.tok, Tok::Fixed { have: 0, .. })
        {
            return 0;
        }
        let head = 1 + self.int_size;
        let mut at = 0;
        // Newline bytes among the lengths, which the one count over the whole span takes in.
        let mut in_lengths = 0u64;
        let mut data_len = 0u64;
        // The last chunk of 8 bytes or more, not yet folded into `tail`: only the chunks
        // after it can change the tail.
        let mut last_long: Option<&[u8]> = None;
        while let Some((&sign, magnitude)) = input.get(at..at + head).and_then(|h| h.split_first())
        {
            let len = magnitude
                .iter()
                .enumerate()
                .fold(0u64, |v, (i, &b)| v | u64::from(b) << (8 * i));
            if sign != 0 || len == 0 || len > i32::MAX as u64 {
                break;
            }
            let start = at + head;
            let Some(data) = input.get(start..start + len as usize) else {
                break;
            };
            in_lengths += magnitude.iter().filter(|&&b| b == b'\n').count() as u64;
            data_len += len;
            if data.len() >= 8 {
                last_long = Some(data);
            } else {
                if let Some(long) = last_long.take() {
                    self.push_tail(long);
                }
                self.push_tail(data);
            }
            at = start + data.len();
        }
        if at > 0 {
            if let Some(long) = last_long {
                self.push_tail(long);
            }
            let newlines = memchr::memchr_iter(b'\n', &input[..at]).count() as u64;
            self.newlines += newlines - in_lengths;
            self.data_len += data_len;
            self.offset += at as u64;
            self.begin(Step::ChunkLen);
        }
        at
    }

    /// Counts the newlines of a table's data and remembers its last bytes.
    fn scan(&mut self, data: &[u8]) {
        self.newlines += memchr::memchr_iter(b'\n', data).count() as u64;
        self.data_len += data.len() as u64;
        self.push_tail(data);
    }

    /// Shifts the last (up to) 8 bytes of `data` into `tail`.
    fn push_tail(&mut self, data: &[u8]) {
        for &b in &data[data.len().saturating_sub(8)..] {
            self.tail = (self.tail << 8) | u64::from(b);
        }
    }

    /// Decodes an int (`ReadInt`); values outside C `int` are refused, as no pg_dump writes them.
    fn int(&self, b: &[u8]) -> Result<i64, String> {
        let (sign, magnitude) = b
            .split_first()
            .ok_or_else(|| "internal error: empty int".to_string())?;
        let mut v: u64 = 0;
        for (i, &byte) in magnitude.iter().enumerate() {
            v |= u64::from(byte) << (8 * i);
        }
        let v = i64::try_from(v).unwrap_or(i64::MAX);
        let v = if *sign != 0 { -v } else { v };
        if i32::try_from(v).is_err() {
            return Err(self.fail(format!("integer {v} out of range")));
        }
        Ok(v)
    }

    fn on_fixed(&mut self, b: &[u8]) -> Result<(), String> {
        match self.kind(self.step) {
            Kind::Bytes(_) => self.on_bytes(b),
            Kind::Int => {
                let v = self.int(b)?;
                self.on_int(v)
            }
            Kind::Str => {
                let len = self.int(b)?;
                if len == -1 {
                    return self.on_str(None, Vec::new());
                }
                let len =
                    usize::try_from(len).map_err(|_| self.fail(format!("string length {len}")))?;
                let keep = match self.step {
                    Step::Entry(Field::Tag | Field::Desc) => true,
                    Step::Entry(Field::Namespace) => self.entry.table_data,
                    _ => false,
                };
                if keep && len > MAX_NAME {
                    return Err(self.fail(format!(
                        "a {} of {len} bytes (at most {MAX_NAME} accepted)",
                        self.describe()
                    )));
                }
                if len == 0 {
                    return self.on_str(Some(0), Vec::new());
                }
                self.tok = Tok::StrBody {
                    len,
                    left: len,
                    kept: keep.then(|| Vec::with_capacity(len)),
                };
                Ok(())
            }
        }
    }

    fn on_bytes(&mut self, b: &[u8]) -> Result<(), String> {
        match (self.step, b) {
            (Step::Magic, _) => {
                if b != b"PGDMP" {
                    return Err(self.fail(
                        "not a pg_dump custom-format archive: it does not start with PGDMP",
                    ));
                }
                self.begin(Step::Version);
            }
            (Step::Version, &[major, minor, rev]) => {
                if major != 1 || !MINOR_VERSIONS.contains(&minor) {
                    return Err(self.fail(format!(
                        "unsupported archive version {major}.{minor}.{rev}: versions 1.{} to 1.{} \
                         (PostgreSQL 11 to 17) are read",
                        MINOR_VERSIONS.start(),
                        MINOR_VERSIONS.end()
                    )));
                }
                self.minor = minor;
                self.begin(Step::Sizes);
            }
            (Step::Sizes, &[int_size, off_size, format]) => {
                if !(1..=8).contains(&int_size) || !(1..=8).contains(&off_size) {
                    return Err(self.fail(format!(
                        "unsupported integer size {int_size} or offset size {off_size}"
                    )));
                }
                if format != FORMAT_CUSTOM {
                    return Err(self.fail(format!(
                        "archive format {format} is not the custom format ({FORMAT_CUSTOM})"
                    )));
                }
                self.int_size = usize::from(int_size);
                self.off_size = usize::from(off_size);
                self.begin(Step::Compression);
            }
            (Step::Compression, &[algorithm]) => {
                if algorithm != 0 {
                    let name = match algorithm {
                        1 => "gzip",
                        2 => "lz4",
                        3 => "zstd",
                        _ => "an unknown algorithm",
                    };
                    return Err(self.fail(format!(
                        "the archive is compressed with {name}: only uncompressed archives \
                         (pg_dump --compress=0) can be counted"
                    )));
                }
                self.begin(Step::Date(0));
            }
            (Step::Entry(Field::Offset), [flag, ..]) => {
                if !OFFSET_FLAGS.contains(flag) {
                    return Err(self.fail(format!("data offset flag {flag}")));
                }
                self.end_entry(*flag != OFFSET_NO_DATA);
            }
            (Step::BlockType, &[t]) => {
                if t != BLK_DATA && t != BLK_BLOBS {
                    return Err(self.fail(format!("unknown data block type {t}")));
                }
                self.begin(Step::BlockId(t));
            }
            _ => return Err(self.fail("internal error: unexpected field")),
        }
        Ok(())
    }

    fn on_int(&mut self, v: i64) -> Result<(), String> {
        match self.step {
            Step::Compression => {
                if v != 0 {
                    return Err(self.fail(format!(
                        "the archive is compressed (level {v}): only uncompressed archives \
                         (pg_dump --compress=0) can be counted"
                    )));
                }
                self.begin(Step::Date(0));
            }
            Step::Date(i) if i < 6 => self.begin(Step::Date(i + 1)),
            Step::Date(_) => self.begin(Step::HeaderStr(0)),
            Step::TocCount => {
                if !(0..=MAX_TOC_ENTRIES).contains(&v) {
                    return Err(self.fail(format!(
                        "TOC count {v} (at most {MAX_TOC_ENTRIES} accepted)"
                    )));
                }
                self.toc_count = v;
                self.next_entry();
            }
            Step::Entry(Field::DumpId) => {
                let id = i32::try_from(v).unwrap_or(0);
                if id <= 0 {
                    return Err(self.fail(format!("TOC entry dump id {v}")));
                }
                if self.slots.contains_key(&id) {
                    return Err(self.fail(format!("a second TOC entry with dump id {id}")));
                }
                self.entry = Pending {
                    dump_id: id,
                    ..Pending::default()
                };
                self.next_field();
            }
            Step::Entry(_) => self.next_field(),
            Step::BlockId(t) => self.start_block(t, v)?,
            Step::ChunkLen => match v {
                0 => {
                    self.end_table_data();
                    self.begin(Step::BlockType);
                }
                1.. => self.tok = Tok::Chunk { left: v as u64 },
                _ => return Err(self.fail(format!("data chunk length {v}"))),
            },
            // OIDs above 2^31 are written as negative ints: any non-zero value is an OID.
            Step::LoOid if v == 0 => self.begin(Step::BlockType),
            Step::LoOid => self.begin(Step::LoChunkLen),
            Step::LoChunkLen => match v {
                0 => self.begin(Step::LoOid),
                1.. => self.tok = Tok::Chunk { left: v as u64 },
                _ => return Err(self.fail(format!("large-object chunk length {v}"))),
            },
            _ => return Err(self.fail("internal error: unexpected int")),
        }
        Ok(())
    }

    /// A string field ended: `len` is `None` for a null string; `kept` holds its bytes if kept.
    fn on_str(&mut self, len: Option<usize>, kept: Vec<u8>) -> Result<(), String> {
        match self.step {
            Step::HeaderStr(i) if i < 2 => self.begin(Step::HeaderStr(i + 1)),
            Step::HeaderStr(_) => self.begin(Step::TocCount),
            Step::Entry(Field::Deps) if len.is_none() => self.begin(Step::Entry(Field::Offset)),
            Step::Entry(field) => {
                match field {
                    Field::Tag => self.entry.tag = kept,
                    Field::Desc => self.entry.table_data = kept == b"TABLE DATA",
                    Field::CopyStmt => self.entry.copy = len.unwrap_or(0) > 0,
                    Field::Namespace => self.entry.namespace = kept,
                    _ => {}
                }
                self.next_field();
            }
            _ => return Err(self.fail("internal error: unexpected string")),
        }
        Ok(())
    }

    fn next_field(&mut self) {
        if let Step::Entry(f) = self.step {
            self.begin(Step::Entry(f.after(self.minor)));
        }
    }

    fn next_entry(&mut self) {
        if self.toc_read < self.toc_count {
            self.begin(Step::Entry(Field::DumpId));
        } else {
            self.begin(Step::BlockType);
        }
    }

    fn end_entry(&mut self, promised: bool) {
        let entry = std::mem::take(&mut self.entry);
        let table = entry.table_data.then(|| {
            self.tables.push(Table {
                rows: TableRows {
                    schema: String::from_utf8_lossy(&entry.namespace).into_owned(),
                    table: String::from_utf8_lossy(&entry.tag).into_owned(),
                    rows: 0,
                },
                copy: entry.copy,
            });
            self.tables.len() - 1
        });
        self.slots.insert(
            entry.dump_id,
            Slot {
                table,
                promised,
                seen: false,
            },
        );
        self.toc_read += 1;
        self.next_entry();
    }

    fn start_block(&mut self, block_type: u8, id: i64) -> Result<(), String> {
        let Some(slot) = i32::try_from(id).ok().and_then(|k| self.slots.get_mut(&k)) else {
            return Err(self.fail(format!(
                "a data block for dump id {id}, which has no TOC entry"
            )));
        };
        if slot.seen {
            return Err(self.fail(format!("a second data block for dump id {id}")));
        }
        slot.seen = true;
        let table = slot.table;
        match (block_type, table) {
            (BLK_BLOBS, Some(_)) => {
                Err(self.fail(format!("a large-object block for TABLE DATA entry {id}")))
            }
            (BLK_BLOBS, None) => {
                self.begin(Step::LoOid);
                Ok(())
            }
            (_, Some(t)) => {
                let insert = self.tables.get(t).is_some_and(|t| !t.copy);
                if insert {
                    return Err(self.fail(format!(
                        "the data of dump id {id} is INSERT statements (pg_dump --inserts), \
                         not COPY: its rows cannot be counted"
                    )));
                }
                self.counting = Some(t);
                self.newlines = 0;
                self.data_len = 0;
                self.tail = 0;
                self.begin(Step::ChunkLen);
                Ok(())
            }
            (_, None) => {
                self.counting = None;
                self.begin(Step::ChunkLen);
                Ok(())
            }
        }
    }

    /// A table's data block ended: its rows are its newlines, less pg_dump's `\.\n\n\n` when
    /// that ends the data on a line of its own.
    fn end_table_data(&mut self) {
        let Some(t) = self.counting.take() else {
            return;
        };
        let marker = self.tail & 0xff_ffff_ffff == END_OF_COPY
            && (self.data_len == 5 || (self.tail >> 40) & 0xff == u64::from(b'\n'));
        let rows = if marker {
            self.newlines.saturating_sub(3)
        } else {
            self.newlines
        };
        if let Some(table) = self.tables.get_mut(t) {
            table.rows.rows = rows;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes archives as `WriteHead`/`WriteToc`/`_StartData`/`_StartLOs` do.
    struct Writer {
        minor: u8,
        int_size: usize,
        out: Vec<u8>,
    }

    /// One TOC entry: dump id, desc, namespace, tag, whether a data block is promised, and the
    /// copy statement.
    struct Entry<'a> {
        id: i64,
        desc: &'a str,
        namespace: &'a str,
        tag: &'a str,
        data: bool,
        copy: Option<&'a str>,
    }

    impl Writer {
        fn new(minor: u8, int_size: usize) -> Self {
            Writer {
                minor,
                int_size,
                out: Vec::new(),
            }
        }

        fn int(&mut self, v: i64) {
            self.out.push(u8::from(v < 0));
            let m = v.unsigned_abs();
            for i in 0..self.int_size {
                self.out.push((m >> (8 * i)) as u8);
            }
        }

        fn str(&mut self, s: Option<&[u8]>) {
            match s {
                None => self.int(-1),
                Some(s) => {
                    self.int(s.len() as i64);
                    self.out.extend_from_slice(s);
                }
            }
        }

        fn s(&mut self, s: &str) {
            self.str(Some(s.as_bytes()));
        }

        /// The header, compressed at `level` (1.12 to 1.14) or with `algorithm` (1.15 on).
        fn header(&mut self, compression: u8) {
            self.out.extend_from_slice(b"PGDMP");
            self.out
                .extend_from_slice(&[1, self.minor, 0, self.int_size as u8, 8, 1]);
            if self.minor >= 15 {
                self.out.push(compression);
            } else {
                self.int(i64::from(compression));
            }
            for v in [5, 4, 3, 2, 1, 124, 0] {
                self.int(v);
            }
            self.s("db");
            self.s("15.4");
            self.s("15.4");
        }

        fn toc(&mut self, entries: &[Entry<'_>]) {
            self.int(entries.len() as i64);
            for e in entries {
                self.int(e.id);
                self.int(i64::from(e.data));
                self.s("1259");
                self.s("16384");
                self.s(e.tag);
                self.s(e.desc);
                self.int(2);
                self.s(&"CREATE FUNCTION f() -- a long body\n".repeat(50));
                self.s("");
                self.str(e.copy.map(str::as_bytes));
                self.s(e.namespace);
                self.s("");
                if self.minor >= 14 {
                    self.s("heap");
                }
                if self.minor >= 16 {
                    self.int(i64::from(b'r'));
                }
                self.s("postgres");
                self.s("false");
                self.s("7");
                self.s("8");
                self.str(None);
                // A pipe: the offset is not set (1), or there is no data (3).
                self.out.push(if e.data { 1 } else { 3 });
                self.out.extend_from_slice(&[0; 8]);
            }
        }

        fn data(&mut self, id: i64, chunks: &[&[u8]]) {
            self.out.push(BLK_DATA);
            self.int(id);
            for c in chunks {
                self.str(Some(c));
            }
            self.int(0);
        }

        fn blobs(&mut self, id: i64, objects: &[(i64, &[&[u8]])]) {
            self.out.push(BLK_BLOBS);
            self.int(id);
            for (oid, chunks) in objects {
                self.int(*oid);
                for c in *chunks {
                    self.str(Some(c));
                }
                self.int(0);
            }
            self.int(0);
        }
    }

    fn entry<'a>(id: i64, desc: &'a str, ns: &'a str, tag: &'a str, data: bool) -> Entry<'a> {
        Entry {
            id,
            desc,
            namespace: ns,
            tag,
            data,
            copy: (desc == "TABLE DATA").then_some("COPY t (a) FROM stdin;\n"),
        }
    }

    fn rows(schema: &str, table: &str, rows: u64) -> TableRows {
        TableRows {
            schema: schema.into(),
            table: table.into(),
            rows,
        }
    }

    /// An archive with schema entries, three tables (one empty, one with 3 rows in odd
    /// chunks, one with `big` rows and one more in a few chunks), and two large objects holding
    /// newlines.
    fn sample(minor: u8, int_size: usize, big: usize) -> Vec<u8> {
        let mut w = Writer::new(minor, int_size);
        w.header(0);
        w.toc(&[
            entry(1, "ENCODING", "", "ENCODING", false),
            entry(2, "SCHEMA", "", "Sales", false),
            entry(3, "TABLE", "Sales", "Order Lines", false),
            entry(10, "TABLE DATA", "Sales", "Order Lines", true),
            entry(11, "TABLE DATA", "public", "empty", true),
            entry(12, "BLOBS", "", "BLOBS", true),
            entry(13, "TABLE DATA", "public", "big", true),
            entry(14, "INDEX", "public", "big_pkey", false),
        ]);
        w.data(
            10,
            &[
                b"1\tline\\none\n",
                b"2\ttab\\there\\\\\n3\t",
                b"\\\\.\n",
                b"\\.\n\n\n",
            ],
        );
        w.data(11, &[b"\\.\n\n\n"]);
        w.blobs(12, &[(16400, &[b"a\nb\n", b"\n"]), (-5, &[b"\n\n"])]);
        let big = "row with some text\n".repeat(big);
        w.data(13, &[big.as_bytes(), b"last\n", b"\\.\n\n\n"]);
        w.out
    }

    fn sample_rows(big: u64) -> Vec<TableRows> {
        vec![
            rows("Sales", "Order Lines", 3),
            rows("public", "empty", 0),
            rows("public", "big", big + 1),
        ]
    }

    fn count(bytes: &[u8], piece: usize) -> Result<Vec<TableRows>, String> {
        let mut c = ArchiveCounter::new();
        for p in bytes.chunks(piece.max(1)) {
            c.feed(p);
        }
        c.finish()
    }

    #[test]
    fn every_supported_version_and_int_size_is_read() {
        for minor in 12..=16 {
            for int_size in [4, 8] {
                let archive = sample(minor, int_size, 10_000);
                assert_eq!(
                    count(&archive, archive.len()),
                    Ok(sample_rows(10_000)),
                    "1.{minor}, int size {int_size}"
                );
            }
        }
    }

    #[test]
    fn pieces_of_any_size_give_the_same_result() {
        for minor in [12, 14, 16] {
            let archive = sample(minor, 4, 10_000);
            for piece in [1, 2, 7, 4096] {
                assert_eq!(count(&archive, piece), Ok(sample_rows(10_000)), "{piece}");
            }
        }
    }

    /// Chunk lengths whose bytes are newlines (10, 266, 2570), the end marker cut across tiny
    /// chunks, and a long row after short ones: the whole-chunk path and the field-by-field
    /// path (small pieces) count the same.
    #[test]
    fn newline_bytes_in_lengths_and_a_split_marker_are_not_rows() {
        let rows_of = |n: usize| "x".repeat(n - 1) + "\n";
        let (r10, r266, r2570) = (rows_of(10), rows_of(266), rows_of(2570));
        let mut w = Writer::new(14, 4);
        w.header(0);
        w.toc(&[entry(10, "TABLE DATA", "public", "t", true)]);
        w.data(
            10,
            &[
                r10.as_bytes(),
                b"a\n",
                r266.as_bytes(),
                b"b",
                b"\n",
                r2570.as_bytes(),
                b"\\",
                b".\n",
                b"\n\n",
            ],
        );
        for piece in [w.out.len(), 1, 3, 64] {
            assert_eq!(
                count(&w.out, piece),
                Ok(vec![rows("public", "t", 5)]),
                "{piece}"
            );
        }
    }

    #[test]
    fn truncation_at_every_offset_is_an_error() {
        for minor in [13, 16] {
            let archive = sample(minor, 4, 3);
            for len in 0..archive.len() {
                let mut c = ArchiveCounter::new();
                if let Some(prefix) = archive.get(..len) {
                    c.feed(prefix);
                }
                let Err(err) = c.finish() else {
                    panic!("1.{minor} cut at {len} gave a count");
                };
                assert!(err.contains("ends at byte"), "{err}");
            }
        }
    }

    #[test]
    fn garbage_is_an_error_and_corruption_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        };
        let text = b"--\n-- PostgreSQL database dump\n--\n".to_vec();
        let mut magic_then_noise = b"PGDMP".to_vec();
        magic_then_noise.extend(random(4000));
        for garbage in [Vec::new(), random(10_000), text, magic_then_noise] {
            assert!(count(&garbage, 3).is_err());
        }
        // Every byte of a valid archive overwritten, one at a time: an error or a count, never
        // a panic.
        let archive = sample(16, 4, 3);
        for i in 0..archive.len() {
            for v in [0x00, 0x7f, 0xff] {
                let mut bad = archive.clone();
                if let Some(b) = bad.get_mut(i) {
                    *b = v;
                }
                let _ = count(&bad, 4096);
            }
        }
    }

    #[test]
    fn unsupported_versions_and_compression_are_refused() {
        for (version, want) in [([1u8, 11, 0], "version 1.11.0"), ([1, 17, 0], "1.17.0")] {
            let mut archive = sample(14, 4, 3);
            if let Some(v) = archive.get_mut(5..8) {
                v.copy_from_slice(&version);
            }
            let err = count(&archive, 4096).unwrap_err();
            assert!(err.contains(want) && err.contains("at byte 5"), "{err}");
        }
        for minor in [12, 14] {
            for level in [1, 6, 9] {
                let mut w = Writer::new(minor, 4);
                w.header(level);
                let err = count(&w.out, 1).unwrap_err();
                assert!(
                    err.contains(&format!("compressed (level {level})")),
                    "{err}"
                );
                assert!(err.contains("at byte 11"), "{err}");
            }
            // Z_DEFAULT_COMPRESSION.
            let mut w = Writer::new(minor, 4);
            w.header(0);
            w.out.truncate(11);
            w.int(-1);
            assert!(count(&w.out, 1).unwrap_err().contains("level -1"));
        }
        for minor in [15, 16] {
            for (algorithm, name) in [(1, "gzip"), (2, "lz4"), (3, "zstd"), (9, "unknown")] {
                let mut w = Writer::new(minor, 4);
                w.header(algorithm);
                let err = count(&w.out, 2).unwrap_err();
                assert!(err.contains(name) && err.contains("--compress=0"), "{err}");
            }
        }
        // Another format byte (tar = 3).
        let mut archive = sample(16, 4, 3);
        if let Some(b) = archive.get_mut(10) {
            *b = 3;
        }
        assert!(count(&archive, 9).unwrap_err().contains("format 3"));
    }

    #[test]
    fn a_block_for_an_unknown_or_repeated_entry_is_an_error() {
        let mut w = Writer::new(16, 4);
        w.header(0);
        w.toc(&[entry(10, "TABLE DATA", "public", "t", true)]);
        w.data(10, &[b"1\n"]);
        let mut unknown = w.out.clone();
        let at = w.out.len();
        w.data(10, &[b"2\n"]);
        let err = count(&w.out, 5).unwrap_err();
        assert!(err.contains("second data block for dump id 10"), "{err}");
        assert!(err.contains(&format!("at byte {}", at + 1)), "{err}");

        let mut u = Writer::new(16, 4);
        u.data(99, &[b"1\n"]);
        unknown.extend(u.out);
        let err = count(&unknown, 5).unwrap_err();
        assert!(err.contains("dump id 99, which has no TOC entry"), "{err}");

        let mut w = Writer::new(16, 4);
        w.header(0);
        w.toc(&[entry(10, "TABLE DATA", "public", "t", true)]);
        w.blobs(10, &[]);
        assert!(count(&w.out, 5).unwrap_err().contains("large-object block"));
    }

    #[test]
    fn a_missing_data_block_is_an_error_only_when_the_toc_promises_one() {
        let mut w = Writer::new(15, 4);
        w.header(0);
        w.toc(&[
            entry(10, "TABLE DATA", "public", "promised", true),
            entry(11, "TABLE DATA", "public", "no_data", false),
        ]);
        let toc_only = w.out.clone();
        w.data(10, &[b"1\n2\n"]);
        assert_eq!(
            count(&w.out, 3),
            Ok(vec![
                rows("public", "promised", 2),
                rows("public", "no_data", 0)
            ])
        );
        let err = count(&toc_only, 3).unwrap_err();
        assert!(
            err.contains("before the data block of dump id 10 (table public.promised)"),
            "{err}"
        );
    }

    #[test]
    fn absurd_lengths_are_refused() {
        // A negative string length other than -1 (the database name's).
        let mut w = Writer::new(16, 4);
        w.header(0);
        // The three header strings: "db", "15.4", "15.4".
        let at = w.out.len() - (5 + 2) - 2 * (5 + 4);
        w.out.truncate(at);
        w.int(-2);
        let err = count(&w.out, 7).unwrap_err();
        assert!(err.contains("string length -2") && err.contains(&format!("at byte {at}")));

        let mut w = Writer::new(16, 4);
        w.header(0);
        w.int(MAX_TOC_ENTRIES + 1);
        assert!(count(&w.out, 7).unwrap_err().contains("TOC count 10000001"));

        let long = "x".repeat(MAX_NAME + 1);
        let mut w = Writer::new(16, 4);
        w.header(0);
        w.toc(&[entry(1, "TABLE DATA", "public", &long, true)]);
        assert!(count(&w.out, 4096).unwrap_err().contains("bytes (at most"));

        let mut w = Writer::new(16, 4);
        w.header(0);
        w.toc(&[entry(10, "TABLE DATA", "public", "t", true)]);
        w.out.push(BLK_DATA);
        w.int(10);
        w.int(-7);
        assert!(count(&w.out, 1).unwrap_err().contains("chunk length -7"));

        // An int whose magnitude does not fit a C int.
        let mut w = Writer::new(16, 8);
        w.header(0);
        w.int(1 << 40);
        assert!(count(&w.out, 1).unwrap_err().contains("out of range"));
    }

    #[test]
    fn rows_are_newlines_without_the_end_of_copy_marker() {
        let cases: [(&[&[u8]], u64); 8] = [
            (&[b"\\.\n\n\n"], 0),
            (&[], 0),
            (&[b"a\n", b"\\", b".", b"\n\n", b"\n"], 1),
            // A row whose value ends in a backslash and a dot, then the marker.
            (&[b"x\\\\.\n\\.\n\n\n"], 1),
            // No marker (a pg_dump that stops writing it): every newline is a row.
            (&[b"a\nb\n"], 2),
            // `\.\n\n\n` that is not on a line of its own is data.
            (&[b"a\\.\n\n\n"], 3),
            (&[b"\\\\.\n"], 1),
            (&[b"1\n2\n3\n\\.\n\n\n"], 3),
        ];
        for (chunks, want) in cases {
            let mut w = Writer::new(16, 4);
            w.header(0);
            w.toc(&[entry(10, "TABLE DATA", "s", "t", true)]);
            w.data(10, chunks);
            for piece in [1, 3, 4096] {
                assert_eq!(
                    count(&w.out, piece),
                    Ok(vec![rows("s", "t", want)]),
                    "{chunks:?}"
                );
            }
        }
    }

    #[test]
    fn insert_statements_are_refused() {
        let mut w = Writer::new(14, 4);
        w.header(0);
        let mut e = entry(10, "TABLE DATA", "public", "t", true);
        e.copy = None;
        w.toc(&[e]);
        w.data(10, &[b"INSERT INTO public.t VALUES (1);\n"]);
        assert!(count(&w.out, 64).unwrap_err().contains("--inserts"));
    }

    #[test]
    fn a_schema_only_archive_has_no_tables() {
        let mut w = Writer::new(16, 4);
        w.header(0);
        w.toc(&[]);
        assert_eq!(count(&w.out, 1), Ok(vec![]));
    }
}
