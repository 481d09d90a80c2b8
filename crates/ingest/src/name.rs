//! Batch file names: `[DMP ID].[yyyy-MM-dd_HH-mm-ss].[FILE ID].txt.gz` and the sibling
//! `[same prefix].taxonomy.json`.
//!
//! The name carries everything the exactly-once and ordering guarantees need: the DMP that sent
//! the file, the date that orders a DMP's files, and the FILE ID that is applied at most once.
//! A name that does not follow the pattern rejects the whole file, so every error says which part
//! is wrong and what was expected there.

use std::fmt;

/// Longest accepted file name, in bytes.
pub const FILE_NAME_MAX_BYTES: usize = 512;
/// Longest accepted DMP ID, in bytes.
pub const DMP_ID_MAX_BYTES: usize = 64;
/// Longest accepted FILE ID, in bytes.
pub const FILE_ID_MAX_BYTES: usize = 128;
/// Earliest accepted year in the DATE part.
pub const MIN_YEAR: u16 = 1970;

/// Extension of a data file.
pub const DATA_SUFFIX: &str = ".txt.gz";
/// Extension of a taxonomy file.
pub const TAXONOMY_SUFFIX: &str = ".taxonomy.json";

/// What a batch file holds.
///
/// The order is the order of application: a taxonomy is imported before the data file that shares
/// its prefix, so sorting [`BatchFileName`]s puts each taxonomy first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    /// `….taxonomy.json`: the segment catalogue update.
    Taxonomy,
    /// `….txt.gz`: gzip TSV of profile changes.
    Data,
}

impl FileKind {
    /// The extension, with its leading dot.
    pub fn suffix(self) -> &'static str {
        match self {
            FileKind::Taxonomy => TAXONOMY_SUFFIX,
            FileKind::Data => DATA_SUFFIX,
        }
    }

    /// Stable lowercase name: `taxonomy` or `data`.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Taxonomy => "taxonomy",
            FileKind::Data => "data",
        }
    }
}

