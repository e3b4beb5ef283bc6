//! Reading `dashboard:`: the page `strata run` serves over HTTP, one chart
//! per panel, each a SQL query over the warehouse's tables.
//!
//! ```yaml
//! dashboard:
//!   listen: 127.0.0.1:8080
//!   title: Deals today
//!   refresh: 3s
//!   panels:
//!     - {title: GMV by city, chart: bar, label: city, value: gmv,
//!        sql: "SELECT city, gmv FROM ads.ads_city_gmv ORDER BY gmv DESC"}
//! ```
//!
//! The SQL is checked by the query engine when the page asks for it, not
//! here: a panel over a table that does not exist yet says so on the page.

use std::net::SocketAddr;
use std::time::Duration;

use crate::diagnostic::Diagnostics;
use crate::model::{Chart, Dashboard, Panel};
use crate::node_reader::MapReader;

const DASHBOARD_KEYS: &[&str] = &["listen", "title", "refresh", "panels"];
const PANEL_KEYS: &[&str] = &["title", "chart", "label", "value", "sql"];
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub(crate) fn read_dashboard(d: &mut Diagnostics, top: &MapReader<'_>) -> Option<Dashboard> {
    let section = MapReader::new(d, top.node("dashboard")?, "dashboard", DASHBOARD_KEYS)?;
    let mut dashboard = Dashboard {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        title: "Strata".into(),
        refresh: Duration::from_secs(5),
        panels: Vec::new(),
    };
    if let Some(listen) = section.string(d, "listen") {
        match listen.value.parse() {
            Ok(addr) => dashboard.listen = addr,
            Err(_) => d.error(
                listen.pos,
                "dashboard.listen",
                format!("`{}` is not an ip:port address", listen.value),
                Some(format!("write e.g. `{DEFAULT_LISTEN}`")),
            ),
        }
    }
    if let Some(title) = section.string(d, "title") {
        dashboard.title = title.value;
    }
    if let Some(refresh) = section.duration(d, "refresh") {
        dashboard.refresh = refresh.value;
    }
    let Some(items) = section.seq(d, "panels") else {
        section.missing(
            d,
            "panels",
            "add `panels:`, each with `title`, `chart` (bar, line or table), `label`, `value` and `sql`",
        );
        return Some(dashboard);
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("dashboard.panels[{i}]");
        let Some(p) = MapReader::new(d, item, &path, PANEL_KEYS) else {
            continue;
        };
        let title = p.required_string(d, "title", "write `title: GMV by city`");
        let label = p.required_string(d, "label", "name the column that labels each bar or point");
        let value = p.required_string(d, "value", "name the numeric column to chart");
        let sql = p.required_string(
            d,
            "sql",
            "write the query, e.g. `SELECT city, gmv FROM ads.t`",
        );
        let chart = match p.string(d, "chart") {
            None => Some(Chart::Bar),
            Some(c) => match c.value.as_str() {
                "bar" => Some(Chart::Bar),
                "line" => Some(Chart::Line),
                "table" => Some(Chart::Table),
                other => {
                    d.error(
                        c.pos,
                        &format!("{path}.chart"),
                        format!("unknown chart `{other}`"),
                        Some("write `bar`, `line` or `table`".into()),
                    );
                    None
                }
            },
        };
        if let (Some(title), Some(label), Some(value), Some(sql), Some(chart)) =
            (title, label, value, sql, chart)
        {
            dashboard.panels.push(Panel {
                title: title.value,
                chart,
                label: label.value,
                value: value.value,
                sql: sql.value,
            });
        }
    }
    Some(dashboard)
}
