//! The failover trigger as planned: what it runs (an argv, `sh -c` only when asked for, or
//! an action inside this process for `pgdrill demo`), when ([`Schedule`]), for how long.

use std::ops::Add;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::{runnable, ConfigError};
use crate::secrets::scrub;

#[derive(Debug, Clone)]
pub struct TriggerConfig {
    pub action: TriggerAction,
    pub schedule: Schedule,
    pub timeout: Duration,
}

/// The baseline before a trigger is judged over at most this long.
pub const BASELINE_WINDOW: Duration = Duration::from_secs(10);
/// When the triggers run: `--failover-after` into the run, then every `--failover-every`,
/// `--failovers` times in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// From the start of the load to the first trigger.
    pub after: Duration,
    /// Between the starts of consecutive triggers; `None` with a single failover.
    pub every: Option<Duration>,
    pub count: u32,
}

/// The start of the load that the first baseline leaves out (connections open, rate ramps).
pub const WARM_UP: Duration = Duration::from_secs(1);

impl Schedule {
    /// How long before trigger `k` (0-based) the baseline is judged: up to
    /// [`BASELINE_WINDOW`], leaving out the run's [`WARM_UP`] before the first trigger, and
    /// before a later one the first half since the previous, which is that one's recovery.
    pub fn baseline_span(&self, k: usize) -> Duration {
        let span = if k == 0 {
            self.after.saturating_sub(WARM_UP)
        } else {
            self.every.unwrap_or(self.after) / 2
        };
        span.min(BASELINE_WINDOW)
    }

    /// Planned trigger starts for a run that started at `start`, on any clock.
    pub fn instants<T: Copy + Add<Duration, Output = T>>(&self, start: T) -> Vec<T> {
        let every = self.every.unwrap_or_default();
        (0..self.count)
            .map(|i| start + (self.after + every * i))
            .collect()
    }

    /// The offset of the last planned trigger.
    pub fn last(&self) -> Duration {
        self.after + self.every.unwrap_or_default() * self.count.saturating_sub(1)
    }
}

/// The command as it will be executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerCommand {
    /// Program and arguments; `["sh", "-c", command]` with a shell.
    pub argv: Vec<String>,
    pub shell: bool,
    /// For logs, errors and the report: the command as given, passwords removed.
    pub display: String,
}

impl TriggerCommand {
    /// Splits `raw` into words as a POSIX shell does (quotes, backslashes) but runs no shell;
    /// with `shell`, runs `sh -c raw` instead.
    pub fn parse(raw: &str, shell: bool) -> Result<TriggerCommand, ConfigError> {
        crate::secrets::remember_in_command(raw);
        let display = scrub(raw.trim());
        let error =
            |reason: String| ConfigError::new("--failover-command", display.clone(), reason);
        let argv = if shell {
            vec!["sh".into(), "-c".into(), raw.to_string()]
        } else if let Some(syntax) = shell_syntax(raw) {
            return Err(error(format!(
                "contains shell syntax ({syntax}) that would reach the program as a literal \
                 argument, because the command runs without a shell; add --failover-shell to \
                 run it with sh -c, or quote it"
            )));
        } else {
            shlex::split(raw)
                .ok_or_else(|| error("has an unterminated quote or a trailing backslash".into()))?
        };
        // `sh -c` needs a command too.
        if raw.trim().is_empty() || argv.first().is_none_or(String::is_empty) {
            return Err(error("must name a program to run".into()));
        }
        if let Some(name) = argv.first().filter(|_| !shell).and_then(|w| assignment(w)) {
            return Err(error(format!(
                "starts with `{name}=…`, an environment assignment only a shell applies (without \
                 one it would be run as the program's name); add --failover-shell, or write \
                 `env {name}=… program …`"
            )));
        }
        Ok(TriggerCommand {
            argv,
            shell,
            display,
        })
    }
}

