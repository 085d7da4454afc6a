//! Checking the audit chain: [`ChainVerifier`] walks records in id order from the anchor and
//! reports the first broken one ([`VerifyReport`]). Shared by every [`MetaStore`](crate::MetaStore)
//! implementation, so they all judge a chain the same way.

use super::{AuditRecord, ChainHash};
use serde::Serialize;

/// Why a record fails the chain check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BrokenReason {
    /// Its stored hash is not the hash of its fields (a field was edited).
    HashMismatch,
    /// Its `prev_hash` is not the previous record's hash (a record before it was edited or removed).
    PrevHashMismatch,
    /// Its id does not follow the previous one (a record was removed).
    IdGap {
        /// The id that should have come next.
        expected: i64,
    },
    /// A stored field cannot be read back (edited to an invalid value).
    Unreadable {
        /// What is wrong.
        detail: String,
    },
}

/// The first record that fails the chain check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokenRecord {
    /// Its id.
    pub id: i64,
    /// Why.
    pub reason: BrokenReason,
}

/// Result of a chain check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records checked (up to and including the broken one).
    pub checked: u64,
    /// The first broken record, if any.
    pub first_broken: Option<BrokenRecord>,
}

/// Checks records one by one in id order, starting from the anchor (genesis or retention).
#[derive(Debug)]
pub struct ChainVerifier {
    expected_id: i64,
    expected_prev: ChainHash,
    checked: u64,
}

impl ChainVerifier {
    /// Starts after record `anchor_id` whose hash is `anchor_hash` (`0` and
    /// [`ChainHash::GENESIS`] when nothing was ever removed).
    pub fn new(anchor_id: i64, anchor_hash: ChainHash) -> Self {
        Self { expected_id: anchor_id + 1, expected_prev: anchor_hash, checked: 0 }
    }

    /// Checks the next record; the first error is the report's `first_broken`.
    pub fn check(&mut self, r: &AuditRecord) -> Result<(), BrokenRecord> {
        self.checked += 1;
        let broken = |reason| BrokenRecord { id: r.id, reason };
        if r.id != self.expected_id {
            return Err(broken(BrokenReason::IdGap { expected: self.expected_id }));
        }
        if AuditRecord::compute_hash(r.id, &r.entry, &r.prev_hash) != r.hash {
            return Err(broken(BrokenReason::HashMismatch));
        }
        if r.prev_hash != self.expected_prev {
            return Err(broken(BrokenReason::PrevHashMismatch));
        }
        self.expected_id = r.id + 1;
        self.expected_prev = r.hash;
        Ok(())
    }

    /// Records a row that could not be read as a record.
    pub fn unreadable(&mut self, id: i64, detail: String) -> BrokenRecord {
        self.checked += 1;
        BrokenRecord { id, reason: BrokenReason::Unreadable { detail } }
    }

    /// The report so far, with `first_broken` if the check stopped on one.
    pub fn report(&self, first_broken: Option<BrokenRecord>) -> VerifyReport {
        VerifyReport { checked: self.checked, first_broken }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEntry, Outcome};
    use std::net::IpAddr;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = ChainHash::GENESIS;
        (1..=n)
            .map(|id| {
                let mut e = AuditEntry::new(1_000 + id, "job.cancel", Outcome::Success);
                e.target = format!("job-{id}");
                e.client_ip = Some(IpAddr::from([10, 0, 0, 1]));
                let r = AuditRecord::chain(id, e, prev);
                prev = r.hash;
                r
            })
            .collect()
    }

    fn verify(records: &[AuditRecord]) -> VerifyReport {
        let mut v = ChainVerifier::new(0, ChainHash::GENESIS);
        for r in records {
            if let Err(b) = v.check(r) {
                return v.report(Some(b));
            }
        }
        v.report(None)
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let r = verify(&chain(5));
        assert_eq!(r, VerifyReport { checked: 5, first_broken: None });
    }

    #[test]
    fn an_edited_record_is_reported() {
        let mut c = chain(5);
        c[2].entry.target = "job-99".into();
        let r = verify(&c);
        assert_eq!(r.first_broken, Some(BrokenRecord { id: 3, reason: BrokenReason::HashMismatch }));
        assert_eq!(r.checked, 3);
    }

    #[test]
    fn a_rehashed_edit_is_caught_at_the_next_record() {
        let mut c = chain(5);
        c[2].entry.target = "job-99".into();
        c[2].hash = AuditRecord::compute_hash(3, &c[2].entry, &c[2].prev_hash);
        let r = verify(&c);
        assert_eq!(r.first_broken, Some(BrokenRecord { id: 4, reason: BrokenReason::PrevHashMismatch }));
    }

    #[test]
    fn a_removed_record_is_reported() {
        let mut c = chain(5);
        c.remove(1);
        let r = verify(&c);
        assert_eq!(r.first_broken, Some(BrokenRecord { id: 3, reason: BrokenReason::IdGap { expected: 2 } }));
    }

    #[test]
    fn verification_can_start_from_a_retention_anchor() {
        let c = chain(5);
        let mut v = ChainVerifier::new(2, c[1].hash);
        for r in &c[2..] {
            v.check(r).unwrap();
        }
        assert_eq!(v.report(None).checked, 3);
    }
}
