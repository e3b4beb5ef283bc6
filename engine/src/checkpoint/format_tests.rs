//! Every fixture manifest (what real runs wrote, one directory per format
//! under `engine/tests/fixtures/checkpoints/`) reads, and writes back the
//! same; formats this engine does not read are refused with what to do.

use std::path::PathBuf;

use serde_json::Value;

use super::*;

fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints");
    let mut out = Vec::new();
    for format in std::fs::read_dir(&dir)
        .expect("the fixtures directory")
        .flatten()
    {
        if !format.path().is_dir() {
            continue;
        }
        for file in std::fs::read_dir(format.path())
            .expect("a fixture directory")
            .flatten()
        {
            if file.path().extension().is_some_and(|e| e == "json") {
                out.push(file.path());
            }
        }
    }
    out.sort();
    out
}

/// `v` without null members (deltalake writes its optional fields as null;
/// the format does not carry them).
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

#[test]
fn every_fixture_manifest_reads_and_writes_back_the_same() {
    let files = fixtures();
    assert!(files.len() >= 2, "no fixture manifests: {files:?}");
    for file in files {
        let bytes = std::fs::read(&file).expect("a fixture");
        let manifest = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert_eq!(Some(manifest.epoch), Manifest::epoch_of(name), "{name}");
        assert_eq!(manifest.dataflow, "fixture");
        let read: i64 = manifest.sources[0]
            .offsets
            .iter()
            .map(|(_, next)| next)
            .sum();
        assert_eq!(read, 300, "{name}: every record read");
        let kept = |l: &&LayerCheckpoint| l.state.is_some() || !l.state_slices.is_empty();
        assert!(manifest.layers.iter().filter(kept).count() >= 5, "{name}");
        // Format 3 is the one that names rows of earlier state files.
        let by_parts = manifest.layers.iter().any(|l| !l.state_slices.is_empty());
        assert_eq!(by_parts, manifest.format == 3, "{name}");
        let original: Value = serde_json::from_slice(&bytes).expect("JSON");
        let written: Value =
            serde_json::from_slice(&encode(&manifest).expect("encoded")).expect("JSON");
        assert_eq!(without_nulls(written), without_nulls(original), "{name}");
    }
    // The first epoch's Delta files, as deltalake described them.
    let first = decode(&std::fs::read(&fixtures()[0]).expect("a fixture")).expect("a manifest");
    let add = &first.sinks[0].adds[0];
    assert!(add.path.ends_with(".parquet") && add.size > 0 && add.data_change);
    assert!(
        add.stats
            .as_deref()
            .is_some_and(|s| s.contains("numRecords"))
    );
    assert_eq!(
        add.partition_values.get("event_date"),
        Some(&Some("2026-10-05".to_string()))
    );
}

#[test]
fn formats_it_does_not_read_are_refused_with_what_to_do() {
    let newer = br#"{"format": 4, "anything": "else"}"#;
    let e = decode(newer).expect_err("a newer format");
    assert_eq!(e, FormatError::Newer(4));
    assert!(e.to_string().contains("written by a newer Strata"), "{e}");
    let older = br#"{"format": 1}"#;
    assert_eq!(
        decode(older).expect_err("an older format"),
        FormatError::Older(1)
    );
    assert!(matches!(
        decode(b"{not json"),
        Err(FormatError::Unreadable(_))
    ));
    assert!(matches!(
        decode(br#"{"format": 2, "epoch": "seven"}"#),
        Err(FormatError::Unreadable(_))
    ));
}
