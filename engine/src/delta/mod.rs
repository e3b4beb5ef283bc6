//! Delta Lake sinks, in two phases: writers produce an epoch's files (or
//! staged upserts) without touching the log; committers commit them once the
//! epoch's checkpoint manifest is durable.

pub mod commit_race;
pub mod epoch_rows;
pub mod log_listing;
pub mod merge_predicate;
pub(crate) mod proof;
pub mod schema_change;
pub mod storable;
pub mod table;
pub mod table_committer;
#[cfg(test)]
mod table_committer_tests;
pub mod table_writer;
pub mod upsert_writer;
pub mod widen;
#[cfg(test)]
mod widen_tests;
