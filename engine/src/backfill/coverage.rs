//! The proof a replay covered its range, checked before any swap. Pure
//! logic over what was planned, what the ODS table holds and what the
//! replay read.
//!
//! A swap deletes the range's rows and writes the replay's: a replay that
//! read less than the range (offsets placed after its records, retention,
//! a re-created topic, wrong `--from-offsets`) would delete good rows for
//! nothing. So a Kafka replay must show, per partition:
//!
//! - **every record the ODS table holds for the range was read** (the
//!   offsets of the range's records, compared as sets, so a count that
//!   happens to match over different records does not pass);
//! - **it read past the range**: its latest event time there reached
//!   `--to`, or it read the partition to the end of the log as it stood;
//! - without an ODS table to count against, also **it started before the
//!   range**: its first record is dated before the replay span, or it
//!   started at the partition's first offset.
//!
//! Any gap refuses the swap, says where it is and what to do instead.

use std::collections::BTreeMap;

use super::kafka_range::{PartitionRange, millis_text};
use super::ods_positions::HeldRecords;
use crate::dataflow::replay_reads::ReplayReads;
use crate::kafka::offsets::TopicPartition;

/// What a coverage check compares.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// Per partition, what the ODS table holds of the range (`None`: no
    /// ODS table to count against).
    pub held: Option<&'a BTreeMap<TopicPartition, HeldRecords>>,
    /// Per partition, what a Kafka replay planned to read (empty for a
    /// replay of the ODS table itself).
    pub planned: &'a [PartitionRange],
    /// What was read.
    pub reads: &'a ReplayReads,
    /// The replay's event-time span, µs.
    pub span: (i64, i64),
    /// The range's end (`--to`), µs.
    pub to_us: i64,
}

