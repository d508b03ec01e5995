//! A fixed pool of password-hashing threads fed by a bounded queue.
//!
//! argon2id is expensive on purpose (19 MiB and two passes at the default
//! cost), so hashing is admitted, never queued without end: `workers`
//! threads each own one [`PasswordHasher`] whose working memory is allocated
//! when the pool starts, and at most `queue_max` jobs wait for them. A job
//! that finds the queue full is refused at once ([`PoolBusy`]) without
//! hashing, so the memory spent on hashing is `workers × cost` whatever
//! arrives.
//!
//! The workers run at a lower CPU priority (nice [`HASH_NICE`]): hashing is
//! slow on purpose and must not take the cores from payments. Measured: with
//! as many workers as cores at normal priority, a login flood kept every
//! core hashing and payments fell to a thirtieth of their rate.
//!
//! It knows nothing of users or gRPC: a job is a closure given a hasher.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use coordinator::users::{HashCost, PasswordHasher};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce(&mut PasswordHasher) + Send>;

/// The pool refused a job: every worker is busy and `queue_max` jobs wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{queue_max} password checks are already waiting for {workers} hashing workers")]
pub struct PoolBusy {
    pub workers: usize,
    pub queue_max: usize,
}

/// The most hashing workers a gateway may be configured with.
pub const HASH_WORKERS_MAX: usize = 256;

/// The niceness of the hashing threads (0 is normal, 19 the lowest): the
/// scheduler gives a normal thread about ten times their share of a core.
pub const HASH_NICE: i32 = 10;

/// Handle to the pool; cheap to clone. The workers stop when the last
/// handle is dropped and the queue is drained.
#[derive(Clone)]
pub struct PasswordPool {
    queue: SyncSender<Job>,
    workers: usize,
    queue_max: usize,
    /// Jobs a worker ran, for tests and logs.
    hashed: Arc<AtomicU64>,
}

impl PasswordPool {
    /// Starts `workers` threads, each allocating its hasher's memory for
    /// `cost` before the pool returns (so a machine without the memory
    /// fails at start, not under load).
    pub fn start(workers: usize, queue_max: usize, cost: HashCost) -> PasswordPool {
        assert!((1..=HASH_WORKERS_MAX).contains(&workers));
        let (queue, jobs) = sync_channel::<Job>(queue_max);
        let jobs = Arc::new(Mutex::new(jobs));
        let hashed = Arc::new(AtomicU64::new(0));
        // One message per worker, so a buffer of `workers` never blocks.
        let (ready, started) = sync_channel(workers);
        for index in 0..workers {
            let jobs = Arc::clone(&jobs);
            let ready = ready.clone();
            std::thread::Builder::new()
                .name(format!("password-{index}"))
                .spawn(move || {
                    lower_priority();
                    let hasher = PasswordHasher::new(cost);
                    let _ = ready.send(());
                    work(hasher, &jobs);
                })
                .expect("spawn a password-hashing thread");
        }
        for _ in 0..workers {
            started.recv().expect("a hashing worker starts");
        }
        PasswordPool {
            queue,
            workers,
            queue_max,
            hashed,
        }
    }

    /// Runs `job` on a worker and returns what it returned, or refuses at
    /// once if the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut PasswordHasher) -> T + Send + 'static,
    ) -> Result<T, PoolBusy> {
        let (answer, answered) = oneshot::channel();
        let hashed = Arc::clone(&self.hashed);
        // Counted before the answer goes out, so a caller that has its
        // answer sees its job counted.
        let job: Job = Box::new(move |hasher| {
            let output = job(hasher);
            hashed.fetch_add(1, Ordering::Relaxed);
            let _ = answer.send(output);
        });
        let busy = PoolBusy {
            workers: self.workers,
            queue_max: self.queue_max,
        };
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(busy),
            Err(TrySendError::Disconnected(_)) => unreachable!("workers live while a handle does"),
        }
        // A worker that panicked dropped the answer: report it as busy
        // rather than hang (the panic itself is logged by the runtime).
        answered.await.map_err(|_| busy)
    }

    /// How many jobs the workers have run.
    pub fn hashed(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    pub fn workers(&self) -> usize {
        self.workers
    }
}

/// Lowers the calling thread's CPU priority to [`HASH_NICE`]. On Linux a
/// thread has its own niceness, set through its thread id; if that fails
/// the worker runs at normal priority, and says so.
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers and only affect the
    // calling thread's scheduling.
    let lowered = unsafe {
        let thread = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, HASH_NICE)
    };
    if lowered != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lower a hashing thread's priority"
        );
    }
}

/// One worker: takes jobs until every handle is gone.
fn work(mut hasher: PasswordHasher, jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let jobs = jobs.lock().expect("hashing queue lock");
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        job(&mut hasher);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_the_refused_job_never_runs() {
        let pool = PasswordPool::start(1, 1, HashCost::SIMULATION_ONLY);
        // Hold the one worker inside a job until the test lets it go.
        let (entered, inside) = sync_channel(1);
        let release = Arc::new(Barrier::new(2));
        let held_release = Arc::clone(&release);
        let mut held = Box::pin(pool.run(move |_| {
            entered.send(()).unwrap();
            held_release.wait();
        }));
        assert!(poll_once(held.as_mut()).is_none());
        inside.recv().unwrap();
        // The queue's one place: submitted by the first poll.
        let mut queued = Box::pin(pool.run(|_| "queued"));
        assert!(poll_once(queued.as_mut()).is_none());
        let ran = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&ran);
        let refused = poll_once(std::pin::pin!(
            pool.run(move |_| counted.fetch_add(1, Ordering::SeqCst))
        ));
        let Some(Err(refused)) = refused else {
            panic!("a job was admitted past a full queue: {refused:?}");
        };
        assert_eq!(
            refused,
            PoolBusy {
                workers: 1,
                queue_max: 1
            }
        );
        release.wait();
        held.await.unwrap();
        assert_eq!(queued.await, Ok("queued"));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the refused job never ran");
        assert_eq!(pool.hashed(), 2);
    }

    /// Polls once: the output if ready, else `None`.
    fn poll_once<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> Option<F::Output> {
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.poll(&mut context) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn workers_verify_what_they_hash() {
        let pool = PasswordPool::start(2, 4, HashCost::SIMULATION_ONLY);
        let hash = pool
            .run(|hasher| hasher.hash("pass123", [9; 16]))
            .await
            .unwrap();
        let hash_again = hash.clone();
        assert!(pool.run(move |h| h.verify("pass123", &hash)).await.unwrap());
        assert!(
            !pool
                .run(move |h| h.verify("pass124", &hash_again))
                .await
                .unwrap()
        );
    }
}
