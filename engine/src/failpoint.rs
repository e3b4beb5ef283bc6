//! Crash points in the commit protocol, for recovery tests.
//!
//! Random SIGKILLs rarely land in the millisecond between writing a manifest
//! and committing the tables, yet that is the window recovery exists for. So
//! a test can name a step and an epoch in `STRATA_FAILPOINT`
//! (`<point>:<epoch>`, or `<point>:*` for the first time the step is
//! reached), and the process aborts right there, with no cleanup,
//! just as a SIGKILL would. Unset (always, outside tests) it costs one
//! comparison per epoch.

use std::borrow::Cow;
use std::sync::OnceLock;

/// The steps of an epoch's commit where a crash can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The sinks have written their files; no manifest yet.
    BeforeManifest,
    /// As [`Point::BeforeManifest`], in an epoch that wrote rows (with
    /// `:*`, the first such epoch, however many empty ones came before:
    /// a test need not guess when the first records arrive).
    BeforeManifestWithRows,
    /// The manifest is durable; no table has committed the epoch.
    AfterManifest,
    /// The first table has committed the epoch; the others (tables commit
    /// concurrently) may or may not have.
    BetweenTableCommits,
    /// The n-th table of the manifest (1-based) has committed the epoch,
    /// the next not yet (after the last: every table, nothing published):
    /// `after_table_commit_<n>`.
    AfterTableCommit(usize),
    /// Every table has committed an epoch in which rows were published; no
    /// Kafka transaction has committed it.
    BeforePublishCommit,
    /// A backfill has staged its rows; the n-th table (the "epoch") is not
    /// swapped yet.
    BeforeSwap,
}

impl Point {
    /// The point's name, as `STRATA_FAILPOINT` names it.
    pub fn name(self) -> Cow<'static, str> {
        match self {
            Point::BeforeManifest => "before_manifest".into(),
            Point::BeforeManifestWithRows => "before_manifest_with_rows".into(),
            Point::AfterManifest => "after_manifest".into(),
            Point::BetweenTableCommits => "between_table_commits".into(),
            Point::AfterTableCommit(n) => format!("after_table_commit_{n}").into(),
            Point::BeforePublishCommit => "before_publish_commit".into(),
            Point::BeforeSwap => "before_swap".into(),
        }
    }
}

fn configured() -> Option<&'static (String, Option<u64>)> {
    static SPEC: OnceLock<Option<(String, Option<u64>)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = std::env::var("STRATA_FAILPOINT").ok()?;
        let (point, epoch) = text.split_once(':')?;
        let epoch = match epoch {
            "*" => None,
            n => Some(n.parse().ok()?),
        };
        Some((point.to_string(), epoch))
    })
    .as_ref()
}

/// Aborts the process if `STRATA_FAILPOINT` names this point and epoch.
pub(crate) fn hit(point: Point, epoch: u64) {
    if let Some((name, at)) = configured()
        && *name == point.name()
        && at.is_none_or(|at| at == epoch)
    {
        eprintln!("STRATA_FAILPOINT {name}:{epoch} reached; aborting");
        std::process::abort();
    }
}

/// The failpoints of a real process: `STRATA_FAILPOINT` aborts it.
pub struct ProcessFailpoints;

impl crate::dataflow::io::Failpoints for ProcessFailpoints {
    fn hit(&self, point: Point, epoch: u64) -> crate::error::Result<()> {
        hit(point, epoch);
        Ok(())
    }
}
