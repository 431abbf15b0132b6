//! Blocking work (file writes, fsyncs, directory renames, compaction jobs) run off the shard's
//! thread, on glommio's blocking thread pool, without the hang glommio has on a panic.
//!
//! glommio's `spawn_blocking` writes the closure's result into a slot its future reads once
//! the pool signals completion; when the closure panics, the pool thread unwinds before
//! signalling and the awaiting task waits forever (glommio issue #37). [`run`] catches the
//! panic on the pool thread, hands it back as a value, and resumes it in the awaiting task:
//! the caller fails as it would had the closure run inline. Every blocking call in the broker
//! goes through [`run`].

use std::panic::{self, AssertUnwindSafe};

/// Runs `work` on the executor's blocking thread pool and returns its result. A panic in
/// `work` is resumed in the calling task (same payload), never left hanging.
pub async fn run<F, R>(work: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    // `work` and its captures are dropped on the pool thread whether or not it panics, and
    // nothing observes them afterwards: unwind safety holds.
    let outcome = glommio::executor()
        .spawn_blocking(move || panic::catch_unwind(AssertUnwindSafe(work)))
        .await;
    match outcome {
        Ok(result) => result,
        Err(payload) => panic::resume_unwind(payload),
    }
}

#[cfg(test)]
mod tests {
    //! A panicking closure fails its caller promptly (the panic reaches the awaiting task with
    //! its message) and the pool keeps serving later calls; a normal closure returns its
    //! value. The executor runs on its own thread and the test waits a bounded time for it,
    //! so a regression to glommio's hang fails the test instead of hanging it.
    use super::*;
    use futures_lite::FutureExt;
    use std::sync::mpsc;
    use std::time::Duration;

    fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    }

    #[test]
    fn panicking_closure_fails_the_caller_instead_of_hanging() {
        let (done, outcome) = mpsc::channel();
        let executor = std::thread::spawn(move || {
            glommio::LocalExecutorBuilder::default()
                .spawn(move || async move {
                    let caught = AssertUnwindSafe(run(|| -> u32 { panic!("blocking work broke") }))
                        .catch_unwind()
                        .await;
                    let message = caught.err().map(|p| panic_message(p.as_ref()));
                    let after = run(|| 41 + 1).await;
                    done.send((message, after)).unwrap();
                })
                .unwrap()
                .join()
                .unwrap();
        });
        let (message, after) = outcome
            .recv_timeout(Duration::from_secs(60))
            .expect("the task awaiting a panicking closure never finished");
        assert_eq!(message.as_deref(), Some("blocking work broke"));
        assert_eq!(after, 42, "the pool serves calls after a panic");
        executor.join().unwrap();
    }
}
