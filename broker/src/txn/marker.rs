//! Transaction markers: the control batches that end a transaction on a partition (Kafka's
//! `EndTransactionMarker` and `ControlRecordType`).
//!
//! A marker is a v2 batch with the control and transactional attribute bits set, the producer
//! id and epoch of the transaction it ends, no sequence (-1), and exactly one record:
//! - key: `version i16` (0), `type i16` (0 ABORT, 1 COMMIT; Kafka's other control types are
//!   KRaft's and never appear in a partition's data log);
//! - value: `version i16` (0), `coordinator_epoch i32` (the epoch of the transaction
//!   coordinator that wrote it, so a zombie coordinator's late marker is refused).
//!
//! Only the transaction coordinator (WriteTxnMarkers) writes them; a client's produce carrying a
//! control batch is refused (INVALID_RECORD), as Kafka's `LogValidator` does.

use crate::log::batch::builder::{self, Record};
use crate::log::batch::{BatchHeader, CONTROL_BIT, TRANSACTIONAL_BIT};
use crate::log::records;
use crate::planted::{self, Bug};
use crate::txn::producer_state::NO_SEQUENCE;

/// The version of the control record key and of the marker value Kafka writes.
const VERSION: i16 = 0;

/// What a marker says about its transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
}

impl ControlType {
    fn code(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
        }
    }
}

/// A decoded transaction marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub control: ControlType,
    pub coordinator_epoch: i32,
}

/// Why a control batch is not a transaction marker this broker understands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    #[error("not a control batch")]
    NotControl,
    #[error("control batch holds {0} records, a marker holds one")]
    RecordCount(usize),
    #[error("control record unreadable: {0}")]
    Malformed(String),
    #[error("unknown control record type {0}")]
    UnknownType(i16),
}

/// The control batch of `marker` for `producer_id`/`producer_epoch`, stamped `timestamp_ms`,
/// base offset 0 (the log assigns it).
pub fn encode(producer_id: i64, producer_epoch: i16, marker: Marker, timestamp_ms: i64) -> Vec<u8> {
    assert!(
        producer_id >= 0,
        "a marker ends some producer's transaction"
    );
    let control = if planted::is(Bug::MarkersAlwaysCommit) {
        ControlType::Commit
    } else {
        marker.control
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&VERSION.to_be_bytes());
    key.extend_from_slice(&control.code().to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&VERSION.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let batch = builder::batch(&[Record {
        key: Some(key),
        value: Some(value),
        timestamp_ms,
    }]);
    let batch = builder::with_attributes(batch, CONTROL_BIT | TRANSACTIONAL_BIT);
    builder::with_producer(batch, producer_id, producer_epoch, NO_SEQUENCE)
}

/// Decodes the marker of a whole, validated control batch. `Ok(None)` for a control batch
/// emptied of its record (Kafka's cleaner does that once the transaction is gone from the
/// log): it ends nothing any more.
pub fn decode(batch: &[u8]) -> Result<Option<Marker>, MarkerError> {
    let header = BatchHeader::parse(batch).map_err(|e| MarkerError::Malformed(e.to_string()))?;
    if !header.is_control() {
        return Err(MarkerError::NotControl);
    }
    if header.records_count == 0 {
        return Ok(None);
    }
    let records =
        records::decode(batch, 1 << 16).map_err(|e| MarkerError::Malformed(e.to_string()))?;
    let [record] = &records[..] else {
        return Err(MarkerError::RecordCount(records.len()));
    };
    let malformed = |what: &str| MarkerError::Malformed(what.to_string());
    let key = record.key.as_deref().ok_or_else(|| malformed("no key"))?;
    // Kafka reads the version and type and ignores any bytes a later version adds.
    if key.len() < 4 {
        return Err(malformed("key shorter than 4 bytes"));
    }
    let control = match i16::from_be_bytes([key[2], key[3]]) {
        0 => ControlType::Abort,
        1 => ControlType::Commit,
        other => return Err(MarkerError::UnknownType(other)),
    };
    let value = record
        .value
        .as_deref()
        .ok_or_else(|| malformed("no value"))?;
    if value.len() < 6 {
        return Err(malformed("value shorter than 6 bytes"));
    }
    let coordinator_epoch = i32::from_be_bytes(value[2..6].try_into().expect("4 bytes"));
    Ok(Some(Marker {
        control,
        coordinator_epoch,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch;

    #[test]
    fn a_marker_is_a_valid_transactional_control_batch_of_one_record() {
        let marker = Marker {
            control: ControlType::Commit,
            coordinator_epoch: 7,
        };
        let bytes = encode(1000, 3, marker, 5_000);
        let header = batch::validate_produced(&bytes).expect("valid");
        assert!(header.is_control() && header.is_transactional());
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (1000, 3, NO_SEQUENCE)
        );
        assert_eq!((header.records_count, header.max_timestamp), (1, 5_000));
        assert_eq!(decode(&bytes), Ok(Some(marker)));
    }

    #[test]
    fn abort_and_commit_markers_read_back_as_written() {
        for control in [ControlType::Abort, ControlType::Commit] {
            let marker = Marker {
                control,
                coordinator_epoch: 0,
            };
            assert_eq!(decode(&encode(1, 0, marker, 0)), Ok(Some(marker)));
        }
    }

    #[test]
    fn the_marker_bytes_are_kafkas() {
        // Key: version 0, type 1 (COMMIT); value: version 0, coordinator epoch 0x01020304.
        let bytes = encode(
            5,
            0,
            Marker {
                control: ControlType::Commit,
                coordinator_epoch: 0x0102_0304,
            },
            0,
        );
        let records = records::decode(&bytes, 1 << 16).unwrap();
        assert_eq!(records[0].key.as_deref(), Some(&[0u8, 0, 0, 1][..]));
        assert_eq!(records[0].value.as_deref(), Some(&[0u8, 0, 1, 2, 3, 4][..]));
    }

    #[test]
    fn a_data_batch_is_not_a_marker() {
        let data = builder::simple(1, 4, b'x', 0);
        assert_eq!(decode(&data), Err(MarkerError::NotControl));
    }

    #[test]
    fn an_emptied_control_batch_ends_nothing() {
        let bytes = encode(
            1,
            0,
            Marker {
                control: ControlType::Abort,
                coordinator_epoch: 0,
            },
            0,
        );
        assert_eq!(decode(&batch::emptied(&bytes)), Ok(None));
    }

    #[test]
    fn an_unknown_control_type_is_refused() {
        let key = vec![0, 0, 0, 9];
        let bad = builder::batch(&[Record {
            key: Some(key),
            value: Some(vec![0; 6]),
            timestamp_ms: 0,
        }]);
        let bad = builder::with_attributes(bad, CONTROL_BIT | TRANSACTIONAL_BIT);
        assert_eq!(decode(&bad), Err(MarkerError::UnknownType(9)));
    }
}
