//! The log checkpoint: the few offsets the log must remember across restarts, in one small
//! file rewritten atomically (temp file, sync, rename, directory sync).
//!
//! - `recovery_point`: every batch below it is durable and its segment's index files are
//!   written, so recovery scans only the segment holding it and those after.
//! - `log_start_offset`: raised by retention and DeleteRecords; never lowered.
//! - `offset_reservation`: no unsynced offset at or above it has ever been shown outside the
//!   log. After a crash the log continues from here (or from the end of the recovered data, if
//!   that is further), so an offset shown before the crash is never reused; see
//!   [`super::reservation`].

/// The checkpointed offsets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub recovery_point: u64,
    pub log_start_offset: u64,
    pub offset_reservation: u64,
}

const HEADER: &str = "faultline-log-checkpoint v1";

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let body = format!(
            "{HEADER}\nrecovery_point {}\nlog_start_offset {}\noffset_reservation {}\n",
            self.recovery_point, self.log_start_offset, self.offset_reservation
        );
        let crc = crc32c::crc32c(body.as_bytes());
        format!("{body}crc {crc:08x}\n").into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let crc_at = text.rfind("crc ").ok_or("missing crc")?;
        let (body, crc_line) = text.split_at(crc_at);
        let stored = u32::from_str_radix(crc_line.trim_start_matches("crc ").trim(), 16)
            .map_err(|_| "malformed crc".to_string())?;
        if crc32c::crc32c(body.as_bytes()) != stored {
            return Err("checksum mismatch".into());
        }
        let mut lines = body.lines();
        if lines.next() != Some(HEADER) {
            return Err("unknown checkpoint version".into());
        }
        let mut field = |name: &str| -> Result<u64, String> {
            let line = lines.next().ok_or_else(|| format!("missing {name}"))?;
            line.strip_prefix(name)
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("malformed {name}"))
        };
        Ok(Checkpoint {
            recovery_point: field("recovery_point")?,
            log_start_offset: field("log_start_offset")?,
            offset_reservation: field("offset_reservation")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_round_trips_and_a_damaged_one_is_refused() {
        let c = Checkpoint {
            recovery_point: 10,
            log_start_offset: 3,
            offset_reservation: 99,
        };
        let mut bytes = c.encode();
        assert_eq!(Checkpoint::decode(&bytes).unwrap(), c);
        bytes[40] ^= 0x01;
        assert!(Checkpoint::decode(&bytes).is_err());
        assert!(Checkpoint::decode(b"").is_err());
    }
}
