//! Running a trigger command in its own process group, killed with everything it started when it
//! outlives its timeout or pgdrill stops; its output scrubbed, logged and kept as a bounded tail.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use rustix::process::{kill_process_group, Pid, Signal};

use crate::child::GroupGuard;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::drill::plan::TriggerCommand;
use crate::secrets::{printable, scrub};

/// How a trigger ended. Only [`TriggerOutcome::Ok`] makes a valid drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerOutcome {
    Ok,
    CannotStart {
        reason: String,
    },
    /// A non-zero exit code, or killed by a signal (then `code` is absent).
    ExitedNonZero {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Still running after `--failover-timeout`; its process group was killed.
    TimedOut {
        after_seconds: f64,
    },
    /// An in-process (lab) action reported failure.
    Failed {
        reason: String,
    },
}

impl TriggerOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            TriggerOutcome::Ok => "ok",
            TriggerOutcome::CannotStart { .. } => "cannot_start",
            TriggerOutcome::ExitedNonZero { .. } => "exited_non_zero",
            TriggerOutcome::TimedOut { .. } => "timed_out",
            TriggerOutcome::Failed { .. } => "failed",
        }
    }

    /// Why the drill is invalid, for the verdict.
    pub fn problem(&self) -> Option<String> {
        match self {
            TriggerOutcome::Ok => None,
            TriggerOutcome::CannotStart { reason } => Some(format!("could not start: {reason}")),
            TriggerOutcome::ExitedNonZero { code, signal } => Some(match (code, signal) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                (None, None) => "ended abnormally".into(),
            }),
            TriggerOutcome::TimedOut { after_seconds } => Some(format!(
                "did not finish within --failover-timeout ({after_seconds:.0} s) and was killed"
            )),
            TriggerOutcome::Failed { reason } => Some(format!("failed: {reason}")),
        }
    }
}

/// The last this many bytes of each stream are kept for the summary and the report.
pub const TAIL_BYTES: usize = 16 * 1024;

/// A line longer than this is logged and kept in pieces.
const MAX_LINE: usize = 4096;

/// A line is read (and scrubbed) whole up to this long before it is cut into pieces: a secret
/// across a cut would be recognised in neither (one-line JSON holds tokens kilobytes in).
const MAX_READ: usize = 64 * 1024;

/// A longer line is scrubbed a read at a time: at least this much of each read's end, from a
/// place no secret crosses, is read again with the next, so a secret this long is whole once.
const OVERLAP: usize = 1024;

/// Lines logged per stream and trigger; a chatty command cannot flood the log.
const MAX_LOGGED_LINES: usize = 1000;

/// After SIGTERM (on expiry, or when the run stops), the group gets this long before SIGKILL.
pub(super) const KILL_GRACE: Duration = Duration::from_secs(2);

/// Output is read this much longer after the command exits: a background process it left
/// may hold the pipes open forever.
const DRAIN: Duration = Duration::from_secs(1);