/// What a trigger does: run a command, or ask the owner of an in-process lab.
#[derive(Debug, Clone)]
pub enum TriggerAction {
    Command(TriggerCommand),
    InProcess(InProcessTrigger),
}

impl TriggerAction {
    /// The command as given (passwords removed) or the lab action.
    pub fn display(&self) -> &str {
        match self {
            TriggerAction::Command(c) => &c.display,
            TriggerAction::InProcess(t) => &t.name,
        }
    }

    pub fn shell(&self) -> bool {
        matches!(self, TriggerAction::Command(c) if c.shell)
    }

    /// The program can be run now: a typo found at the trigger's time would cost the whole run.
    pub fn check_program(&self) -> Result<(), ConfigError> {
        match self {
            TriggerAction::Command(c) => runnable("--failover-command", &c.display, &c.argv),
            TriggerAction::InProcess(_) => Ok(()),
        }
    }
}

/// The answer to one in-process trigger request: text for the report, or why it failed.
pub type InProcessReply = Result<String, String>;
/// The requests an in-process trigger's owner answers, one per failover.
pub type Requests = mpsc::Receiver<oneshot::Sender<InProcessReply>>;

/// A failover performed inside this process by whoever owns the lab (`pgdrill demo`, which
/// keeps its freeze, DNS and role bookkeeping): asked over a channel, timed like a command.
#[derive(Debug, Clone)]
pub struct InProcessTrigger {
    pub name: String,
    requests: mpsc::Sender<oneshot::Sender<InProcessReply>>,
}

impl InProcessTrigger {
    /// The trigger, and the requests its owner must answer.
    pub fn new(name: impl Into<String>) -> (InProcessTrigger, Requests) {
        let (requests, rx) = mpsc::channel(1);
        let trigger = InProcessTrigger {
            name: name.into(),
            requests,
        };
        (trigger, rx)
    }

    /// Asks the owner for one failover; `None` when nobody answers requests any more.
    pub(crate) async fn request(&self) -> Option<oneshot::Receiver<InProcessReply>> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(reply).await.ok()?;
        Some(answer)
    }
}

/// The variable's name of a word that is an assignment (`NAME=value`).
fn assignment(word: &str) -> Option<&str> {
    let (name, _) = word.split_once('=')?;
    let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let leading = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    (valid && leading).then_some(name)
}

