//! The dashboard `strata run` serves: one static page of charts, each the
//! result of a SQL query over the warehouse, refreshed every few seconds.
//!
//! The page asks `GET /api/panels`; the server runs each panel's query
//! through the warehouse's Flight SQL endpoint, as any BI client would, and
//! answers with the rows as JSON. Going through Flight SQL rather than
//! reading tables itself keeps this crate free of the catalog and the
//! engine, and means the dashboard shows exactly what the Flight SQL
//! clients see. The page draws the charts itself (inline SVG, no external
//! scripts), so it works on a machine with no network.
//!
//! Routes: `/` the page, `/api/config` the title, refresh and panel list,
//! `/api/panels` every panel's rows, `/api/panels/{n}` one panel's;
//! `/console` the warehouse as a live graph, `/api/console` its numbers.
//! Access follows Flight SQL's rule (see `access`): loopback only
//! without users, a login with them.

#![warn(missing_docs)]

mod access;
mod console;
mod panel_json;
mod server;

pub use console::ConsoleSource;

pub use panel_json::batches_to_rows;
pub use server::{
    DashboardConfig, DashboardError, PanelConfig, PanelWaits, RunningDashboard, start,
};
