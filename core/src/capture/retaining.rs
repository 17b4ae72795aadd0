//! The datapath's path while only the retention listens: one copy, straight into the
//! backlog, when the readers' lock is free.
//!
//! With nobody attached no reader drains the threads' rings, so a record written to its
//! ring would be copied a second time, on the datapath thread too, when the ring fills.
//! Instead, while the lock is free, the record goes into the backlog's open batch at
//! once. A thread whose ring still holds records (logged while the lock was taken)
//! first has the rings drained, so that its records keep their order. The lock is only
//! tried: a datapath thread never waits here for another one, nor for an attach.

use std::sync::atomic::Ordering;

use super::Shared;
use crate::log::try_lock;
use crate::ring::{self, RecordHeader};

impl Shared {
    /// Stores the record in the backlog directly and says so, or says it could not
    /// (an output is attached, the lock is taken, or this thread's ring cannot be
    /// drained first): the caller then writes it to the ring.
    #[inline]
    pub(super) fn append_while_retaining(
        &self,
        header: &RecordHeader,
        meta: &[u8],
        packet: &[u8],
    ) -> bool {
        // Outputs attached: their readers drain the rings, and the lock is theirs. Looked
        // at before trying the lock, so that a capture with outputs pays one load here.
        if self.retainer == 0 || self.outputs(self.hot.state.load(Ordering::Relaxed)) != 0 {
            return false;
        }
        let Some(mut log) = try_lock(&self.log) else {
            return false;
        };
        // Checked under the lock: an attach counts its output first and takes the lock
        // after, so a record appended here comes before its starting point.
        if self.outputs(self.hot.state.load(Ordering::Acquire)) != 0 {
            return false;
        }
        if ring::unread_in_own_ring(self.hot.id) != Some(0) {
            // This thread logged into its ring (the lock was taken then): drain the
            // rings first, this one included, or its records would come out of order.
            let Some(mut new_rings) = try_lock(&self.new_rings) else {
                return false;
            };
            log.adopt(&mut new_rings);
            drop(new_rings);
            self.collect(&mut log);
            if ring::unread_in_own_ring(self.hot.id) != Some(0) {
                return false;
            }
        }
        log.append(header, meta, packet);
        true
    }
}
