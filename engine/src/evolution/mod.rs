//! Changing a running warehouse: what a new version of the file does to
//! each layer's state and tables, decided before anything is opened.
//!
//! Warehouses change every week (a field added, a window's SQL fixed). A
//! redeploy must keep what it can (open windows' counts, table history)
//! and refuse, untouched, what it cannot, saying what to do instead. The
//! comparison is pure ([`compare()`]), so `strata plan` prints exactly what
//! `strata run` will decide; the layouts it compares are recorded in each
//! manifest ([`layout`]).

pub mod compare;
pub mod layout;
pub mod redeploy;

pub use compare::{
    DeployedLayer, LayerPlanEntry, LayerShape, ProposedLayer, StateCarry, TableSchemas, Verdict,
    carry_over, compare,
};
pub use layout::StateLayout;
