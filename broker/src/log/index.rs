//! Sparse indexes of one segment: offset → file position, and timestamp → offset.
//!
//! An entry is added every `index.interval.bytes` of appended data, for the first batch past the
//! interval. Both indexes live in memory and are written to their files when a segment is sealed
//! and at clean shutdown, followed by a CRC32C of the entries, so a damaged or stale file is
//! detected and rebuilt from the segment instead of sending reads to the wrong place.

/// Offset index entry: offset relative to the segment base, and the byte position of the batch
/// with that base offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// Time index entry: the segment's largest timestamp so far, and the base offset (relative) of
/// the batch at which it was recorded. Every record before that batch has a timestamp no
/// larger than `timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

/// Why an index file was not usable; the segment is rescanned instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("index file length {0} is not a whole number of entries plus checksum")]
    BadLength(usize),
    #[error("index checksum mismatch")]
    Checksum,
    #[error("index entries are not increasing at entry {0}")]
    NotIncreasing(usize),
    #[error("index entry {0} points past the end of the segment")]
    PastEnd(usize),
}

fn with_checksum(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    body
}

fn checked_body(bytes: &[u8], entry_len: usize) -> Result<&[u8], IndexError> {
    if bytes.len() < 4 || !(bytes.len() - 4).is_multiple_of(entry_len) {
        return Err(IndexError::BadLength(bytes.len()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return Err(IndexError::Checksum);
    }
    Ok(body)
}

impl OffsetIndex {
    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn append(&mut self, relative_offset: u32, position: u32) {
        if let Some(last) = self.entries.last() {
            assert!(
                relative_offset > last.relative_offset,
                "offset index must increase"
            );
            assert!(
                position > last.position,
                "offset index positions must increase"
            );
        }
        self.entries.push(OffsetEntry {
            relative_offset,
            position,
        });
    }

    /// The last entry at or below `relative_offset`: where to start scanning for it.
    pub fn lookup(&self, relative_offset: u32) -> OffsetEntry {
        let idx = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        if idx == 0 {
            OffsetEntry {
                relative_offset: 0,
                position: 0,
            }
        } else {
            self.entries[idx - 1]
        }
    }

    /// Drops entries at or beyond `position` (after a truncation).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.entries.len() * 8 + 4);
        for e in &self.entries {
            body.extend_from_slice(&e.relative_offset.to_be_bytes());
            body.extend_from_slice(&e.position.to_be_bytes());
        }
        with_checksum(body)
    }

    /// Decodes and checks an index file against the segment's size.
    pub fn decode(bytes: &[u8], segment_size: u64) -> Result<OffsetIndex, IndexError> {
        let body = checked_body(bytes, 8)?;
        let mut index = OffsetIndex::default();
        for (i, chunk) in body.chunks_exact(8).enumerate() {
            let relative_offset = u32::from_be_bytes(chunk[0..4].try_into().expect("4"));
            let position = u32::from_be_bytes(chunk[4..8].try_into().expect("4"));
            if u64::from(position) >= segment_size {
                return Err(IndexError::PastEnd(i));
            }
            if let Some(last) = index.entries.last() {
                if relative_offset <= last.relative_offset || position <= last.position {
                    return Err(IndexError::NotIncreasing(i));
                }
            }
            index.entries.push(OffsetEntry {
                relative_offset,
                position,
            });
        }
        Ok(index)
    }
}

impl TimeIndex {
    pub fn entries(&self) -> &[TimeEntry] {
        &self.entries
    }

    pub fn last(&self) -> Option<TimeEntry> {
        self.entries.last().copied()
    }

    /// Adds an entry if `timestamp` is a new maximum; time index entries only ever grow.
    pub fn maybe_append(&mut self, timestamp: i64, relative_offset: u32) {
        match self.entries.last() {
            Some(last)
                if timestamp <= last.timestamp || relative_offset <= last.relative_offset => {}
            _ => self.entries.push(TimeEntry {
                timestamp,
                relative_offset,
            }),
        }
    }

    /// The relative offset to start scanning from for the first record with timestamp ≥
    /// `timestamp`: the last entry whose timestamp is below it (everything before that entry's
    /// batch is below it too), or the segment start.
    pub fn lookup(&self, timestamp: i64) -> u32 {
        let idx = self.entries.partition_point(|e| e.timestamp < timestamp);
        if idx == 0 {
            0
        } else {
            self.entries[idx - 1].relative_offset
        }
    }

    /// Drops entries at or beyond `relative_offset` (after a truncation).
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.entries.len() * 12 + 4);
        for e in &self.entries {
            body.extend_from_slice(&e.timestamp.to_be_bytes());
            body.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        with_checksum(body)
    }

    pub fn decode(bytes: &[u8]) -> Result<TimeIndex, IndexError> {
        let body = checked_body(bytes, 12)?;
        let mut index = TimeIndex::default();
        for (i, chunk) in body.chunks_exact(12).enumerate() {
            let timestamp = i64::from_be_bytes(chunk[0..8].try_into().expect("8"));
            let relative_offset = u32::from_be_bytes(chunk[8..12].try_into().expect("4"));
            if let Some(last) = index.entries.last() {
                if timestamp <= last.timestamp || relative_offset <= last.relative_offset {
                    return Err(IndexError::NotIncreasing(i));
                }
            }
            index.entries.push(TimeEntry {
                timestamp,
                relative_offset,
            });
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_lookup_finds_the_last_entry_at_or_below_the_target() {
        let mut index = OffsetIndex::default();
        index.append(10, 4096);
        index.append(20, 8192);
        assert_eq!(index.lookup(5).position, 0);
        assert_eq!(index.lookup(10).position, 4096);
        assert_eq!(index.lookup(19).position, 4096);
        assert_eq!(index.lookup(1000).position, 8192);
    }

    #[test]
    fn an_index_file_round_trips_and_a_flipped_bit_is_detected() {
        let mut index = OffsetIndex::default();
        index.append(3, 100);
        index.append(9, 300);
        let mut bytes = index.encode();
        assert_eq!(OffsetIndex::decode(&bytes, 400).unwrap(), index);
        assert_eq!(
            OffsetIndex::decode(&bytes, 300),
            Err(IndexError::PastEnd(1))
        );
        bytes[5] ^= 1;
        assert_eq!(OffsetIndex::decode(&bytes, 400), Err(IndexError::Checksum));
        assert!(OffsetIndex::decode(&bytes[..7], 400).is_err());
    }

    #[test]
    fn a_time_lookup_starts_before_the_first_entry_reaching_the_timestamp() {
        let mut index = TimeIndex::default();
        index.maybe_append(100, 0);
        index.maybe_append(100, 5); // not a new maximum: skipped
        index.maybe_append(200, 10);
        index.maybe_append(300, 20);
        assert_eq!(index.entries().len(), 3);
        assert_eq!(index.lookup(50), 0);
        assert_eq!(index.lookup(200), 0);
        assert_eq!(index.lookup(201), 10);
        assert_eq!(TimeIndex::decode(&index.encode()).unwrap(), index);
    }
}
