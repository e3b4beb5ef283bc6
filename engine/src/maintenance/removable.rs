//! Which of a table's files VACUUM removes, decided from a listing and the
//! files versions within the retention read: no I/O, so every rule is
//! tested on its own.
//!
//! A data file goes when no version within the retention reads it and it
//! was written before the retention's edge, less the time a written file
//! may wait for its commit (see [`crate::maintenance::vacuum`] for why
//! those two together cover every version within the retention). Only
//! Parquet files outside hidden directories are data files: the log,
//! staged upserts and anything Strata did not write (deletion vectors,
//! another tool's files) stay.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use object_store::ObjectMeta;
use object_store::path::Path;

/// The files of `listed` that VACUUM removes: Parquet files, outside hidden
/// directories, not in `needed`, last written before `written_before`;
/// sorted.
pub(crate) fn removable(
    listed: impl IntoIterator<Item = ObjectMeta>,
    needed: &HashSet<Path>,
    written_before: DateTime<Utc>,
) -> Vec<Path> {
    let mut out: Vec<Path> = listed
        .into_iter()
        .filter(|f| is_data_file(&f.location))
        .filter(|f| f.last_modified < written_before)
        .filter(|f| !needed.contains(&f.location))
        .map(|f| f.location)
        .collect();
    out.sort();
    out
}

/// A Parquet file none of whose directories or name is hidden (starts with
/// `_` or `.`, as `_delta_log` and `_strata_staging`; a partition
/// directory, `name=value`, never is, as in Delta).
fn is_data_file(path: &Path) -> bool {
    let parts: Vec<_> = path.parts().collect();
    let Some((name, dirs)) = parts.split_last() else {
        return false;
    };
    let hidden = |s: &str| s.starts_with('_') || s.starts_with('.');
    name.as_ref().ends_with(".parquet")
        && !hidden(name.as_ref())
        && dirs
            .iter()
            .all(|d| d.as_ref().contains('=') || !hidden(d.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, minutes_ago: i64) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(path),
            last_modified: Utc::now() - chrono::Duration::minutes(minutes_ago),
            size: 1,
            e_tag: None,
            version: None,
        }
    }

    #[test]
    fn only_old_data_files_no_version_needs_go() {
        let edge = Utc::now() - chrono::Duration::minutes(60);
        let needed: HashSet<Path> = [Path::from("day=1/read-by-a-version.parquet")].into();
        let listed = vec![
            file("day=1/read-by-a-version.parquet", 600),
            file("day=1/replaced-long-ago.parquet", 600),
            file("orphan.parquet", 61),
            file("written-within-the-retention.parquet", 59),
            file("_delta_log/00000000000000000001.checkpoint.parquet", 600),
            file("_strata_staging/upsert.parquet", 600),
            file("day=1/.hidden.parquet", 600),
            file("_day=2/partition-dir.parquet", 600),
            file("deletion_vector_0f.bin", 600),
        ];
        assert_eq!(
            removable(listed, &needed, edge),
            vec![
                Path::from("_day=2/partition-dir.parquet"),
                Path::from("day=1/replaced-long-ago.parquet"),
                Path::from("orphan.parquet"),
            ]
        );
    }
}