/// The first unquoted character a shell would act on (pipes, lists, redirections, grouping,
/// expansions, a leading `~`), which an argv would pass on literally.
fn shell_syntax(raw: &str) -> Option<String> {
    let mut quote = None; // The open quote, `'` or `"`.
    let mut escaped = false;
    let mut word_start = true;
    for c in raw.chars() {
        if escaped {
            escaped = false;
            word_start = false;
            continue;
        }
        match quote {
            Some('\'') if c == '\'' => quote = None,
            Some('\'') => {}
            Some(_) => match c {
                '\\' => escaped = true,
                '"' => quote = None,
                '$' | '`' => return Some(format!("`{c}` inside double quotes")),
                _ => {}
            },
            None => match c {
                '\\' => escaped = true,
                '\'' | '"' => quote = Some(c),
                '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' => {
                    return Some(format!("`{c}`"));
                }
                '~' if word_start => return Some("a leading `~`".into()),
                _ => {}
            },
        }
        word_start = quote.is_none() && c.is_whitespace();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_windows_leave_out_the_warm_up_and_the_previous_recovery() {
        let s = Schedule {
            after: Duration::from_secs(5),
            every: Some(Duration::from_secs(60)),
            count: 3,
        };
        assert_eq!(s.baseline_span(0), Duration::from_secs(4));
        assert_eq!(s.baseline_span(1), BASELINE_WINDOW);
        let s = Schedule {
            after: Duration::from_secs(60),
            every: Some(Duration::from_secs(4)),
            count: 3,
        };
        assert_eq!(s.baseline_span(0), BASELINE_WINDOW);
        assert_eq!(s.baseline_span(2), Duration::from_secs(2));
        // The shortest schedule the flags allow still judges a second of load.
        let s = Schedule {
            after: Duration::from_secs(2),
            every: Some(Duration::from_secs(2)),
            count: 2,
        };
        assert_eq!(s.baseline_span(0), Duration::from_secs(1));
        assert_eq!(s.baseline_span(1), Duration::from_secs(1));
    }

    fn parse(raw: &str) -> Result<Vec<String>, String> {
        TriggerCommand::parse(raw, false)
            .map(|c| c.argv)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn commands_split_like_a_shell_without_one() {
        assert_eq!(
            parse("az postgres flexible-server restart --failover Forced --resource-group 'my rg' --name \"pg-prod\"")
                .unwrap(),
            [
                "az", "postgres", "flexible-server", "restart", "--failover", "Forced",
                "--resource-group", "my rg", "--name", "pg-prod"
            ]
        );
        assert_eq!(parse(r"echo a\ b 'it''s'").unwrap(), ["echo", "a b", "its"]);
        // Quoted, the characters a shell would act on are ordinary arguments.
        assert_eq!(
            parse(r#"kubectl get pods -l 'app in (pg)' --field-selector "a=b" '$HOME' \|"#)
                .unwrap(),
            [
                "kubectl",
                "get",
                "pods",
                "-l",
                "app in (pg)",
                "--field-selector",
                "a=b",
                "$HOME",
                "|"
            ]
        );
    }

    #[test]
    fn shell_syntax_without_a_shell_is_a_usage_error() {
        for (raw, what) in [
            ("patronictl failover | tee log", "`|`"),
            ("a && b", "`&`"),
            ("cmd > out", "`>`"),
            ("cmd --name $SERVER", "`$`"),
            ("cmd --name \"$SERVER\"", "`$` inside double quotes"),
            ("cmd `date`", "```"),
            (
                "kubectl --kubeconfig ~/.kube/config cnpg promote a b",
                "leading `~`",
            ),
        ] {
            let err = parse(raw).unwrap_err();
            assert!(
                err.contains("--failover-command")
                    && err.contains(what)
                    && err.contains("--failover-shell"),
                "{raw}: {err}"
            );
        }
        // A leading assignment is refused by name, its value (a password) not quoted.
        let err = parse(r#"PGPASSWORD="a b-5e0c" psql -c 'SELECT 1'"#).unwrap_err();
        assert!(
            err.contains("`PGPASSWORD=…`") && err.contains("--failover-shell"),
            "{err}"
        );
        assert!(!err.contains("5e0c"), "{err}");
        assert!(parse("env PGPASSWORD=x psql").is_ok());
        // A tilde inside a word is not expanded by a shell either.
        assert!(parse("curl http://h/~user").is_ok());
        let err = parse("echo 'unterminated").unwrap_err();
        assert!(err.contains("unterminated quote"), "{err}");
        let err = parse("''").unwrap_err();
        assert!(err.contains("must name a program"), "{err}");
        let err = parse("   ").unwrap_err();
        assert!(err.contains("must name a program"), "{err}");
    }

    #[test]
    fn a_shell_only_when_asked() {
        let c = TriggerCommand::parse("patronictl failover --force | tee log", true).unwrap();
        assert_eq!(
            c.argv,
            ["sh", "-c", "patronictl failover --force | tee log"]
        );
        assert!(c.shell);
    }

    #[test]
    fn the_displayed_command_never_shows_a_password() {
        let raw = "psql postgres://admin:hunter2@db/app -c 'select 1'";
        let c = TriggerCommand::parse(raw, false).unwrap();
        assert!(!c.display.contains("hunter2"), "{}", c.display);
        assert!(
            c.argv.iter().any(|a| a.contains("hunter2")),
            "the argv itself is untouched"
        );
        let err = TriggerCommand::parse("PGPASSWORD=hunter2 psql | x", false)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
