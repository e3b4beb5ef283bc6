//! The engine's shape, checked: dependencies between its modules point one
//! way, and no source file of the workspace outgrows what one reader can
//! hold (~600 lines).
//!
//! The modules are layered, lowest first: `sql` (plans) and `checkpoint`
//! (the on-disk record of an epoch) know nothing of what runs them;
//! `operators` run plans; `dataflow` wires operators, sources, tables and
//! checkpoints together; `backfill` drives dataflows; `maintenance` keeps
//! the tables dataflows write (beside the epoch path, never in it); `lease`
//! (one writer per warehouse) knows only the storage root. A `use crate::x` from
//! a lower module to a higher one would make a cycle.

use std::path::{Path, PathBuf};

/// Modules, and the ones each must not import.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("sql", &["operators", "dataflow", "checkpoint", "backfill"]),
    ("checkpoint", &["sql", "operators", "dataflow", "backfill"]),
    ("operators", &["dataflow", "checkpoint", "backfill"]),
    ("dataflow", &["backfill", "maintenance"]),
    ("maintenance", &["backfill"]),
    (
        "metrics",
        &["sql", "operators", "dataflow", "checkpoint", "backfill"],
    ),
    (
        "lease",
        &[
            "sql",
            "operators",
            "dataflow",
            "checkpoint",
            "backfill",
            "maintenance",
        ],
    ),
];

/// The longest a source file may be.
const MAX_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn module_dependencies_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    for (module, forbidden) in FORBIDDEN {
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        let single = src.join(format!("{module}.rs"));
        if single.exists() {
            files.push(single);
        }
        assert!(!files.is_empty(), "no module `{module}`");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim_start();
                if !(line.starts_with("use crate::")
                    || line.starts_with("pub use crate::")
                    || line.starts_with("pub(crate) use crate::"))
                {
                    continue;
                }
                for other in *forbidden {
                    if line.contains(&format!("crate::{other}::"))
                        || line.contains(&format!("crate::{other};"))
                    {
                        problems.push(format!(
                            "{}:{}: {module} imports {other}: {line}",
                            file.display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_source_file_outgrows_one_reader() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in [
        "src",
        "engine",
        "layers",
        "flight-server",
        "dashboard",
        "schemas",
        "benches",
    ] {
        rust_files(&workspace.join(dir), &mut files);
    }
    assert!(
        files.len() > 50,
        "the workspace was not found: {}",
        workspace.display()
    );
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these by concept:\n{}",
        long.join("\n")
    );
}
