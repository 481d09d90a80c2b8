//! Batch file ingestion: file names, gzip TSV data lines and taxonomy JSON.
//!
//! This crate turns the bytes a data provider delivers into validated values. It reads, parses
//! and reports; it does not store anything, resolve segment ids to segment numbers or decide
//! whether a FILE ID was seen before — the server does that with the pieces here.
//!
//! Architecture invariant: no HTTP, no storage, no async. Everything takes a [`std::io::Read`] or
//! a byte slice, so the drop directory, the HTTP upload and `segmart ingest` share one path.
//!
//! # Where to start
//!
//! - [`BatchFileName::parse`] for a delivered file's name.
//! - [`BatchReader`] to stream a data file: it inflates, skips the header and blank lines, parses
//!   each line into a [`ParsedLine`] or a [`Rejection`], and keeps the counts of a file report.
//!   [`BatchReader::new`] works on the calling thread; [`BatchReader::spawn`] inflates on a
//!   thread of its own. Underneath, [`GzipLines`] / [`ParallelGzipLines`] read lines and
//!   [`parse_line`] parses one.
//! - [`parse_taxonomy`] and [`effective_cost`] for a `.taxonomy.json` file.
//! - [`testdata::write_realistic_file`] to generate a benchmark file.
//!
//! # File names
//!
//! `[DMP ID].[yyyy-MM-dd_HH-mm-ss].[FILE ID].txt.gz`, and `[same prefix].taxonomy.json` for the
//! taxonomy delivered with it.
//!
//! - **Whitespace.** ASCII spaces around each part (around every dot, and at either end of the
//!   name) are ignored: the seed's own example, `some_dmp. 2015-07-15_12-00-00.632a….txt.gz`,
//!   parses and names the same file as its spelling without the space. Any other stray character
//!   (a tab, a space inside a part or inside the extension) rejects the name.
//! - **DMP ID**: 1..=64 characters of `[A-Za-z0-9_-]`, case-sensitive. It cannot contain a dot,
//!   since dots separate the parts.
//! - **DATE**: exactly `yyyy-MM-dd_HH-mm-ss`, zero-padded, a real calendar date-time (leap years
//!   counted, seconds 00..59) in years 1970..=9999, read as UTC. [`BatchDate`] orders
//!   chronologically.
//! - **FILE ID**: 1..=128 characters of `[A-Za-z0-9_-]`, case-sensitive (the seed uses a UUID).
//! - **Extension**: exactly `.txt.gz` or `.taxonomy.json`, lowercase.
//!
//! A bad name fails with a [`FileNameError`] naming the part and what was expected, e.g.
//! `bad file name "d.2015-13-01_00-00-00.f.txt.gz": DATE: month 13 is out of range 01..12`.
//! Sorting [`BatchFileName`]s gives each DMP's files in DATE order (ties by FILE ID), each
//! taxonomy before the data file with the same prefix.
//!
//! # Data lines
//!
//! The first line is the header and is always skipped, whatever it holds; it is line 1, so line
//! numbers in reports match a text editor's. Then each line is
//! `DMP_USER_ID <TAB> DSP_USER_ID <TAB> SEGMENTS_TO_ADD <TAB> SEGMENTS_TO_REMOVE`:
//!
//! - A trailing `\r` (CRLF files) is ignored. Empty lines are skipped and counted.
//! - A line needs at least three fields (two tabs); a missing fourth field means "remove nothing".
//!   With fewer than two tabs the line is rejected (`missing_fields`) rather than guessed at: it
//!   is usually a space-separated or otherwise mangled line. More than four fields is
//!   `too_many_fields`.
//! - Any field may be empty, but a line needs a user id (`missing_user_id`) and at least one
//!   segment to add or remove (`no_segments`, the same rule as an item of the profile batch API).
//! - ASCII spaces around a user id and around each segment id are ignored; empty list items
//!   (`a,,b`, a trailing comma) are skipped.
//! - Segment ids follow the segment API's rules (`SegmentKey::parse`: 1..=100 characters, no
//!   whitespace, control characters, `,` or `/`); one bad id rejects the line
//!   (`invalid_segment_id`). At most 10 000 ids per line (`too_many_segments`).
//! - Lines longer than 4 MiB are rejected (`line_too_long`) with their first KiB kept for the
//!   report, and reading goes on, so memory stays bounded.
//!
//! Every rejection carries a [`RejectReason`] with a stable snake_case name for counting, a
//! human message naming the column, the 1-based line number and the line itself (lossy UTF-8).
//!
//! ## User ids and the canonical mobile form
//!
//! A **desktop** id is any string without `:` (at most 512 bytes, no control characters), kept
//! exactly as sent: cookie ids are case-sensitive.
//!
//! A **mobile** id has a prefix (letter case of the prefix is ignored):
//! - `m_raw:<advertising id>` — an IDFA or GAID as a hyphenated UUID, in any letter case;
//! - `m_md5:<32 hex characters>` — the MD5 of the advertising id's string form, hex-encoded;
//! - `m_sha1:` is rejected as `unsupported_id_type`; any other prefix is `unknown_id_prefix`.
//!
//! A raw id and the MD5 of the same device must meet in one profile, and an MD5 cannot be
//! reversed, so the canonical form is the hash: **profile key = `m_md5:` + lowercase hex of
//! MD5(the advertising id as a lowercase hyphenated UUID, 36 ASCII characters)**. An `m_raw` id
//! is lowercased and hashed; an `m_md5` id is only lowercased. The hashed string form is the
//! lowercase one because RFC 9562 §4 defines the UUID text form as lowercase, because segmart's
//! profile API already stores mobile ids that way (`ProfileId` for the `maid` id type), and
//! because GAIDs are lowercase natively. IDFAs are displayed uppercase by iOS, so **a provider
//! hashing IDFAs must lowercase them before hashing**; an MD5 of the uppercase form is a valid
//! digest segmart cannot recognise, and lands in a profile of its own. Example: the device
//! `6D92078A-8246-4BA4-AE5B-76104861E7DC` is `m_md5:0c2074fb86930fc4a2a7bb791240a7d3` whether
//! it arrives raw (either case) or hashed.
//!
//! The all-zero advertising id (a device that opted out of tracking) is refused in both forms
//! (`invalid_mobile_id`): it would merge every such device into one profile.
//!
//! ## Which profile a line updates
//!
//! [`ParsedLine::resolve_user`]: the DSP user id when present; otherwise the DMP user id through
//! the user-matching table (a closure given the DMP id's canonical key); otherwise the DMP user
//! id itself. Adds and removes mean what the profile API's `segmentIdsToAdd` and
//! `segmentIdsToRemove` mean ([`ParsedLine::to_profile_update`]).
//!
//! # Reading gzip
//!
//! [`GzipLines`] reads any [`std::io::Read`] through a 256 KiB input buffer and a 256 KiB output
//! buffer that lines are sliced from (it grows only for a longer line, up to the line limit):
//! memory does not grow with the file, and a line costs no allocation. Concatenated gzip members
//! are one stream. Input that does not start with the gzip magic bytes fails at the first read
//! with `not a gzip file: …`; a stream that stops inside a member fails with
//! `truncated gzip stream after N bytes`; damaged data, a checksum mismatch or data after the last
//! member is `corrupt gzip stream after N bytes: …`; a failing source (disk, network) is
//! `read failed …`. Lines returned before an error stay valid, and the error is returned again on
//! every later call; deciding what to do with the lines already read (apply atomically, roll
//! back) is the caller's job.
//!
//! Inflating costs about as much as parsing, so [`ParallelGzipLines`] runs the [`GzipLines`] on
//! a background thread that hands over 256 KiB chunks of whole lines (at most four in flight,
//! recycled), with identical results and errors.
//!
//! # Example
//!
//! ```
//! use std::io::Write;
//!
//! use segmart_ingest::{BatchFileName, BatchItem, BatchReader, RejectReason};
//!
//! let name = BatchFileName::parse("some_dmp. 2015-07-15_12-00-00.f1.txt.gz")?;
//! assert_eq!(name.to_string(), "some_dmp.2015-07-15_12-00-00.f1.txt.gz");
//!
//! let text = "DMP_USER_ID\tDSP_USER_ID\tSEGMENTS_TO_ADD\tSEGMENTS_TO_REMOVE\n\
//!             cookie-1\t\t1000,1001\t2000\n\
//!             m_raw:6D92078A-8246-4BA4-AE5B-76104861E7DC\t\t1000\n\
//!             m_sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709\t\t1000\n";
//! let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
//! gzip.write_all(text.as_bytes())?;
//! let file = gzip.finish()?;
//!
//! let mut reader = BatchReader::new(&file[..]);
//! let mut applied = Vec::new();
//! while let Some(item) = reader.next_item()? {
//!     match item {
//!         BatchItem::Parsed { line_number, line } => {
//!             // No user-matching table here: the DMP id is used as is.
//!             let user = line.resolve_user(|_dmp_id| None);
//!             let add: Vec<&str> = line.add().iter().collect();
//!             applied.push(format!("{line_number} {} +{}", user.as_str(), add.join(",")));
//!         }
//!         BatchItem::Rejected(rejection) => {
//!             assert_eq!(rejection.line_number, 4);
//!             assert_eq!(rejection.reason, RejectReason::UnsupportedIdType);
//!         }
//!     }
//! }
//! assert_eq!(
//!     applied,
//!     [
//!         "2 cookie-1 +1000,1001",
//!         "3 m_md5:0c2074fb86930fc4a2a7bb791240a7d3 +1000",
//!     ]
//! );
//! assert_eq!(reader.counts().rejected(RejectReason::UnsupportedIdType), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Taxonomy and pricing
//!
//! See [`taxonomy`] for the field rules. A taxonomy is all or nothing: every entry is validated
//! first and any problem rejects the whole file with the complete list (index, field, reason).
//!
//! The seed's pricing sentence, "the cost value is applied only when it equals to 0 or the
//! default DMP settings are not specified", is implemented by [`effective_cost`]: with no
//! provider default a segment's own cost applies; with a default, a segment cost of 0 applies
//! (the provider made that segment free) and any other segment cost is ignored in favour of the
//! default. A segment without a cost takes the default, if any.

#![forbid(unsafe_code)]

pub mod batch;
pub mod line;
pub mod name;
pub mod parallel;
pub mod reader;
pub mod taxonomy;
pub mod testdata;

pub use batch::{BatchItem, BatchReader, LineCounts};
pub use line::{
    Column, LineError, MobileId, MobileKey, MobileOrigin, ParsedLine, ProfileKey, RejectReason,
    Rejection, ResolvedUser, SegmentList, Segments, UserId, UserSource, is_blank, parse_line,
};
pub use name::{BatchDate, BatchFileName, FileKind, FileNameError, NamePart};
pub use parallel::ParallelGzipLines;
pub use reader::{GzipLines, LineSource, LineSpan, RawLine, ReadError, ReadProgress};
pub use taxonomy::{
    Cost, CostType, Currency, TaxonomyEntry, TaxonomyError, TaxonomyIssue, effective_cost,
    parse_taxonomy,
};