/// Runs the trigger; `None` when `stop` ended it first.
pub(super) async fn execute(
    command: &TriggerCommand,
    index: usize,
    timeout: Duration,
    stop: &CancellationToken,
    [stdout_tail, stderr_tail]: &[Arc<Mutex<Tail>>; 2],
) -> Option<(TriggerOutcome, Instant)> {
    let cannot = |reason| Some((TriggerOutcome::CannotStart { reason }, Instant::now()));
    let Some((program, args)) = command.argv.split_first() else {
        return cannot("empty command".into());
    };
    // Its own process group, so that expiry kills what it started too; if this future is
    // dropped (a task aborted), the whole group goes, not only the child.
    let (mut child, mut group) = match crate::child::spawn(program, args) {
        Ok(spawned) => spawned,
        Err(err) => return cannot(format!("{program}: {err}")),
    };
    let mut readers = JoinSet::new();
    if let Some(out) = child.stdout.take() {
        readers.spawn(capture(out, "stdout", index, stdout_tail.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.spawn(capture(err, "stderr", index, stderr_tail.clone()));
    }
    let outcome = wait_or_kill(&mut child, &group, timeout, index, stop).await;
    let ended = Instant::now();
    // Reaped; what it left in the background runs on until pgdrill exits.
    if let Some(pgid) = group.0.take() {
        LEFT_BEHIND.lock().push((index, pgid));
    }
    // Past DRAIN, the set is dropped, which aborts the readers.
    let drained = async move { while readers.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::warn!(
            trigger = index,
            "the failover trigger left a process holding its output open; stopped reading"
        );
    }
    Some((outcome?, ended))
}

/// Process groups of triggers that have exited, by trigger number, for [`end_left_behind`].
static LEFT_BEHIND: Mutex<Vec<(usize, Pid)>> = Mutex::new(Vec::new());

/// Ends what remains of the triggers' process groups (SIGTERM, then SIGKILL after a short
/// grace) once the run is over, so pgdrill leaves no process.
pub async fn end_left_behind() {
    let groups = std::mem::take(&mut *LEFT_BEHIND.lock());
    end_groups(groups).await;
}

/// [`end_left_behind`] for `groups`.
async fn end_groups(groups: Vec<(usize, Pid)>) {
    let running = |(_, g): &(usize, Pid)| crate::child::left_running(*g);
    let alive: Vec<(usize, Pid)> = groups.into_iter().filter(running).collect();
    for (index, pgid) in &alive {
        tracing::warn!(
            trigger = index,
            process_group = pgid.as_raw_nonzero().get(),
            "the failover trigger left processes running; ending them as pgdrill exits"
        );
        let _ = kill_process_group(*pgid, Signal::TERM);
    }
    let deadline = Instant::now() + KILL_GRACE;
    while Instant::now() < deadline && alive.iter().any(running) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (_, pgid) in alive.iter().filter(|g| running(g)) {
        let _ = kill_process_group(*pgid, Signal::KILL);
    }
}

/// Waits for the command at most `timeout`, or until `stop` (then `None`); then SIGTERM to its
/// group, so its traps can undo what they did (a paused server, a firewall rule), then SIGKILL.
async fn wait_or_kill(
    child: &mut tokio::process::Child,
    group: &GroupGuard,
    timeout: Duration,
    index: usize,
    stop: &CancellationToken,
) -> Option<TriggerOutcome> {
    let waited = tokio::select! {
        biased;
        waited = tokio::time::timeout(timeout, child.wait()) => Some(waited),
        () = stop.cancelled() => None,
    };
    match waited {
        Some(Ok(Ok(status))) if status.success() => Some(TriggerOutcome::Ok),
        Some(Ok(Ok(status))) => Some(TriggerOutcome::ExitedNonZero {
            code: status.code(),
            signal: status.signal(),
        }),
        Some(Ok(Err(err))) => {
            tracing::error!(trigger = index, %err, "lost track of the failover trigger");
            Some(TriggerOutcome::ExitedNonZero {
                code: None,
                signal: None,
            })
        }
        expired_or_stopped => {
            group.signal(Signal::TERM);
            let exited = tokio::time::timeout(KILL_GRACE, child.wait()).await.is_ok();
            // What ignored SIGTERM, or outlived the child, goes now.
            group.signal(Signal::KILL);
            if !exited {
                let _ = child.wait().await;
            }
            expired_or_stopped.map(|_| TriggerOutcome::TimedOut {
                after_seconds: timeout.as_secs_f64(),
            })
        }
    }
}

/// The bounded end of one output stream: whole lines as read, scrubbed and cut into
/// [`MAX_LINE`]-byte pieces only when taken, so a flood of output costs no scrub per line.
#[derive(Debug, Default)]
pub(super) struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
    truncated: bool,
}

impl Tail {
    pub(super) fn push_line(&mut self, line: &str) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line.to_string());
        // A line the rest already fills the tail without goes (at most one more is held).
        while let Some(first) = self.lines.front().map(|l| l.len() + 1) {
            if self.bytes - first < TAIL_BYTES {
                break;
            }
            self.lines.pop_front();
            self.bytes -= first;
            self.truncated = true;
        }
    }

    /// The tail, scrubbed, in a buffer of its own size: a run keeps one per stream of each trigger.
    pub(super) fn take(&mut self) -> (String, bool) {
        let mut text = String::new();
        for line in std::mem::take(&mut self.lines) {
            for piece in pieces(&printable(&scrub(&line))) {
                text.push_str(piece);
                text.push('\n');
            }
        }
        self.bytes = 0;
        if text.len() > TAIL_BYTES {
            let cut = text.ceil_char_boundary(text.len() - TAIL_BYTES);
            text.drain(..cut);
            self.truncated = true;
        }
        text.shrink_to_fit();
        (text, self.truncated)
    }
}

/// A line in pieces of at most [`MAX_LINE`] bytes, each whole characters.
fn pieces(mut line: &str) -> impl Iterator<Item = &str> {
    std::iter::from_fn(move || {
        let (piece, rest) = line.split_at(line.floor_char_boundary(MAX_LINE));
        line = rest;
        (!piece.is_empty()).then_some(piece)
    })
}

