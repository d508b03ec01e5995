//! The async face of group commit: a future per append, woken by whoever
//! completes the sync that covers it. No thread per writer, no runtime.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::error::AppendError;
use crate::group_commit::{EnqueueError, Shared};
use crate::record::{Lsn, RecordKind};

/// A pending async append; resolves to its LSN once the record is durable.
#[must_use = "an append is only known durable when its future resolves"]
pub struct AppendFuture {
    shared: Arc<Shared>,
    stage: Stage,
}

enum Stage {
    Waiting(Lsn),
    /// The pending batch was full; the payload waits here for space.
    Blocked {
        kind: RecordKind,
        payload: Vec<u8>,
    },
    Failed(AppendError),
    Done,
}

impl AppendFuture {
    pub(crate) fn start(shared: Arc<Shared>, kind: RecordKind, payload: &[u8]) -> AppendFuture {
        let stage = match shared.check_payload(kind, payload) {
            Err(error) => Stage::Failed(error),
            Ok(()) => match shared.enqueue_async(kind, payload, None) {
                Ok(lsn) => Stage::Waiting(lsn),
                Err(EnqueueError::Full) => Stage::Blocked {
                    kind,
                    payload: payload.to_vec(),
                },
                Err(EnqueueError::Refused(error)) => Stage::Failed(error),
            },
        };
        AppendFuture { shared, stage }
    }
}

impl Future for AppendFuture {
    type Output = Result<Lsn, AppendError>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match mem::replace(&mut this.stage, Stage::Done) {
                Stage::Done => panic!("AppendFuture polled after completion"),
                Stage::Failed(error) => return Poll::Ready(Err(error)),
                Stage::Waiting(lsn) => match this.shared.poll_durable(lsn, context.waker()) {
                    Some(outcome) => return Poll::Ready(outcome),
                    None => {
                        this.stage = Stage::Waiting(lsn);
                        return Poll::Pending;
                    }
                },
                Stage::Blocked { kind, payload } => {
                    match this
                        .shared
                        .enqueue_async(kind, &payload, Some(context.waker()))
                    {
                        Ok(lsn) => this.stage = Stage::Waiting(lsn),
                        Err(EnqueueError::Full) => {
                            this.stage = Stage::Blocked { kind, payload };
                            return Poll::Pending;
                        }
                        Err(EnqueueError::Refused(error)) => return Poll::Ready(Err(error)),
                    }
                }
            }
        }
    }
}

/// Resolves once every record up to an LSN is durable (or the log is
/// poisoned), for callers that must not answer before an earlier append
/// that decided their answer is durable.
#[must_use = "durability is only known when the future resolves"]
pub struct DurableFuture {
    shared: Arc<Shared>,
    lsn: Lsn,
}

impl DurableFuture {
    pub(crate) fn new(shared: Arc<Shared>, lsn: Lsn) -> DurableFuture {
        DurableFuture { shared, lsn }
    }
}

impl Future for DurableFuture {
    type Output = Result<Lsn, AppendError>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        match self.shared.poll_durable(self.lsn, context.waker()) {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }
}

struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives a future to completion on the calling thread, parking between
/// polls: for blocking callers of the async API, with no runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let waker = std::task::Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}
