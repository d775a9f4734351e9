//! Worker processes: the parent re-runs its own binary with its own argv plus hidden
//! `--worker-*` flags (so it works however the binary nests the subcommand), talks
//! to each over stdin/stdout; the child side bridges those pipes to the engine.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command as Proc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::args::BenchArgs;
use crate::engine;
use crate::error::BenchError;
use crate::plan::Plan;
use crate::wire::{self, Command, Event};

/// What the parent hears from worker `i`.
#[derive(Debug)]
pub enum WorkerMsg {
    Event(Event),
    /// Its event stream ended (process exited or in-process engine returned).
    Gone,
}

#[derive(Debug)]
enum Link {
    Child {
        child: Child,
        cmd_tx: Option<mpsc::UnboundedSender<Command>>,
    },
    InProcess {
        cmd_tx: Option<mpsc::UnboundedSender<Command>>,
        task: JoinHandle<()>,
    },
}

/// The parent's handle on all workers. The default has none: what is left once
/// `shutdown` has taken them.
#[derive(Debug, Default)]
pub struct Workers {
    links: Vec<Link>,
}

impl Workers {
    /// Starts `plan.processes` worker processes, or one in-process engine if 0.
    pub fn start(
        plan: &Arc<Plan>,
        msg_tx: mpsc::UnboundedSender<(u32, WorkerMsg)>,
    ) -> Result<Self, BenchError> {
        if plan.subscribers == 0 {
            return Ok(Self { links: Vec::new() });
        }
        if plan.processes == 0 {
            let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
            let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
            tokio::spawn(engine::run(plan.clone(), 0, 1, cmd_rx, ev_tx, false));
            let task = tokio::spawn(async move {
                while let Some(ev) = ev_rx.recv().await {
                    let _ = msg_tx.send((0, WorkerMsg::Event(ev)));
                }
                let _ = msg_tx.send((0, WorkerMsg::Gone));
            });
            return Ok(Self {
                links: vec![Link::InProcess {
                    cmd_tx: Some(cmd_tx),
                    task,
                }],
            });
        }
        let exe = std::env::current_exe().map_err(BenchError::Spawn)?;
        let argv: Vec<_> = std::env::args_os().skip(1).collect();
        let mut links = Vec::new();
        for i in 0..plan.processes {
            let mut child = Proc::new(&exe)
                .args(&argv)
                .args([
                    "--worker-index",
                    &i.to_string(),
                    "--worker-of",
                    &plan.processes.to_string(),
                ])
                .args(["--run-id", &plan.run_id.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(BenchError::Spawn)?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(BenchError::Worker {
                    index: i,
                    reason: "no stdio pipes".into(),
                });
            };
            let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Command>();
            tokio::spawn(async move {
                let mut stdin = stdin;
                while let Some(cmd) = cmd_rx.recv().await {
                    let mut line = serde_json::to_string(&cmd).unwrap_or_default();
                    line.push('\n');
                    if stdin.write_all(line.as_bytes()).await.is_err()
                        || stdin.flush().await.is_err()
                    {
                        break;
                    }
                }
                // Dropping stdin tells the worker the parent is done with it.
            });
            let msg_tx = msg_tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match wire::decode_event(&line) {
                        Some(Ok(ev)) => {
                            let _ = msg_tx.send((i, WorkerMsg::Event(ev)));
                        }
                        Some(Err(e)) => eprintln!("hubbub bench: worker {i}: bad event line: {e}"),
                        None => {}
                    }
                }
                let _ = msg_tx.send((i, WorkerMsg::Gone));
            });
            links.push(Link::Child {
                child,
                cmd_tx: Some(cmd_tx),
            });
        }
        Ok(Self { links })
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn broadcast(&self, cmd: &Command) {
        for link in &self.links {
            let (Link::Child { cmd_tx, .. } | Link::InProcess { cmd_tx, .. }) = link;
            if let Some(tx) = cmd_tx {
                let _ = tx.send(cmd.clone());
            }
        }
    }

    /// Closes every worker's input and waits (bounded) for it to end; stragglers are killed.
    pub async fn shutdown(mut self) {
        for link in &mut self.links {
            match link {
                Link::Child { cmd_tx, .. } | Link::InProcess { cmd_tx, .. } => *cmd_tx = None,
            }
        }
        for link in self.links {
            match link {
                Link::Child { mut child, .. } => {
                    if tokio::time::timeout(Duration::from_secs(15), child.wait())
                        .await
                        .is_err()
                    {
                        let _ = child.kill().await;
                    }
                }
                Link::InProcess { task, .. } => {
                    let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
                }
            }
        }
    }
}

/// Child side: commands from stdin, events to stdout, until the engine finishes.
/// Returns this worker's final counts.
///
/// The engine gets its own single-threaded runtime on a fresh thread, whatever
/// runtime the binary started: one thread per worker process keeps the client cheap
/// (no cross-thread wakeups or shared-counter cache traffic) so the server stays the
/// bottleneck; more client cores means more `--processes`.
pub async fn run_child(
    args: BenchArgs,
    index: u32,
) -> Result<(Arc<Plan>, Option<wire::WorkerFinal>), BenchError> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("bench-worker-{index}"))
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(child_main(&args, index)),
                Err(e) => Err(BenchError::Io(e)),
            };
            let _ = done_tx.send(result);
        })
        .map_err(BenchError::Spawn)?;
    done_rx.await.unwrap_or_else(|_| {
        Err(BenchError::Worker {
            index,
            reason: "worker thread panicked".into(),
        })
    })
}

async fn child_main(
    args: &BenchArgs,
    index: u32,
) -> Result<(Arc<Plan>, Option<wire::WorkerFinal>), BenchError> {
    let plan = Arc::new(Plan::resolve(args, args.run_id).await?);
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    // A plain thread, not tokio's stdin: its blocking read cannot be cancelled and
    // would hold up runtime shutdown; a detached thread just dies with the process.
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if let Ok(cmd) = serde_json::from_str::<Command>(&line)
                && cmd_tx.send(cmd).is_err()
            {
                break;
            }
        }
    });
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let engine = tokio::spawn(engine::run(
        plan.clone(),
        index,
        args.worker_of,
        cmd_rx,
        ev_tx,
        true,
    ));
    let mut stdout = tokio::io::stdout();
    let mut fin = None;
    while let Some(ev) = ev_rx.recv().await {
        stdout.write_all(wire::encode_event(&ev).as_bytes()).await?;
        stdout.flush().await?;
        if let Event::Final(f) = ev {
            fin = Some(*f);
        }
    }
    let _ = engine.await;
    Ok((plan, fin))
}
