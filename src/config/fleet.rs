//! A drill run by several processes (Kubernetes pods): the shared drill id and each
//! process's place in it. Only member 0 runs the trigger; the others measure only, and
//! `pgdrill report` merges their summaries into one verdict.

use crate::report::summary::Member;
use clap::Args;

use crate::error::ConfigError;

/// Longest `--drill-id`: room for a UUID, a date and a name.
pub const MAX_DRILL_ID: usize = 128;

#[derive(Debug, Clone, Default, Args)]
pub struct FleetArgs {
    /// One id shared by every process of a drill run by several (the pods of a Kubernetes
    /// Job); recorded in the summary, so that `pgdrill report` merges only the summaries of
    /// one drill. Letters, digits, `.`, `_`, `-`, `:`; at most 128.
    #[arg(long, env = "PGDRILL_DRILL_ID")]
    pub drill_id: Option<String>,

    /// This process's index among the --members processes of the drill (an Indexed Job's
    /// JOB_COMPLETION_INDEX). Only index 0 runs --failover-command; the others measure only.
    #[arg(long, env = "PGDRILL_MEMBER_INDEX")]
    pub member_index: Option<u32>,

    /// How many processes run the drill (with --member-index).
    #[arg(long, env = "PGDRILL_MEMBERS")]
    pub members: Option<u32>,
}

/// The validated fleet flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    pub drill_id: Option<String>,
    /// `None`: a drill run by this process alone.
    pub member: Option<Member>,
}

impl FleetArgs {
    pub fn validate(&self) -> Result<Fleet, ConfigError> {
        if let Some(id) = &self.drill_id {
            let reason = if id.is_empty() {
                Some("must not be empty".to_string())
            } else if id.len() > MAX_DRILL_ID {
                Some(format!("is longer than {MAX_DRILL_ID} characters"))
            } else {
                id.chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')))
                    .map(|c| format!("contains {c:?}: use letters, digits, '.', '_', '-' or ':'"))
            };
            if let Some(reason) = reason {
                return Err(ConfigError::new("--drill-id", id, reason));
            }
        }
        let member = match (self.member_index, self.members) {
            (Some(_), Some(0)) => {
                let why = "must be at least 1 (the processes that run the drill)";
                return Err(ConfigError::new("--members", "0", why));
            }
            (Some(index), Some(of)) if index >= of => {
                let why = format!("must be below --members ({of}): indices count from 0");
                return Err(ConfigError::new("--member-index", index, why));
            }
            (Some(index), Some(_)) if self.drill_id.is_none() => {
                let why = "needs --drill-id (the id every member shares), which is not given";
                return Err(ConfigError::new("--member-index", index, why));
            }
            (Some(index), Some(of)) => Some(Member { index, of }),
            (Some(index), None) => {
                let why = "needs --members (how many processes run the drill), which is not given";
                return Err(ConfigError::new("--member-index", index, why));
            }
            (None, Some(of)) => {
                let why =
                    "needs --member-index (which of them this process is), which is not given";
                return Err(ConfigError::new("--members", of, why));
            }
            (None, None) => None,
        };
        Ok(Fleet {
            drill_id: self.drill_id.clone(),
            member,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fleet flags as `pgdrill` parses and validates them.
    fn args(extra: &[&str]) -> Result<Fleet, String> {
        crate::config::tests::args(extra).map(|c| c.drill.fleet)
    }

    #[test]
    fn members_and_drill_ids_validate() {
        assert_eq!(args(&[]).unwrap(), Fleet::default());
        let f = args(&[
            "--drill-id",
            "drill-2026-12-02",
            "--member-index",
            "2",
            "--members",
            "3",
        ])
        .unwrap();
        assert_eq!(f.drill_id.as_deref(), Some("drill-2026-12-02"));
        assert_eq!(f.member, Some(Member { index: 2, of: 3 }));
        assert!(!f.member.unwrap().triggers());
        assert!(args(&["--drill-id", "a:b_c.1"]).is_ok());
        for (argv, want) in [
            (
                &["--drill-id", "x", "--member-index", "3", "--members", "3"][..],
                "--member-index",
            ),
            (
                &["--drill-id", "x", "--member-index", "0", "--members", "0"][..],
                "--members",
            ),
            (&["--drill-id", "two words"][..], "contains ' '"),
            (&["--drill-id", ""][..], "must not be empty"),
            (&["--member-index", "0", "--members", "2"][..], "--drill-id"),
            (&["--drill-id", "x", "--members", "2"][..], "--member-index"),
        ] {
            let err = args(argv).unwrap_err();
            assert!(err.contains(want), "{argv:?}: {err}");
        }
    }
}
