//! A single-threaded "something changed" signal for tasks of one shard: appenders waiting for
//! their group's write, fetches long-polling for new data.
//!
//! Waiters remember the generation they saw; `notify` bumps it and wakes them all. Checking a
//! condition and creating the wait future without yielding in between cannot miss a wake-up,
//! because everything runs on one executor thread.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every task waiting on it.
#[derive(Debug, Default)]
pub struct Signal {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    /// Wakes all current waiters.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Resolves at the next [`Signal::notify`] after this call.
    pub fn wait(&self) -> SignalWait<'_> {
        SignalWait {
            signal: self,
            seen: self.generation.get(),
        }
    }
}

/// Future of [`Signal::wait`].
#[derive(Debug)]
pub struct SignalWait<'a> {
    signal: &'a Signal,
    seen: u64,
}

impl Future for SignalWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.generation.get() != self.seen {
            return Poll::Ready(());
        }
        let mut waiters = self.signal.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
