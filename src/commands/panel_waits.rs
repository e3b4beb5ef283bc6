//! What an empty dashboard panel is waiting for, said from the pipeline's
//! newest checkpoint: nothing committed yet, or the layer's watermark and
//! the window end it must pass before rows appear. A newcomer sees "the
//! window ending 10:42:00 closes when the watermark passes it; the
//! watermark is 7 s behind the clock" instead of a blank chart.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use strata_dashboard::PanelWaits;
use strata_engine::backfill::live_watermark;
use strata_engine::dataflow::DataflowSpec;
use strata_engine::dataflow::layer_plan::CheckedLayer;
use strata_engine::sql::program::WindowCadence;

/// The tables each panel reads, and what the pipeline says about them.
#[derive(Debug)]
pub struct PipelineWaits {
    spec: DataflowSpec,
    /// Per panel: the layers whose tables it reads, in order of appearance.
    panels: Vec<Vec<String>>,
    /// When each windowed layer emits.
    cadence: HashMap<String, WindowCadence>,
}

impl PipelineWaits {
    /// From the panels' SQL and the checked layers.
    pub fn new(spec: DataflowSpec, panel_sql: &[String], layers: &[CheckedLayer]) -> Self {
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        PipelineWaits {
            panels: panel_sql
                .iter()
                .map(|sql| layers_read(sql, &names))
                .collect(),
            cadence: layers
                .iter()
                .filter_map(|l| l.emits.map(|c| (l.name.clone(), c)))
                .collect(),
            spec,
        }
    }

    async fn say(&self, panel: usize) -> Option<String> {
        let layer = self.panels.get(panel)?.first()?;
        let watermark = live_watermark(&self.spec, layer).await.ok()?;
        Some(waiting_sentence(
            layer,
            watermark,
            self.cadence.get(layer).copied(),
            Utc::now().timestamp_micros(),
        ))
    }
}

impl PanelWaits for PipelineWaits {
    fn waiting_for(&self, panel: usize) -> BoxFuture<'_, Option<String>> {
        Box::pin(self.say(panel))
    }
}

/// The layers whose tables `sql` names as `kind.table`, a side table
/// (`<layer>_late`, ...) counting as its layer's.
fn layers_read(sql: &str, layers: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let words = sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'));
    for word in words {
        let Some((kind, table)) = word.split_once('.') else {
            continue;
        };
        if !["ods", "dwd", "dws", "ads"].contains(&kind.to_ascii_lowercase().as_str()) {
            continue;
        }
        let layer = layers
            .iter()
            .filter(|l| table == **l || table.starts_with(&format!("{l}_")))
            .max_by_key(|l| l.len());
        if let Some(layer) = layer
            && !found.iter().any(|f| f == layer)
        {
            found.push(layer.to_string());
        }
    }
    found
}

/// What a panel reading `layer` waits for, at `now` (microseconds).
fn waiting_sentence(
    layer: &str,
    watermark: Option<i64>,
    cadence: Option<WindowCadence>,
    now: i64,
) -> String {
    let Some(watermark) = watermark else {
        return format!(
            "no data yet: `{layer}` has no committed watermark (the pipeline is starting, or its inputs have no records yet)"
        );
    };
    let behind = ((now - watermark).max(0) as f64 / 1e6).round() as i64;
    match cadence {
        Some(c) => format!(
            "waiting for `{layer}`'s window ending {} (UTC) to close: its watermark is at {}, {behind} s behind the clock",
            clock(c.next_end(watermark)),
            clock(watermark)
        ),
        None => format!(
            "no rows yet: `{layer}`'s watermark is at {} (UTC), {behind} s behind the clock",
            clock(watermark)
        ),
    }
}

fn clock(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| us.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000_000;

    #[test]
    fn panels_read_layers_and_their_side_tables() {
        let layers = ["dws_store_minute", "ads_top_stores_today", "ods_deals"];
        assert_eq!(
            layers_read(
                "SELECT * FROM ads.ads_top_stores_today WHERE window_end = (SELECT max(window_end) FROM ads.ads_top_stores_today)",
                &layers
            ),
            vec!["ads_top_stores_today"]
        );
        assert_eq!(
            layers_read(
                "SELECT reason, count(*) FROM ods.ods_deals_dead_letter GROUP BY reason",
                &layers
            ),
            vec!["ods_deals"]
        );
        assert!(layers_read("SELECT 1", &layers).is_empty());
    }

    #[test]
    fn the_sentence_names_the_window_end_and_the_delay() {
        let now = 10 * MINUTE + 30_000_000;
        let wm = 10 * MINUTE + 23_000_000;
        let minute = WindowCadence {
            every_us: MINUTE,
            offset_us: 0,
        };
        assert_eq!(
            waiting_sentence("dws_store_minute", Some(wm), Some(minute), now),
            "waiting for `dws_store_minute`'s window ending 00:11:00 (UTC) to close: its watermark is at 00:10:23, 7 s behind the clock"
        );
        assert!(
            waiting_sentence("ads_x", Some(wm), None, now).contains("00:10:23 (UTC), 7 s behind")
        );
        assert!(waiting_sentence("ads_x", None, None, now).starts_with("no data yet"));
    }
}