/// The DATE part of a file name: a validated calendar date-time, `yyyy-MM-dd_HH-mm-ss`.
///
/// Fields are ordered from year to second, so the derived ordering is chronological. The seed
/// names no time zone; segmart reads the date as UTC, and only its order matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchDate {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl BatchDate {
    /// Builds a date from its fields, checking each against the calendar.
    pub fn new(
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
    ) -> Result<Self, String> {
        if !(MIN_YEAR..=9999).contains(&year) {
            return Err(format!("year {year:04} is out of range {MIN_YEAR}..9999"));
        }
        if !(1..=12).contains(&month) {
            return Err(format!("month {month:02} is out of range 01..12"));
        }
        let last_day = days_in_month(year, month);
        if day == 0 || day > last_day {
            return Err(format!(
                "day {day:02} does not exist in {year:04}-{month:02} (it has {last_day} days)"
            ));
        }
        if hour > 23 {
            return Err(format!("hour {hour:02} is out of range 00..23"));
        }
        if minute > 59 {
            return Err(format!("minute {minute:02} is out of range 00..59"));
        }
        if second > 59 {
            return Err(format!("second {second:02} is out of range 00..59"));
        }
        Ok(BatchDate {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    /// Parses exactly `yyyy-MM-dd_HH-mm-ss` (19 characters, zero-padded).
    pub fn parse(raw: &str) -> Result<Self, String> {
        const SHAPE: &str = "expected yyyy-MM-dd_HH-mm-ss, e.g. 2015-07-15_12-00-00";
        let bytes = raw.as_bytes();
        if !raw.is_ascii() {
            return Err(format!("{SHAPE}: contains non-ASCII characters"));
        }
        if bytes.len() != 19 {
            return Err(format!("{SHAPE}, found {} characters", raw.chars().count()));
        }
        for (position, separator) in [(4, b'-'), (7, b'-'), (10, b'_'), (13, b'-'), (16, b'-')] {
            if bytes[position] != separator {
                return Err(format!(
                    "{SHAPE}: character {} should be '{}'",
                    position + 1,
                    separator as char
                ));
            }
        }
        let number = |from: usize, to: usize| -> Result<u16, String> {
            let digits = &bytes[from..to];
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(format!(
                    "{SHAPE}: characters {}..{} should be digits",
                    from + 1,
                    to
                ));
            }
            Ok(digits
                .iter()
                .fold(0u16, |acc, digit| acc * 10 + u16::from(digit - b'0')))
        };
        let year = number(0, 4)?;
        let month = number(5, 7)? as u8;
        let day = number(8, 10)? as u8;
        let hour = number(11, 13)? as u8;
        let minute = number(14, 16)? as u8;
        let second = number(17, 19)? as u8;
        BatchDate::new(year, month, day, hour, minute, second)
    }

    pub fn year(self) -> u16 {
        self.year
    }
    pub fn month(self) -> u8 {
        self.month
    }
    pub fn day(self) -> u8 {
        self.day
    }
    pub fn hour(self) -> u8 {
        self.hour
    }
    pub fn minute(self) -> u8 {
        self.minute
    }
    pub fn second(self) -> u8 {
        self.second
    }

    /// Seconds since 1970-01-01T00:00:00Z, reading the date as UTC.
    pub fn unix_seconds(self) -> i64 {
        let days = days_from_civil(
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
        );
        days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

impl fmt::Display for BatchDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}_{:02}-{:02}-{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

fn is_leap_year(year: u16) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Which part of a file name an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamePart {
    /// The name as a whole: length, characters, number of dot-separated parts.
    Whole,
    /// `.txt.gz` or `.taxonomy.json`.
    Extension,
    DmpId,
    Date,
    FileId,
}

impl NamePart {
    /// Stable lowercase name, for counting and JSON.
    pub fn name(self) -> &'static str {
        match self {
            NamePart::Whole => "name",
            NamePart::Extension => "extension",
            NamePart::DmpId => "dmp_id",
            NamePart::Date => "date",
            NamePart::FileId => "file_id",
        }
    }

    fn label(self) -> &'static str {
        match self {
            NamePart::Whole => "name",
            NamePart::Extension => "extension",
            NamePart::DmpId => "DMP ID",
            NamePart::Date => "DATE",
            NamePart::FileId => "FILE ID",
        }
    }
}

/// Why a file name was refused: the part at fault and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad file name {name:?}: {}: {reason}", part.label())]
pub struct FileNameError {
    /// The name as received (cut to [`FILE_NAME_MAX_BYTES`] for reporting).
    pub name: String,
    pub part: NamePart,
    /// Lowercase human explanation, e.g. `month 13 is out of range 01..12`.
    pub reason: String,
}

/// A parsed batch file name.
///
/// Equality, hashing and ordering use the parsed parts, so two spellings that differ only in the
/// tolerated whitespace are the same file. Sorting puts a DMP's files in DATE order, ties broken
/// by FILE ID, and a taxonomy before the data file that shares its prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchFileName {
    dmp_id: String,
    date: BatchDate,
    file_id: String,
    kind: FileKind,
}

impl BatchFileName {
    /// The data provider's id on the platform; 1..=64 characters of `[A-Za-z0-9_-]`.
    pub fn dmp_id(&self) -> &str {
        &self.dmp_id
    }

    /// Orders the DMP's files.
    pub fn date(&self) -> BatchDate {
        self.date
    }

    /// The delivery's unique id; 1..=128 characters of `[A-Za-z0-9_-]`, case-sensitive.
    pub fn file_id(&self) -> &str {
        &self.file_id
    }

    pub fn kind(&self) -> FileKind {
        self.kind
    }

