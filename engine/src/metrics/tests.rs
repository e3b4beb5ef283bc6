use std::time::Duration;

use super::*;

#[test]
fn counters_and_scrape_time_gauges_are_encoded_with_their_labels() {
    let m = Metrics::new();
    m.dataflow_running("wh", true, Duration::from_secs(1));
    m.layer_epoch("ods", 10, 9, Some(1_000_000));
    m.layer_epoch("ods", 5, 5, None);
    m.side_rows("ods", "dead_letter", "ods_dead_letter", 1);
    m.epoch_committed("wh", 3, Duration::from_millis(20), Duration::from_millis(5));
    m.partition("ods", "t", 0, 7, 2, 1.5);
    let text = m.encode();
    assert!(
        text.contains("strata_layer_rows_in_total{layer=\"ods\"} 15"),
        "{text}"
    );
    assert!(
        text.contains("strata_layer_rows_out_total{layer=\"ods\"} 14"),
        "{text}"
    );
    assert!(text.contains("strata_layer_side_rows_total{layer=\"ods\",side=\"dead_letter\",table=\"ods_dead_letter\"} 1"), "{text}");
    assert!(
        text.contains("strata_dataflow_last_epoch{dataflow=\"wh\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("strata_source_lag_records{source=\"ods\",topic=\"t\",partition=\"0\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("strata_epoch_duration_seconds_count{dataflow=\"wh\"} 1"),
        "{text}"
    );
    // The watermark is 1970: its delay is the age of the epoch, decades.
    let delay = text
        .lines()
        .find(|l| l.starts_with("strata_layer_watermark_delay_seconds{layer=\"ods\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(delay.is_some_and(|d| d > 1e9), "{text}");
    assert!(text.contains("process_open_fds"), "{text}");
    assert!(text.contains("strata_resident_anonymous_bytes"), "{text}");
}

#[test]
fn rates_and_state_sizes_are_encoded() {
    let m = Metrics::new();
    m.layer_epoch("dws", 30, 3, None);
    m.side_rows("dws", "late", "dws_late", 6);
    m.partition("ods", "t", 1, 40, 0, 0.0);
    m.layer_state("dws", 4096, 12);
    let text = m.encode();
    let value = |series: &str| {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    for series in [
        "strata_layer_rows_in_per_second{layer=\"dws\"}",
        "strata_layer_side_rows_per_second{layer=\"dws\",side=\"late\",table=\"dws_late\"}",
        "strata_source_records_per_second{source=\"ods\",topic=\"t\",partition=\"1\"}",
    ] {
        assert!(value(series).is_some_and(|v| v > 0.0), "{series}: {text}");
    }
    assert_eq!(
        value("strata_layer_state_bytes{layer=\"dws\"}"),
        Some(4096.0)
    );
    assert_eq!(value("strata_layer_state_rows{layer=\"dws\"}"), Some(12.0));
}

#[test]
fn readiness_follows_the_heartbeat() {
    let m = Metrics::new();
    assert_eq!(m.readiness(None), Readiness::Ready);
    m.dataflow_running("wh", true, Duration::from_secs(1));
    assert_eq!(m.readiness(None), Readiness::Ready);
    // A heartbeat older than the limit: not ready.
    if let Some(d) = m.live().dataflows.get_mut("wh") {
        d.heartbeat_at = Some(now_seconds() - 60.0);
    }
    assert!(matches!(m.readiness(None), Readiness::NotReady(_)));
    m.heartbeat("wh");
    assert_eq!(m.readiness(None), Readiness::Ready);
    m.dataflow_running("wh", false, Duration::from_secs(1));
    assert!(matches!(m.readiness(None), Readiness::NotReady(_)));
}
