//! Record schemas for Strata: what a warehouse file declares under `schemas:`,
//! the Arrow schemas they become, and JSON records decoded straight into Arrow.
//!
//! This crate is pure logic (no I/O), so decoding rules are tested without a
//! broker. It is the bottom of the dependency graph: `engine` and `layers`
//! build on it.
//!
//! ```
//! use strata_schemas::{Field, FieldType, JsonDecoder, Schema};
//!
//! let schema = Schema::new(
//!     "deal",
//!     vec![
//!         Field::new("deal_id", FieldType::String).required(),
//!         Field::new("amount", "decimal(18,2)".parse().unwrap()),
//!         Field::new("event_time", FieldType::Timestamp).required(),
//!     ],
//! )
//! .with_event_time("event_time");
//! let mut decoder = JsonDecoder::new(&schema);
//! decoder
//!     .decode(br#"{"deal_id":"d1","amount":"1250000.50","event_time":"2026-11-21T08:00:00Z"}"#)
//!     .unwrap();
//! let batch = decoder.finish().unwrap();
//! assert_eq!(batch.num_rows(), 1);
//! ```

#![warn(missing_docs)]

mod field_type;
mod json_decoder;
mod schema;
mod suggest;
mod temporal;

pub use field_type::{FieldType, FieldTypeError, TIMESTAMP_TZ};
pub use json_decoder::{DecodeError, JsonDecoder};
pub use schema::{Field, Schema};
pub use suggest::closest;
pub use temporal::{
    day_of_timestamp_micros, parse_date, parse_timestamp_micros, timestamp_from_epoch_millis,
};