    /// Parses a file name (the last path component, not a path).
    ///
    /// ASCII spaces around each part are ignored, so the seed's own example
    /// `some_dmp. 2015-07-15_12-00-00.632a0017-bbda-4be7-a5fe-6a2478b65c89.txt.gz` is accepted and
    /// means the same file as the name without the space. Nothing else is tolerated.
    pub fn parse(name: &str) -> Result<Self, FileNameError> {
        let fail = |part: NamePart, reason: String| FileNameError {
            name: cut(name, FILE_NAME_MAX_BYTES).to_owned(),
            part,
            reason,
        };
        if name.len() > FILE_NAME_MAX_BYTES {
            return Err(fail(
                NamePart::Whole,
                format!(
                    "is {} bytes long, the limit is {FILE_NAME_MAX_BYTES}",
                    name.len()
                ),
            ));
        }
        if name.contains(['/', '\\']) {
            return Err(fail(
                NamePart::Whole,
                "contains a path separator; give the file name only".into(),
            ));
        }
        let trimmed = trim_spaces(name);
        let (stem, kind) = if let Some(stem) = trimmed.strip_suffix(DATA_SUFFIX) {
            (stem, FileKind::Data)
        } else if let Some(stem) = trimmed.strip_suffix(TAXONOMY_SUFFIX) {
            (stem, FileKind::Taxonomy)
        } else {
            return Err(fail(
                NamePart::Extension,
                format!(
                    "expected the name to end in {DATA_SUFFIX} (data) or {TAXONOMY_SUFFIX} (taxonomy)"
                ),
            ));
        };
        let parts: Vec<&str> = stem.split('.').collect();
        if parts.len() != 3 {
            return Err(fail(
                NamePart::Whole,
                format!(
                    "expected [DMP ID].[yyyy-MM-dd_HH-mm-ss].[FILE ID]{}, found {} dot-separated part{} \
                     before the extension (DMP ID and FILE ID cannot contain '.')",
                    kind.suffix(),
                    parts.len(),
                    if parts.len() == 1 { "" } else { "s" }
                ),
            ));
        }
        let dmp_id = trim_spaces(parts[0]);
        check_token(dmp_id, DMP_ID_MAX_BYTES).map_err(|why| fail(NamePart::DmpId, why))?;
        let date =
            BatchDate::parse(trim_spaces(parts[1])).map_err(|why| fail(NamePart::Date, why))?;
        let file_id = trim_spaces(parts[2]);
        check_token(file_id, FILE_ID_MAX_BYTES).map_err(|why| fail(NamePart::FileId, why))?;
        Ok(BatchFileName {
            dmp_id: dmp_id.to_owned(),
            date,
            file_id: file_id.to_owned(),
            kind,
        })
    }

    /// Builds a name from parts that must each be valid.
    pub fn new(
        dmp_id: &str,
        date: BatchDate,
        file_id: &str,
        kind: FileKind,
    ) -> Result<Self, FileNameError> {
        let candidate = BatchFileName {
            dmp_id: dmp_id.to_owned(),
            date,
            file_id: file_id.to_owned(),
            kind,
        };
        let fail = |part: NamePart, reason: String| FileNameError {
            name: cut(&candidate.to_string(), FILE_NAME_MAX_BYTES).to_owned(),
            part,
            reason,
        };
        check_token(dmp_id, DMP_ID_MAX_BYTES).map_err(|why| fail(NamePart::DmpId, why))?;
        check_token(file_id, FILE_ID_MAX_BYTES).map_err(|why| fail(NamePart::FileId, why))?;
        Ok(candidate)
    }

    /// `[DMP ID].[DATE].[FILE ID]`, shared by a data file and its taxonomy.
    pub fn prefix(&self) -> String {
        format!("{}.{}.{}", self.dmp_id, self.date, self.file_id)
    }

    /// The same delivery's file of the other kind (the taxonomy of a data file and back).
    pub fn sibling(&self, kind: FileKind) -> BatchFileName {
        BatchFileName {
            kind,
            ..self.clone()
        }
    }
}

/// The canonical spelling: no whitespace, e.g. `some_dmp.2015-07-15_12-00-00.632a….txt.gz`.
impl fmt::Display for BatchFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}{}",
            self.dmp_id,
            self.date,
            self.file_id,
            self.kind.suffix()
        )
    }
}

fn trim_spaces(raw: &str) -> &str {
    raw.trim_matches(' ')
}

