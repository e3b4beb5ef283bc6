//! Reading a Delta table's log directly: how many records are committed,
//! and when each commit became visible (the commit file's mtime).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One committed version.
pub struct Commit {
    /// When the commit file appeared, ms since the epoch.
    pub visible_at_ms: i64,
    /// Data files it added, relative to the table root.
    pub added: Vec<String>,
    /// Records in those files.
    pub records: u64,
}

/// Incrementally reads a table's `_delta_log/*.json`.
pub struct LogReader {
    table: PathBuf,
    commits: BTreeMap<u64, Commit>,
}

impl LogReader {
    pub fn new(table: &Path) -> Self {
        LogReader {
            table: table.to_path_buf(),
            commits: BTreeMap::new(),
        }
    }

    /// Reads commits not seen yet; returns the total records committed.
    pub fn refresh(&mut self) -> std::io::Result<u64> {
        let dir = self.table.join("_delta_log");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(0);
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = name
                .strip_suffix(".json")
                .and_then(|v| v.parse::<u64>().ok())
            else {
                continue;
            };
            if self.commits.contains_key(&version) {
                continue;
            }
            let text = std::fs::read_to_string(entry.path())?;
            let modified = entry.metadata()?.modified()?;
            self.commits.insert(version, parse_commit(&text, modified));
        }
        Ok(self.commits.values().map(|c| c.records).sum())
    }

    /// Every commit read so far, by version.
    pub fn commits(&self) -> &BTreeMap<u64, Commit> {
        &self.commits
    }

    /// The table directory.
    pub fn table(&self) -> &Path {
        &self.table
    }
}

fn parse_commit(text: &str, modified: SystemTime) -> Commit {
    let mut added = Vec::new();
    let mut records = 0;
    for line in text.lines() {
        let Ok(action) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(add) = action.get("add") {
            if let Some(path) = add.get("path").and_then(|p| p.as_str()) {
                added.push(percent_decode(path));
            }
            records += add
                .get("stats")
                .and_then(|s| s.as_str())
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|s| s.get("numRecords").and_then(|n| n.as_u64()))
                .unwrap_or(0);
        }
    }
    let visible_at_ms = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Commit {
        visible_at_ms,
        added,
        records,
    }
}

/// Delta paths are URL-encoded (`event_date=2026-11-21` stays as is, but
/// spaces and colons would not).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
