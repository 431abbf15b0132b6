//! The memory budget of one shard (`memory_budget_bytes` of its core in the profile): a byte
//! account that connection buffers, requests being served and answers not yet sent are charged
//! to, and that decides when a connection may read.
//!
//! A shard is one single-threaded executor, so the account is plain cells, no locks, no
//! atomics (besides the gauges copied to [`ShardMetrics`] for other threads to read). Every
//! charge is a [`Reservation`] that gives its bytes back when dropped.
//!
//! Two kinds of charge:
//! - *admitted*: work already taken in (a complete request, its answer, a connection's base
//!   read buffer). Charged at once, never waits: waiting there could hold a frame while waiting
//!   for memory that only that frame's completion frees.
//! - *receiving*: room for a frame that is still arriving, reserved whole when its length
//!   prefix is known. It waits, in FIFO order, until it fits under both the budget and the
//!   receiving share (half the budget), so frames whose senders stall can hold at most half of
//!   it and complete requests and answers always have the other half.
//!
//! The policy built on this (which reads wait, the base buffer of a connection) is in
//! `connection.rs` and docs/kafka.md, "Memory budget".

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::metrics::ShardMetrics;

pub struct MemoryBudget {
    limit_bytes: u64,
    receiving_limit_bytes: u64,
    /// Bytes charged, of both kinds.
    used: Cell<u64>,
    /// Bytes of receiving reservations (part of `used`).
    receiving: Cell<u64>,
    /// Receiving reservations not granted yet, oldest first.
    waiters: RefCell<VecDeque<Rc<Waiter>>>,
    metrics: Arc<ShardMetrics>,
}

