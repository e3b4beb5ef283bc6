//! The end of a partition as of the consumer's last fetch, without a
//! request to the broker.
//!
//! Every fetch response carries the partition's high watermark, and
//! librdkafka keeps the latest one. Sources ask it on every flush to tell a
//! partition that is quiet (read to its end) from one that is merely slow
//! (records waiting), so it must cost no round trip; rdkafka 0.39 does not
//! wrap the call, hence the one FFI call here.

use std::ffi::CString;

use rdkafka::bindings::{rd_kafka_get_watermark_offsets, rd_kafka_resp_err_t};
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The high watermark of `topic`/`partition` from the consumer's last fetch
/// response; `None` before any fetch of it has been answered.
pub fn fetched_end(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer is valid while `consumer` lives (it is
    // borrowed for the call); `topic` is a NUL-terminated string that
    // outlives the call; `low` and `high` are valid for writes. The call only
    // reads librdkafka's cached partition state under its own lock.
    let err = unsafe {
        rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    // An unknown offset comes back as RD_KAFKA_OFFSET_INVALID (-1001).
    (err == rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}