/// The bytes at the end of `raw` that begin a character and lack its rest (at most 3).
fn incomplete_char(raw: &[u8]) -> usize {
    let tail = raw[raw.len().saturating_sub(3)..].utf8_chunks().last();
    let bad = tail.map_or(&[][..], |c| c.invalid());
    match std::str::from_utf8(bad) {
        Err(e) if e.error_len().is_none() => bad.len(),
        _ => 0,
    }
}

/// Reads one stream to its end: each line scrubbed, logged (up to a limit) and kept in the
/// tail, in pieces of at most [`MAX_LINE`] bytes, read [`MAX_READ`] bytes at a time.
async fn capture(
    stream: impl AsyncRead + Unpin,
    name: &'static str,
    index: usize,
    tail: Arc<Mutex<Tail>>,
) {
    let mut reader = BufReader::new(stream);
    let mut raw = Vec::with_capacity(MAX_LINE);
    let mut carried = Vec::new();
    let mut logged = 0usize;
    loop {
        raw.clear();
        raw.append(&mut carried);
        let read = (&mut reader)
            .take(MAX_READ as u64)
            .read_until(b'\n', &mut raw)
            .await;
        // A line longer than a read goes on in the next: only the part before a cut no
        // secret crosses is written, and what follows is read again with the rest.
        let line_goes_on = matches!(read, Ok(n) if n == MAX_READ) && !raw.ends_with(b"\n");
        let (waiting, bytes) = if line_goes_on {
            (raw.split_off(raw.len() - incomplete_char(&raw)), &raw[..])
        } else {
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            (Vec::new(), line.strip_suffix(b"\r").unwrap_or(line))
        };
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        if line_goes_on && text.len() > OVERLAP {
            let at = text.floor_char_boundary(text.len() - OVERLAP);
            let cut = crate::secrets::safe_cut(&text, at, text.len() / 2);
            carried = text.split_off(cut).into_bytes();
        }
        carried.extend(waiting);
        if !text.is_empty() {
            // Scrubbed only while logged: the tail scrubs what it keeps.
            if logged <= MAX_LOGGED_LINES {
                for piece in pieces(&printable(&scrub(&text))) {
                    if logged < MAX_LOGGED_LINES {
                        tracing::info!(
                            event = "trigger_output",
                            trigger = index,
                            stream = name,
                            "{piece}"
                        );
                    } else if logged == MAX_LOGGED_LINES {
                        tracing::warn!(
                            trigger = index,
                            stream = name,
                            "further trigger output is not logged; the report keeps its end"
                        );
                    }
                    logged += 1;
                }
            }
            tail.lock().push_line(&text);
        }
        // A flood of output (`yes`) served from the buffer never waits: the load's lanes,
        // on the same thread, get their turn.
        tokio::task::consume_budget().await;
        if !matches!(read, Ok(n) if n > 0) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::plan::{TriggerAction, TriggerCommand};
    use crate::drill::trigger::run;
    use crate::drill::trigger::tests::{run_raw, unix_now};

    #[tokio::test]
    async fn long_lines_are_split_and_tails_stay_bounded() {
        let mut input = b"ab\r\ncd".to_vec();
        input.extend(vec![b'x'; MAX_LINE * 2 + 10]);
        input.extend(b"\nlast");
        let text = captured(&input).await;
        let lines: Vec<usize> = text.lines().map(str::len).collect();
        assert_eq!(lines, [2, MAX_LINE, MAX_LINE, 2 + 10, 4]);

        // A known secret across a MAX_READ cut is recognised: it is whole in the next read.
        let secret = "overlap-0b95d3e7-token";
        crate::secrets::remember(secret);
        let mut input = vec![b'y'; MAX_READ - 8];
        input.extend(secret.as_bytes());
        input.extend(b"zz\n");
        let text = captured(&input).await.replace('\n', "");
        assert!(
            text.ends_with("yyREDACTEDzz"),
            "{}",
            &text[text.len() - 40..]
        );
        // Across the place a read would be cut before the overlap; and a last line
        // without a newline, read whole.
        for (before, after) in [(MAX_READ - OVERLAP - 8, 2000), (OVERLAP, 100)] {
            let mut input = vec![b'y'; before];
            input.extend(secret.as_bytes());
            input.extend(vec![b'z'; after]);
            let text = captured(&input).await.replace('\n', "");
            assert!(text.contains("yyREDACTEDzz"), "{before}: {}", text.len());
            assert!(!text.contains("0b95d3e7") && !text.contains("overlap-"));
        }
        // Bytes that never make a character still move on: bounded, all read.
        let input = vec![0xAAu8; 3 * MAX_READ + 5];
        let text = captured(&input).await;
        assert!(text.len() <= TAIL_BYTES && text.contains('\u{FFFD}'));

        // A known secret across the cut is still recognised: lines are scrubbed whole.
        let secret = "cut-across-7f3a9c2e-token";
        crate::secrets::remember(secret);
        let mut input = vec![b'0'; MAX_LINE - 6];
        input.extend(secret.as_bytes());
        let text = captured(&input).await;
        assert!(text.replace('\n', "").contains("0REDACTED"), "{text}");
        assert!(!text.contains("7f3a9c2e"), "{}", &text[MAX_LINE - 10..]);

        let mut tail = Tail::default();
        for i in 0..10_000 {
            tail.push_line(&format!("line {i} é"));
            assert!(tail.bytes <= TAIL_BYTES + MAX_LINE + 1);
        }
        let (text, truncated) = tail.take();
        assert!(text.len() <= TAIL_BYTES, "{}", text.len());
        // What is kept holds no more than its text (1,000 triggers keep two each).
        assert!(text.capacity() <= TAIL_BYTES, "{}", text.capacity());
        assert!(truncated);
        assert!(text.ends_with("line 9999 é\n"));
        let mut short = Tail::default();
        short.push_line("only");
        assert_eq!(short.take(), ("only\n".to_string(), false));
    }

    /// What `capture` keeps of `input`, as one trigger's stdout.
    async fn captured(input: &[u8]) -> String {
        let captured = Arc::new(Mutex::new(Tail::default()));
        capture(input, "stdout", 1, captured.clone()).await;
        let (text, _) = captured.lock().take();
        text
    }

    #[tokio::test]
    async fn a_cut_hides_what_the_whole_line_would() {
        // An option's value, the cut right before its key.
        let mut input = vec![b'x'; MAX_READ - OVERLAP - 5];
        input.extend(b" --password h7q-c4f1 ");
        input.extend(vec![b'y'; 2000]);
        let text = captured(&input).await.replace('\n', "");
        assert!(!text.contains("h7q-c4f1") && text.contains("--password REDACTED"));
        // A remembered secret longer than the overlap, begun before the cut.
        let secret: String = (0..500).map(|i| format!("cc{i:04}")).collect();
        crate::secrets::remember(&secret);
        let mut input = vec![b'y'; MAX_READ - 1500];
        input.extend(secret.as_bytes());
        let text = captured(&input).await.replace('\n', "");
        assert!(text.ends_with("yREDACTED") && !text.contains("cc0000"));
        // A carriage return that ends a read but not the line is kept.
        let mut input = vec![b'y'; MAX_READ - 1];
        input.extend(b"\rz\n");
        assert!(captured(&input).await.ends_with("y\\x0dz\n"));
        // One that ends the output, as one before a newline, is not.
        assert_eq!(captured(b"done\r").await, "done\n");
    }

    #[tokio::test]
    async fn only_a_group_whose_reaped_leader_has_no_successor_is_ended() {
        use std::os::unix::process::CommandExt;
        let pid = |c: &std::process::Child| Pid::from_raw(c.id() as i32).expect("a pid");
        // A trigger's shape: the leader exits (reaped), a background child runs on.
        let mut trigger = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & exit 0"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let group = pid(&trigger);
        trigger.wait().expect("reap the leader");
        // A live process whose id is the recorded group's, as after the id was reused.
        let mut reused = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        // Not through LEFT_BEHIND: tests running beside this one leave their groups there.
        end_groups(vec![(1, group), (2, pid(&reused))]).await;
        assert!(rustix::process::test_kill_process_group(group).is_err());
        let spared = reused.try_wait().expect("try_wait");
        let _ = reused.kill();
        let _ = reused.wait();
        assert!(
            spared.is_none(),
            "a reused id's process was killed: {spared:?}"
        );
    }

    #[tokio::test]
    async fn a_hung_trigger_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        // The shell starts a grandchild that ignores nothing and would outlive a plain kill of
        // the shell; the process group kill must take it too.
        let raw = format!(
            "sleep 30 & echo $! > {}; echo started; wait",
            pid_file.display()
        );
        let began = std::time::Instant::now();
        let r = run_raw(&raw, true, Duration::from_millis(300)).await;
        let took = began.elapsed();
        assert_eq!(r.outcome, TriggerOutcome::TimedOut { after_seconds: 0.3 });
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(r.stdout_tail, "started\n");
        let pid = started(&pid_file).await;
        assert!(
            gone(pid).await,
            "the trigger's grandchild {pid} survived the timeout"
        );
    }

    /// Running, as opposed to gone or a zombie about to be reaped.
    fn alive(pid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        !stat.is_empty() && !stat.contains(") Z ")
    }

    /// The pid a trigger wrote to `file`, once it has (up to 5 s).
    async fn started(file: &std::path::Path) -> i32 {
        for _ in 0..250 {
            if let Some(pid) = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the trigger never wrote {}", file.display())
    }

    /// Waits up to a second for `pid` to stop running.
    async fn gone(pid: i32) -> bool {
        for _ in 0..50 {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn stopping_pgdrill_mid_trigger_kills_the_trigger() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let raw = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let c = TriggerAction::Command(TriggerCommand::parse(&raw, true).unwrap());
        let task = tokio::spawn(async move {
            let now = Instant::now();
            let stop = CancellationToken::new();
            run(&c, 1, (now, now), Duration::from_secs(60), unix_now, &stop).await
        });
        let pid = started(&pid_file).await;
        assert!(alive(pid), "the grandchild {pid} must be running first");
        task.abort();
        let _ = task.await;
        assert!(
            gone(pid).await,
            "the trigger's grandchild {pid} survived the shutdown"
        );
    }

    /// A stopping run ends the trigger as its timeout does: SIGTERM first, so that a script
    /// undoing its fault on TERM (a paused server, a firewall rule) gets to.
    #[tokio::test]
    async fn stopping_the_run_lets_the_trigger_undo_its_fault_before_it_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let (undone, pid_file) = (dir.path().join("undone"), dir.path().join("sleep.pid"));
        let raw = format!(
            "trap 'touch {}; exit 0' TERM; sleep 30 & echo $! > {}; wait",
            undone.display(),
            pid_file.display()
        );
        let c = TriggerAction::Command(TriggerCommand::parse(&raw, true).unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let now = Instant::now();
                run(&c, 1, (now, now), Duration::from_secs(60), unix_now, &stop).await
            }
        });
        let pid = started(&pid_file).await;
        stop.cancel();
        let ended = task.await.unwrap();
        assert!(
            ended.is_none(),
            "a stopped trigger has no record: {ended:?}"
        );
        assert!(undone.exists(), "the trigger's TERM trap never ran");
        assert!(
            gone(pid).await,
            "the trigger's child {pid} survived the stop"
        );
    }

    #[tokio::test]
    async fn a_background_process_holding_the_output_neither_delays_nor_hangs_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("background.pid");
        let raw = format!(
            "sleep 30 & echo $! > {}; echo requested",
            pid_file.display()
        );
        let began = std::time::Instant::now();
        let r = run_raw(&raw, true, Duration::from_secs(10)).await;
        let took = began.elapsed();
        let pid = started(&pid_file).await;
        // Left running by design (the trigger succeeded); this test cleans it up.
        let still_running = alive(pid);
        if let Some(pid) = Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        assert!(
            still_running,
            "a successful trigger's background process is its own business"
        );
        assert_eq!(r.outcome, TriggerOutcome::Ok);
        assert_eq!(r.stdout_tail, "requested\n");
        assert!(r.duration_seconds < 0.5, "{}", r.duration_seconds);
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn a_trigger_that_ignores_sigterm_is_killed_too() {
        let r = run_raw(
            "trap '' TERM; echo stubborn; sleep 30",
            true,
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(r.outcome, TriggerOutcome::TimedOut { after_seconds: 0.2 });
        // SIGTERM, KILL_GRACE, then SIGKILL.
        assert!(
            r.duration_seconds >= 0.2 + KILL_GRACE.as_secs_f64() - 0.05 && r.duration_seconds < 5.0,
            "{}",
            r.duration_seconds
        );
        assert_eq!(r.stdout_tail, "stubborn\n");
    }

    #[tokio::test]
    async fn output_is_bounded_however_much_is_printed() {
        // 4 MB on stdout with no newline, 100,000 lines on stderr.
        let r = run_raw(
            "head -c 4000000 /dev/zero | tr '\\0' x; seq 1 100000 >&2",
            true,
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(r.outcome, TriggerOutcome::Ok);
        assert!(r.stdout_tail.len() <= TAIL_BYTES && r.stderr_tail.len() <= TAIL_BYTES);
        assert!(r.output_truncated);
        assert!(
            r.stderr_tail.ends_with("99999\n100000\n"),
            "{}",
            &r.stderr_tail[r.stderr_tail.len() - 20..]
        );
    }
}