struct Waiter {
    bytes: u64,
    granted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl MemoryBudget {
    pub fn new(limit_bytes: u64, metrics: Arc<ShardMetrics>) -> Rc<MemoryBudget> {
        assert!(limit_bytes > 0);
        metrics
            .memory_budget_bytes
            .store(limit_bytes, Ordering::Relaxed);
        Rc::new(MemoryBudget {
            limit_bytes,
            receiving_limit_bytes: limit_bytes / 2,
            used: Cell::new(0),
            receiving: Cell::new(0),
            waiters: RefCell::new(VecDeque::new()),
            metrics,
        })
    }

    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    /// The largest receiving reservation that can ever be granted: half the budget.
    pub fn receiving_limit_bytes(&self) -> u64 {
        self.receiving_limit_bytes
    }

    pub fn used_bytes(&self) -> u64 {
        self.used.get()
    }

    /// Receiving reservations waiting for memory.
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Whether a receiving reservation of `bytes` asked for now would wait.
    pub fn would_wait(&self, bytes: u64) -> bool {
        !self.waiters.borrow().is_empty() || !self.fits(bytes)
    }

    /// An admitted charge of `bytes`; never waits, may take the account past its limit.
    pub fn charge(self: &Rc<Self>, bytes: u64) -> Reservation {
        self.add(bytes, false);
        Reservation {
            budget: self.clone(),
            bytes,
            receiving: false,
        }
    }

    /// A receiving reservation of `bytes`, granted in FIFO order once it fits. `bytes` 0 waits
    /// until the account is within its limit (and nothing reserved before it still waits).
    pub fn receive(self: &Rc<Self>, bytes: u64) -> Receive {
        assert!(
            bytes <= self.receiving_limit_bytes,
            "a reservation of {bytes} bytes can never fit (caller checks)"
        );
        Receive {
            budget: self.clone(),
            bytes,
            waiter: None,
        }
    }

    fn fits(&self, bytes: u64) -> bool {
        self.used.get() + bytes <= self.limit_bytes
            && self.receiving.get() + bytes <= self.receiving_limit_bytes
    }

    fn add(&self, bytes: u64, receiving: bool) {
        self.used.set(self.used.get() + bytes);
        if receiving {
            self.receiving.set(self.receiving.get() + bytes);
        }
        self.publish();
    }

    fn remove(&self, bytes: u64, receiving: bool) {
        debug_assert!(bytes <= self.used.get());
        self.used.set(self.used.get() - bytes);
        if receiving {
            debug_assert!(bytes <= self.receiving.get());
            self.receiving.set(self.receiving.get() - bytes);
        }
        self.publish();
        self.grant();
    }

    fn publish(&self) {
        let used = self.used.get();
        self.metrics
            .memory_used_bytes
            .store(used, Ordering::Relaxed);
        self.metrics
            .memory_peak_bytes
            .fetch_max(used, Ordering::Relaxed);
    }

    /// Grants the oldest waiters while they fit; the first that does not fit blocks the ones
    /// behind it, so a big frame is not starved by a stream of small ones.
    fn grant(&self) {
        loop {
            let waiter = {
                let waiters = self.waiters.borrow();
                match waiters.front() {
                    Some(waiter) if self.fits(waiter.bytes) => waiter.clone(),
                    _ => return,
                }
            };
            self.waiters.borrow_mut().pop_front();
            self.add(waiter.bytes, true);
            waiter.granted.set(true);
            let waker = waiter.waker.borrow_mut().take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// Bytes charged to a [`MemoryBudget`]; given back on drop.
pub struct Reservation {
    budget: Rc<MemoryBudget>,
    bytes: u64,
    receiving: bool,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Sets an admitted charge to `bytes` (it follows a buffer's size).
    pub fn set_admitted(&mut self, bytes: u64) {
        assert!(!self.receiving, "only admitted charges are resized");
        if bytes > self.bytes {
            self.budget.add(bytes - self.bytes, false);
        } else if bytes < self.bytes {
            self.budget.remove(self.bytes - bytes, false);
        }
        self.bytes = bytes;
    }

    /// Turns the first `bytes` of a receiving reservation (a frame that has arrived) into an
    /// admitted charge; the rest of the reservation is given back.
    pub fn admit(mut self, bytes: u64) -> Reservation {
        let admitted = self.budget.charge(bytes);
        let held = std::mem::take(&mut self.bytes);
        if held > 0 {
            self.budget.remove(held, self.receiving);
        }
        admitted
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.remove(self.bytes, self.receiving);
        }
    }
}

/// A receiving reservation being waited for; see [`MemoryBudget::receive`].
pub struct Receive {
    budget: Rc<MemoryBudget>,
    bytes: u64,
    waiter: Option<Rc<Waiter>>,
}

impl Future for Receive {
    type Output = Reservation;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reservation> {
        let this = &mut *self;
        match &this.waiter {
            None => {
                if this.budget.waiters.borrow().is_empty() && this.budget.fits(this.bytes) {
                    this.budget.add(this.bytes, true);
                    return Poll::Ready(Reservation {
                        budget: this.budget.clone(),
                        bytes: this.bytes,
                        receiving: true,
                    });
                }
                let waiter = Rc::new(Waiter {
                    bytes: this.bytes,
                    granted: Cell::new(false),
                    waker: RefCell::new(Some(cx.waker().clone())),
                });
                this.budget.waiters.borrow_mut().push_back(waiter.clone());
                this.waiter = Some(waiter);
                Poll::Pending
            }
            Some(waiter) if waiter.granted.get() => {
                this.waiter = None;
                Poll::Ready(Reservation {
                    budget: this.budget.clone(),
                    bytes: this.bytes,
                    receiving: true,
                })
            }
            Some(waiter) => {
                *waiter.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Receive {
    fn drop(&mut self) {
        let Some(waiter) = self.waiter.take() else {
            return;
        };
        if waiter.granted.get() {
            // Granted but never taken: give it back.
            self.budget.remove(self.bytes, true);
        } else {
            self.budget
                .waiters
                .borrow_mut()
                .retain(|other| !Rc::ptr_eq(other, &waiter));
            // It may have been the one blocking those behind it.
            self.budget.grant();
        }
    }
}

#[cfg(test)]
mod tests {
    //! Proves the account: charges and reservations add up and are given back on drop,
    //! receiving reservations wait while they would pass the budget or its receiving half and
    //! are granted in FIFO order as memory is released, and a waiter that gives up unblocks
    //! the ones behind it. Futures are polled by hand with a counting waker.
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(receive: &mut Receive, wakes: &Arc<Count>) -> Option<Reservation> {
        let waker = Waker::from(wakes.clone());
        match Pin::new(receive).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(reservation) => Some(reservation),
            Poll::Pending => None,
        }
    }

    fn budget(limit: u64) -> Rc<MemoryBudget> {
        MemoryBudget::new(limit, Arc::new(ShardMetrics::default()))
    }

    #[test]
    fn charges_add_up_and_are_given_back() {
        let budget = budget(1000);
        let mut a = budget.charge(100);
        let b = budget.charge(2000);
        assert_eq!(budget.used_bytes(), 2100, "admitted charges never wait");
        a.set_admitted(300);
        assert_eq!(budget.used_bytes(), 2300);
        drop(b);
        a.set_admitted(50);
        assert_eq!(budget.used_bytes(), 50);
        drop(a);
        assert_eq!(budget.used_bytes(), 0);
        assert_eq!(
            ShardMetrics::get(&budget.metrics.memory_peak_bytes),
            2300,
            "the peak is published"
        );
    }

    #[test]
    fn receiving_waits_for_the_budget_and_its_half_in_fifo_order() {
        let budget = budget(1000);
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let first = poll(&mut budget.receive(400), &wakes).expect("fits at once");
        // 400 + 200 would pass the receiving half (500).
        let mut second = budget.receive(200);
        assert!(poll(&mut second, &wakes).is_none());
        // A smaller one that would fit still queues behind the older waiter.
        let mut third = budget.receive(50);
        assert!(poll(&mut third, &wakes).is_none());
        assert_eq!(budget.waiting(), 2);
        // The frame arrives: its bytes become admitted, the reservation goes.
        let admitted = first.admit(400);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2, "both granted");
        let second = poll(&mut second, &wakes).expect("granted");
        let third = poll(&mut third, &wakes).expect("granted");
        assert_eq!(budget.used_bytes(), 650);
        // Admitted memory counts against the whole budget: 650 + 400 > 1000.
        let mut fourth = budget.receive(400);
        assert!(poll(&mut fourth, &wakes).is_none());
        drop(admitted);
        assert!(
            poll(&mut fourth, &wakes).is_none(),
            "receiving half still full"
        );
        drop(second);
        drop(third);
        assert_eq!(poll(&mut fourth, &wakes).expect("granted").bytes(), 400);
        drop(fourth);
        assert_eq!(budget.used_bytes(), 0);
    }

    #[test]
    fn zero_bytes_waits_until_within_the_limit() {
        let budget = budget(1000);
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let over = budget.charge(1500);
        let mut wait = budget.receive(0);
        assert!(poll(&mut wait, &wakes).is_none());
        drop(over);
        assert!(poll(&mut wait, &wakes).is_some());
    }

    #[test]
    fn a_waiter_that_gives_up_unblocks_the_next_and_a_grant_not_taken_is_returned() {
        let budget = budget(1000);
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let held = budget.charge(900);
        let mut big = budget.receive(500);
        assert!(poll(&mut big, &wakes).is_none());
        let mut small = budget.receive(100);
        assert!(poll(&mut small, &wakes).is_none());
        drop(big);
        assert!(
            poll(&mut small, &wakes).is_some(),
            "no longer behind the big one"
        );
        let mut granted_not_taken = budget.receive(400);
        assert!(poll(&mut granted_not_taken, &wakes).is_none());
        drop(held);
        assert_eq!(budget.used_bytes(), 400, "granted on release");
        drop(granted_not_taken);
        assert_eq!(budget.used_bytes(), 0);
    }
}
