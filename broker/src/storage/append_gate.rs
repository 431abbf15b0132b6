//! A strictly first-come-first-served async lock for the appenders of one log.
//!
//! Appends must take offsets in arrival order (a producer pipelining requests relies on it)
//! and none may starve. glommio's semaphore lets a task that never suspends take a released
//! permit again before the woken waiter runs; this gate hands the lock directly to the oldest
//! waiter instead.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// The gate; see the module doc.
#[derive(Debug, Default)]
pub struct AppendGate {
    locked: Cell<bool>,
    closed: Cell<bool>,
    next_ticket: Cell<u64>,
    /// Waiting tickets, oldest first.
    queue: RefCell<VecDeque<(u64, Option<Waker>)>>,
    /// Ticket the lock was handed to, not yet picked up.
    granted: Cell<Option<u64>>,
}

/// Held while a task appends; releasing hands the gate to the oldest waiter.
#[derive(Debug)]
pub struct GateGuard<'a> {
    gate: &'a AppendGate,
}

/// The gate was closed (the log is closing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateClosed;

impl AppendGate {
    /// Waits for the gate, in arrival order.
    pub fn acquire(&self) -> GateWait<'_> {
        GateWait {
            gate: self,
            ticket: None,
        }
    }

    /// Refuses every waiting and future `acquire`.
    pub fn close(&self) {
        self.closed.set(true);
        for (_, w) in self.queue.borrow_mut().drain(..) {
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    fn release(&self) {
        let next = self.queue.borrow_mut().pop_front();
        match next {
            Some((ticket, waker)) => {
                // Stays locked: ownership passes to `ticket`.
                self.granted.set(Some(ticket));
                if let Some(w) = waker {
                    w.wake();
                }
            }
            None => self.locked.set(false),
        }
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// Future of [`AppendGate::acquire`].
#[derive(Debug)]
pub struct GateWait<'a> {
    gate: &'a AppendGate,
    ticket: Option<u64>,
}

impl<'a> Future for GateWait<'a> {
    type Output = Result<GateGuard<'a>, GateClosed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let gate = self.gate;
        match self.ticket {
            None => {
                if gate.closed.get() {
                    return Poll::Ready(Err(GateClosed));
                }
                if !gate.locked.get() && gate.queue.borrow().is_empty() {
                    gate.locked.set(true);
                    return Poll::Ready(Ok(GateGuard { gate }));
                }
                let ticket = gate.next_ticket.get();
                gate.next_ticket.set(ticket + 1);
                gate.queue
                    .borrow_mut()
                    .push_back((ticket, Some(cx.waker().clone())));
                self.ticket = Some(ticket);
                Poll::Pending
            }
            Some(ticket) => {
                if gate.granted.get() == Some(ticket) {
                    gate.granted.set(None);
                    self.ticket = None;
                    return Poll::Ready(Ok(GateGuard { gate }));
                }
                if gate.closed.get() {
                    self.ticket = None;
                    return Poll::Ready(Err(GateClosed));
                }
                if let Some(entry) = gate
                    .queue
                    .borrow_mut()
                    .iter_mut()
                    .find(|(t, _)| *t == ticket)
                {
                    entry.1 = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for GateWait<'_> {
    fn drop(&mut self) {
        // A waiter that gives up leaves the queue; if the gate was already handed to it,
        // it passes the gate on.
        if let Some(ticket) = self.ticket.take() {
            if self.gate.granted.get() == Some(ticket) {
                self.gate.granted.set(None);
                self.gate.release();
            } else {
                self.gate.queue.borrow_mut().retain(|(t, _)| *t != ticket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The gate serves waiters in arrival order even when the holder re-acquires at once,
    //! and a dropped waiter neither blocks nor loses the gate.
    use super::*;
    use std::rc::Rc;

    #[test]
    fn fifo_without_barging_and_cancellation_safe() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let gate = Rc::new(AppendGate::default());
                let order = Rc::new(RefCell::new(Vec::new()));
                let first = gate.acquire().await.unwrap();
                let mut tasks = Vec::new();
                for i in 0..3 {
                    let (gate, order) = (gate.clone(), order.clone());
                    tasks.push(glommio::spawn_local(async move {
                        for _ in 0..2 {
                            let _g = gate.acquire().await.unwrap();
                            order.borrow_mut().push(i);
                        }
                    }));
                }
                // Let the three queue up, and one more waiter that gives up.
                glommio::executor().yield_now().await;
                {
                    let mut dropped = Box::pin(gate.acquire());
                    let waker = futures_waker();
                    let mut cx = Context::from_waker(&waker);
                    assert!(dropped.as_mut().poll(&mut cx).is_pending());
                }
                drop(first);
                for t in tasks {
                    t.await;
                }
                assert_eq!(*order.borrow(), vec![0, 1, 2, 0, 1, 2]);
                gate.close();
                assert!(gate.acquire().await.is_err());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    fn futures_waker() -> Waker {
        use std::task::{RawWaker, RawWakerVTable};
        fn clone(_: *const ()) -> RawWaker {
            RawWaker::new(std::ptr::null(), &VTABLE)
        }
        fn noop(_: *const ()) {}
        static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
        // SAFETY: every vtable function ignores the data pointer.
        unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
    }
}
