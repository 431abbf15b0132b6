//! Transaction ids: `zxid = epoch << 32 | counter`, as in ZooKeeper.
//!
//! The epoch names the leader that proposed the transaction; the counter orders the
//! transactions of that leader, starting at 1. Zxid 0 is "nothing yet".

/// A transaction id; its numeric order is the total order of the replicated history.
pub type Zxid = u64;

/// A server's `myid` (the `N` of `server.N` in zoo.cfg).
pub type ServerId = u64;

/// The epoch half of a zxid.
pub fn epoch_of(zxid: Zxid) -> u32 {
    (zxid >> 32) as u32
}

/// The counter half of a zxid.
pub fn counter_of(zxid: Zxid) -> u32 {
    zxid as u32
}

/// Builds a zxid from its halves.
pub fn make_zxid(epoch: u32, counter: u32) -> Zxid {
    (u64::from(epoch) << 32) | u64::from(counter)
}

/// True when `next` may directly follow `prev` in a log.
///
/// Within an epoch the counters are consecutive; a new epoch starts at counter 1. A log that
/// breaks this rule has lost a message (a gap), which ZAB's FIFO channels forbid, so a
/// receiver treats it as a broken connection.
pub fn follows(prev: Zxid, next: Zxid) -> bool {
    if epoch_of(next) == epoch_of(prev) {
        next == prev + 1
    } else {
        epoch_of(next) > epoch_of(prev) && counter_of(next) == 1
    }
}

/// Formats a zxid the way ZooKeeper logs it (`0x<hex>`), for log lines and errors.
pub fn fmt_zxid(zxid: Zxid) -> String {
    format!("0x{zxid:x}")
}

#[cfg(test)]
mod tests {
    //! Proves the zxid arithmetic and the contiguity rule on hand-picked cases.
    use super::*;

    #[test]
    fn halves_round_trip_and_contiguity() {
        let z = make_zxid(3, 7);
        assert_eq!((epoch_of(z), counter_of(z)), (3, 7));
        assert!(follows(make_zxid(3, 7), make_zxid(3, 8)));
        assert!(!follows(make_zxid(3, 7), make_zxid(3, 9)));
        assert!(follows(make_zxid(3, 7), make_zxid(5, 1)));
        assert!(!follows(make_zxid(3, 7), make_zxid(5, 2)));
        assert!(!follows(make_zxid(3, 7), make_zxid(2, 1)));
        assert!(follows(0, make_zxid(1, 1)));
    }
}
