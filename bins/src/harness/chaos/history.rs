//! The run's history, one JSON object a line in `history.jsonl`, in
//! Jepsen's shape: every operation is an `invoke` followed (for the same
//! process) by its completion: `ok` (done, with its outcome), `fail`
//! (definitely not done) or `info` (indeterminate: a timeout, a server
//! down). Processes are the client indices and `"nemesis"`, whose kills,
//! restarts, pauses and resumes complete with `info`, as in Jepsen.
//!
//! Operations go through a channel of at most [`HISTORY_QUEUE_MAX`] lines to
//! one blocking writer task, so the run holds none of its history in
//! memory. It knows nothing of what the operations mean.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use tokio::sync::mpsc;

use minipay_simulation::invariants::TxnKey;

/// Lines waiting for the writer; a full queue makes the recorder wait.
pub const HISTORY_QUEUE_MAX: usize = 4_096;

/// Who performed an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    Client(usize),
    Nemesis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

impl OpType {
    pub const ALL: [OpType; 4] = [OpType::Invoke, OpType::Ok, OpType::Fail, OpType::Info];

    pub fn name(self) -> &'static str {
        match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        }
    }

    pub fn parse(text: &str) -> Option<OpType> {
        OpType::ALL
            .into_iter()
            .find(|op_type| op_type.name() == text)
    }
}

/// One line of the history, before its time is stamped.
pub struct Op<'a> {
    pub process: Process,
    pub op_type: OpType,
    /// The function: `pay`, `login`, `kill`, `restart`, `pause`, `resume`.
    pub f: &'static str,
    pub txn: Option<TxnKey>,
    pub value: Option<serde_json::Value>,
    pub error: Option<&'a str>,
}

/// A handle to record operations; clone one per task. The history is
/// complete once every handle is dropped and [`HistoryWriter::finish`]
/// returns.
#[derive(Clone)]
pub struct History {
    started: Instant,
    lines: mpsc::Sender<String>,
}

/// The writer task of a [`History`].
pub struct HistoryWriter {
    task: tokio::task::JoinHandle<anyhow::Result<u64>>,
}

impl History {
    /// Creates `path` and starts its writer. `started` is time zero.
    pub fn create(path: &Path, started: Instant) -> anyhow::Result<(History, HistoryWriter)> {
        let file =
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        let (sender, mut receiver) = mpsc::channel::<String>(HISTORY_QUEUE_MAX);
        let path = path.to_owned();
        let task = tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufWriter::new(file);
            let mut written = 0u64;
            while let Some(line) = receiver.blocking_recv() {
                assert!(!line.contains('\n'), "one operation a line");
                writeln!(out, "{line}").with_context(|| format!("write {}", path.display()))?;
                written += 1;
            }
            out.flush()
                .with_context(|| format!("write {}", path.display()))?;
            Ok(written)
        });
        Ok((
            History {
                started,
                lines: sender,
            },
            HistoryWriter { task },
        ))
    }

    /// Seconds since the start of the run.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Appends `op`, stamped now. If the writer has stopped (it failed to
    /// write), the operation is dropped here and the failure is reported by
    /// [`HistoryWriter::finish`].
    pub async fn record(&self, op: Op<'_>) {
        let mut line = serde_json::json!({
            "time": self.now(),
            "process": match op.process {
                Process::Client(index) => serde_json::json!(index),
                Process::Nemesis => serde_json::json!("nemesis"),
            },
            "type": op.op_type.name(),
            "f": op.f,
        });
        if let Some(txn) = op.txn {
            line["txn_id"] = serde_json::json!(txn.to_string());
        }
        if let Some(value) = op.value {
            line["value"] = value;
        }
        if let Some(error) = op.error {
            line["error"] = serde_json::json!(error);
        }
        let _ = self.lines.send(line.to_string()).await;
    }

    /// A nemesis operation on `target`: its invoke now, and its completion
    /// (`info`) when `action` has run.
    pub async fn nemesis<T>(
        &self,
        f: &'static str,
        target: &str,
        action: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let value = Some(serde_json::json!(target));
        self.record(Op {
            process: Process::Nemesis,
            op_type: OpType::Invoke,
            f,
            txn: None,
            value: value.clone(),
            error: None,
        })
        .await;
        let done = action();
        let error = done.as_ref().err().map(|error| format!("{error:#}"));
        self.record(Op {
            process: Process::Nemesis,
            op_type: OpType::Info,
            f,
            txn: None,
            value,
            error: error.as_deref(),
        })
        .await;
        done
    }
}

impl HistoryWriter {
    /// Waits until every [`History`] handle is dropped and every line is
    /// written; returns how many were.
    pub async fn finish(self) -> anyhow::Result<u64> {
        self.task.await.context("the history writer panicked")?
    }
}