/// DMP IDs and FILE IDs: 1..=`max` characters of `[A-Za-z0-9_-]`.
fn check_token(token: &str, max: usize) -> Result<(), String> {
    if token.is_empty() {
        return Err("must not be empty".into());
    }
    if token.len() > max {
        return Err(format!("is {} bytes long, the limit is {max}", token.len()));
    }
    if let Some(bad) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "contains {bad:?}; only letters A-Z a-z, digits, '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// The longest prefix of `raw` that fits in `max` bytes and ends on a character boundary.
pub(crate) fn cut(raw: &str, max: usize) -> &str {
    if raw.len() <= max {
        return raw;
    }
    let mut end = max;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    &raw[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_EXAMPLE: &str =
        "some_dmp. 2015-07-15_12-00-00.632a0017-bbda-4be7-a5fe-6a2478b65c89.txt.gz";

    fn part_of(name: &str) -> NamePart {
        BatchFileName::parse(name).unwrap_err().part
    }

    #[test]
    fn the_seed_example_parses_despite_its_space() {
        let name = BatchFileName::parse(SEED_EXAMPLE).unwrap();
        assert_eq!(name.dmp_id, "some_dmp");
        assert_eq!(name.date, BatchDate::new(2015, 7, 15, 12, 0, 0).unwrap());
        assert_eq!(name.file_id, "632a0017-bbda-4be7-a5fe-6a2478b65c89");
        assert_eq!(name.kind, FileKind::Data);
        assert_eq!(
            name.to_string(),
            "some_dmp.2015-07-15_12-00-00.632a0017-bbda-4be7-a5fe-6a2478b65c89.txt.gz"
        );
    }

    #[test]
    fn spaces_around_every_dot_are_tolerated_and_mean_the_same_file() {
        let spaced = BatchFileName::parse(" dmp . 2015-07-15_12-00-00 . f1 .txt.gz ").unwrap();
        let plain = BatchFileName::parse("dmp.2015-07-15_12-00-00.f1.txt.gz").unwrap();
        assert_eq!(spaced, plain);
    }

    #[test]
    fn taxonomy_names_share_the_prefix_of_their_data_file() {
        let data = BatchFileName::parse("dmp.2015-07-15_12-00-00.f1.txt.gz").unwrap();
        let taxonomy = BatchFileName::parse("dmp.2015-07-15_12-00-00.f1.taxonomy.json").unwrap();
        assert_eq!(taxonomy.kind, FileKind::Taxonomy);
        assert_eq!(data.prefix(), taxonomy.prefix());
        assert_eq!(data.sibling(FileKind::Taxonomy), taxonomy);
        assert_eq!(
            taxonomy.to_string(),
            "dmp.2015-07-15_12-00-00.f1.taxonomy.json"
        );
    }

    #[test]
    fn sorting_gives_date_order_with_each_taxonomy_before_its_data() {
        let mut names: Vec<BatchFileName> = [
            "d.2016-01-01_00-00-00.b.txt.gz",
            "d.2015-12-31_23-59-59.z.txt.gz",
            "d.2016-01-01_00-00-00.b.taxonomy.json",
            "d.2016-01-01_00-00-00.a.txt.gz",
        ]
        .iter()
        .map(|n| BatchFileName::parse(n).unwrap())
        .collect();
        names.sort();
        let sorted: Vec<String> = names.iter().map(ToString::to_string).collect();
        assert_eq!(
            sorted,
            [
                "d.2015-12-31_23-59-59.z.txt.gz",
                "d.2016-01-01_00-00-00.a.txt.gz",
                "d.2016-01-01_00-00-00.b.taxonomy.json",
                "d.2016-01-01_00-00-00.b.txt.gz",
            ]
        );
    }

    #[test]
    fn bad_extensions_are_named() {
        assert_eq!(part_of("d.2015-07-15_12-00-00.f.txt"), NamePart::Extension);
        assert_eq!(
            part_of("d.2015-07-15_12-00-00.f.TXT.GZ"),
            NamePart::Extension
        );
        assert_eq!(part_of("d.2015-07-15_12-00-00.f.json"), NamePart::Extension);
        assert_eq!(
            part_of("d.2015-07-15_12-00-00.f. txt.gz"),
            NamePart::Extension
        );
    }

    #[test]
    fn the_number_of_parts_must_be_three() {
        let err = BatchFileName::parse("my.dmp.2015-07-15_12-00-00.f.txt.gz").unwrap_err();
        assert_eq!(err.part, NamePart::Whole);
        assert!(err.reason.contains("found 4 dot-separated parts"), "{err}");
        assert_eq!(part_of("2015-07-15_12-00-00.f.txt.gz"), NamePart::Whole);
        assert_eq!(part_of(".txt.gz"), NamePart::Whole);
    }

    #[test]
    fn dmp_and_file_ids_are_restricted_tokens() {
        assert_eq!(part_of(".2015-07-15_12-00-00.f.txt.gz"), NamePart::DmpId);
        assert_eq!(
            part_of("d mp.2015-07-15_12-00-00.f.txt.gz"),
            NamePart::DmpId
        );
        assert_eq!(
            part_of("dmp!.2015-07-15_12-00-00.f.txt.gz"),
            NamePart::DmpId
        );
        let long_dmp = format!("{}.2015-07-15_12-00-00.f.txt.gz", "d".repeat(65));
        assert_eq!(part_of(&long_dmp), NamePart::DmpId);
        let max_dmp = format!("{}.2015-07-15_12-00-00.f.txt.gz", "d".repeat(64));
        assert!(BatchFileName::parse(&max_dmp).is_ok());
        assert_eq!(part_of("d.2015-07-15_12-00-00..txt.gz"), NamePart::FileId);
        assert_eq!(
            part_of("d.2015-07-15_12-00-00.f\tx.txt.gz"),
            NamePart::FileId
        );
        assert_eq!(part_of("d.2015-07-15_12-00-00.fé.txt.gz"), NamePart::FileId);
        let long_file = format!("d.2015-07-15_12-00-00.{}.txt.gz", "f".repeat(129));
        assert_eq!(part_of(&long_file), NamePart::FileId);
    }

    #[test]
    fn dates_are_checked_against_the_calendar() {
        let reason = |date: &str| {
            let err = BatchFileName::parse(&format!("d.{date}.f.txt.gz")).unwrap_err();
            assert_eq!(err.part, NamePart::Date, "{err}");
            err.reason
        };
        assert!(reason("2015-13-01_00-00-00").contains("month 13"));
        assert!(reason("2015-00-01_00-00-00").contains("month 00"));
        assert!(reason("2015-04-31_00-00-00").contains("day 31 does not exist in 2015-04"));
        assert!(reason("2015-02-29_00-00-00").contains("day 29"));
        assert!(BatchDate::parse("2016-02-29_00-00-00").is_ok(), "leap year");
        assert!(
            BatchDate::parse("2000-02-29_00-00-00").is_ok(),
            "leap century"
        );
        assert!(
            BatchDate::parse("1900-02-28_00-00-00").is_err(),
            "before 1970"
        );
        assert!(reason("2100-02-29_00-00-00").contains("day 29"));
        assert!(reason("2015-07-15_24-00-00").contains("hour 24"));
        assert!(reason("2015-07-15_12-60-00").contains("minute 60"));
        assert!(reason("2015-07-15_12-00-60").contains("second 60"));
        assert!(reason("2015-07-15 12-00-00").contains("character 11 should be '_'"));
        assert!(reason("2015-07-15_12:00:00").contains("character 14 should be '-'"));
        assert!(reason("2015-7-15_12-00-00").contains("found 18 characters"));
        assert!(reason("2015-07-1a_12-00-00").contains("should be digits"));
        assert!(reason("１９７０-01-01_00-00-00").contains("non-ASCII"));
    }

    #[test]
    fn errors_read_well() {
        let err = BatchFileName::parse("d.2015-13-01_00-00-00.f.txt.gz").unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad file name \"d.2015-13-01_00-00-00.f.txt.gz\": DATE: month 13 is out of range 01..12"
        );
        assert!(BatchFileName::parse("dir/d.2015-07-15_12-00-00.f.txt.gz").is_err());
    }

    #[test]
    fn unix_seconds_match_known_instants() {
        assert_eq!(
            BatchDate::parse("1970-01-01_00-00-00")
                .unwrap()
                .unix_seconds(),
            0
        );
        assert_eq!(
            BatchDate::parse("2015-07-15_12-00-00")
                .unwrap()
                .unix_seconds(),
            1_436_961_600
        );
        assert_eq!(
            BatchDate::parse("2000-03-01_00-00-01")
                .unwrap()
                .unix_seconds(),
            951_868_801
        );
    }

    #[test]
    fn new_validates_like_parse() {
        let date = BatchDate::parse("2015-07-15_12-00-00").unwrap();
        assert!(BatchFileName::new("d", date, "f", FileKind::Data).is_ok());
        let err = BatchFileName::new("d.x", date, "f", FileKind::Data).unwrap_err();
        assert_eq!(err.part, NamePart::DmpId);
        let err = BatchFileName::new("d", date, "", FileKind::Data).unwrap_err();
        assert_eq!(err.part, NamePart::FileId);
    }
}