/// Checks the replay's coverage: `Ok` with what was shown, or `Err` with
/// every gap found.
///
/// ```
/// use std::collections::BTreeMap;
/// use strata_engine::backfill::{Evidence, HeldRecords, covered};
/// use strata_engine::dataflow::replay_reads::ReplayReads;
/// let held = BTreeMap::new();
/// let reads = ReplayReads::default();
/// let e = Evidence { held: Some(&held), planned: &[], reads: &reads, span: (0, 10), to_us: 10 };
/// assert!(covered(&e).is_ok());
/// ```
pub fn covered(e: &Evidence<'_>) -> Result<String, Vec<String>> {
    let mut gaps = Vec::new();
    let mut expected = 0u64;
    if let Some(held) = e.held {
        for (tp, records) in held {
            if records.offsets.is_empty() {
                continue;
            }
            expected += records.offsets.len();
            let empty = Default::default();
            let read = e.reads.partitions.get(tp).map_or(&empty, |r| &r.kept);
            let missing = records.offsets.missing_from(read);
            if !missing.is_empty() {
                gaps.push(format!(
                    "{}/{}: the ODS table holds {} records of the replay span, the replay read {} of them; not read: offsets {missing}",
                    tp.topic,
                    tp.partition,
                    records.offsets.len(),
                    records.offsets.len() - missing.len(),
                ));
            }
        }
    }
    for part in e.planned {
        let name = format!("{}/{}", part.tp.topic, part.tp.partition);
        let reads = e.reads.partitions.get(&part.tp);
        let latest = reads.and_then(|r| r.latest_event_us);
        let read_to_the_end = part.end >= part.log_end;
        // A partition placed with nothing to read must show it too (unless
        // it is empty): an offsets-for-times placement can be wrong.
        let holds_records = part.log_start < part.log_end;
        if holds_records && !read_to_the_end && latest.is_none_or(|t| t < e.to_us) {
            gaps.push(format!(
                "{name}: the replay stopped at offset {} with its event time at {}, before --to {}: records of the range may follow",
                part.end,
                latest.map_or("nothing read".to_string(), |t| millis_text(t.div_euclid(1000))),
                millis_text(e.to_us.div_euclid(1000)),
            ));
        }
        if e.held.is_none() && part.first > part.log_start && part.first < part.end {
            match reads.and_then(|r| r.first) {
                Some((offset, Some(t))) if t >= e.span.0 => gaps.push(format!(
                    "{name}: the first record read (offset {offset}) is dated {}, inside the replay span that starts at {}: records of the range may lie before it",
                    millis_text(t.div_euclid(1000)),
                    millis_text(e.span.0.div_euclid(1000)),
                )),
                _ => {}
            }
        }
    }
    if !gaps.is_empty() {
        return Err(gaps);
    }
    let read: u64 = e.reads.partitions.values().map(|r| r.kept.len()).sum();
    let partitions = e.planned.iter().filter(|p| p.first < p.end).count();
    Ok(match e.held {
        Some(_) => format!(
            "read all {expected} records of the replay span that the ODS table holds, and past --to in {partitions} partition(s)"
        ),
        None => format!(
            "no ODS table to count against: read {read} records of the replay span, from before it and past --to in {partitions} partition(s)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::replay_reads::PartitionReads;
    use crate::kafka::offset_runs::OffsetRuns;

    const TO: i64 = 1_000_000;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition {
            topic: "deals".into(),
            partition: p,
        }
    }

    fn runs(from: i64, to: i64) -> OffsetRuns {
        let mut r = OffsetRuns::default();
        r.insert_run(from, to);
        r
    }

    fn held(parts: &[(i32, i64, i64)]) -> BTreeMap<TopicPartition, HeldRecords> {
        parts
            .iter()
            .map(|(p, a, b)| {
                (
                    tp(*p),
                    HeldRecords {
                        offsets: runs(*a, *b),
                        first: Some(*a),
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    fn reads(parts: &[(i32, i64, i64, i64)]) -> ReplayReads {
        ReplayReads {
            partitions: parts
                .iter()
                .map(|(p, a, b, latest)| {
                    (
                        tp(*p),
                        PartitionReads {
                            kept: runs(*a, *b),
                            latest_event_us: Some(*latest),
                            first: Some((*a, Some(0))),
                        },
                    )
                })
                .collect(),
        }
    }

    fn planned(p: i32, first: i64, end: i64, log_end: i64) -> PartitionRange {
        PartitionRange {
            tp: tp(p),
            first,
            end,
            log_start: 0,
            log_end,
        }
    }

    fn check(
        held: Option<&BTreeMap<TopicPartition, HeldRecords>>,
        planned: &[PartitionRange],
        reads: &ReplayReads,
    ) -> Result<String, Vec<String>> {
        covered(&Evidence {
            held,
            planned,
            reads,
            span: (100, TO),
            to_us: TO,
        })
    }

    #[test]
    fn a_replay_that_read_every_record_and_past_the_range_is_proven() {
        let h = held(&[(0, 10, 20), (1, 5, 8)]);
        let r = reads(&[(0, 8, 25, TO + 1), (1, 5, 8, TO)]);
        let p = [planned(0, 8, 30, 100), planned(1, 5, 9, 9)];
        let shown = check(Some(&h), &p, &r).unwrap();
        assert!(shown.contains("all 13 records"), "{shown}");
        assert!(shown.contains("2 partition(s)"), "{shown}");
    }

    #[test]
    fn records_the_replay_did_not_read_are_named() {
        let h = held(&[(0, 10, 20), (1, 5, 8)]);
        // Partition 0 started late; partition 1 was not read at all.
        let r = reads(&[(0, 15, 20, TO + 1)]);
        let p = [planned(0, 15, 30, 100), planned(1, 100, 100, 100)];
        let gaps = check(Some(&h), &p, &r).unwrap_err();
        assert_eq!(gaps.len(), 2, "{gaps:?}");
        assert!(
            gaps[0].contains("deals/0") && gaps[0].contains("not read: offsets 10..=14"),
            "{gaps:?}"
        );
        assert!(
            gaps[1].contains("deals/1") && gaps[1].contains("read 0 of them"),
            "{gaps:?}"
        );
    }

    #[test]
    fn as_many_records_at_other_offsets_do_not_pass() {
        // Same count, different records (a re-created topic reuses offsets).
        let h = held(&[(0, 10, 20)]);
        let r = reads(&[(0, 30, 40, TO + 1)]);
        assert!(check(Some(&h), &[planned(0, 30, 50, 60)], &r).is_err());
    }

    #[test]
    fn a_replay_that_stopped_inside_the_range_is_refused() {
        let h = held(&[(0, 10, 20)]);
        let r = reads(&[(0, 10, 20, TO - 1)]);
        let gaps = check(Some(&h), &[planned(0, 10, 20, 100)], &r).unwrap_err();
        assert!(gaps[0].contains("stopped at offset 20"), "{gaps:?}");
        // Unless it read the partition to the end of the log.
        assert!(check(Some(&h), &[planned(0, 10, 20, 20)], &r).is_ok());
    }

    #[test]
    fn without_an_ods_table_the_start_must_precede_the_span() {
        let mut r = reads(&[(0, 10, 20, TO + 1)]);
        let p = [PartitionRange {
            log_start: 5,
            ..planned(0, 10, 30, 100)
        }];
        assert!(check(None, &p, &r).is_ok(), "its first record is dated 0");
        if let Some(part) = r.partitions.get_mut(&tp(0)) {
            part.first = Some((10, Some(500)));
        }
        let gaps = check(None, &p, &r).unwrap_err();
        assert!(gaps[0].contains("may lie before it"), "{gaps:?}");
        // From the partition's first offset, nothing can lie before.
        let whole = [planned(0, 0, 30, 100)];
        assert!(check(None, &whole, &r).is_ok());
    }

    #[test]
    fn a_partition_placed_with_nothing_to_read_must_reach_its_end() {
        // Offsets-for-times put the span before the partition's records.
        let r = ReplayReads::default();
        let gaps = check(None, &[planned(0, 0, 0, 50)], &r).unwrap_err();
        assert!(gaps[0].contains("nothing read"), "{gaps:?}");
        // An empty partition, or one with nothing after the end, is fine.
        assert!(check(None, &[planned(0, 0, 0, 0)], &r).is_ok());
        assert!(check(None, &[planned(0, 50, 50, 50)], &r).is_ok());
    }

    #[test]
    fn an_ods_replay_needs_no_plan() {
        let h = held(&[(0, 10, 20)]);
        let r = reads(&[(0, 10, 20, TO - 5)]);
        assert!(check(Some(&h), &[], &r).is_ok());
    }
}
