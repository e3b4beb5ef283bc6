//! Bound parameters as Arrow IPC, decoded from untrusted bytes.
//!
//! Parameters arrive as IPC messages from clients (`DoPut` on a prepared
//! statement) and come back inside statement handles. The IPC readers
//! believe the lengths a message states: a `bodyLength` of 2^62 makes them
//! allocate 2^62 bytes (the process aborts), a metadata length of 2^31-1
//! allocates 2 GiB, a type the reader does not expect panics. So nothing
//! here allocates from a length the bytes claim: the whole input is already
//! in memory and bounded by `serve.limits.parameter_bytes`; every length is
//! checked against what is really there; the flatbuffers are verified; the
//! schema may only hold scalar types the reader builds without panicking;
//! a batch must be one uncompressed row whose buffers lie inside its body.
//! Only then does arrow-ipc decode it (and validate the arrays). A panic
//! inside arrow-ipc all the same is caught and reported as a bad request.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::convert::fb_to_schema;
use arrow::ipc::reader::RecordBatchDecoder;
use arrow::ipc::writer::StreamWriter;
use arrow::ipc::{
    DateUnit, Endianness, IntervalUnit, MessageHeader, MetadataVersion, Precision, TimeUnit, Type,
    root_as_message,
};
use prost::bytes::Bytes;
use tonic::Status;

/// The most parameters one statement may take.
pub(crate) const MAX_PARAMETERS: usize = 10_000;
/// The IPC stream continuation marker.
const CONTINUATION: u32 = 0xFFFF_FFFF;

/// One IPC message: its flatbuffer header and its body.
#[derive(Debug, Clone)]
pub(crate) struct IpcPart {
    pub header: Bytes,
    pub body: Bytes,
}

fn bad(why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("bound parameters: {why}"))
}

/// Decodes one row of parameters from a schema message and a record batch
/// message (parts with an empty header, as a `DoPut`'s first message may
/// be, are skipped).
pub(crate) fn decode_parameters(parts: &[IpcPart]) -> Result<RecordBatch, Status> {
    match catch_unwind(AssertUnwindSafe(|| decode(parts))) {
        Ok(result) => result,
        Err(_) => Err(bad(
            "the Arrow IPC data is malformed (the decoder failed on it)",
        )),
    }
}

fn decode(parts: &[IpcPart]) -> Result<RecordBatch, Status> {
    let mut schema: Option<SchemaRef> = None;
    let mut batch: Option<RecordBatch> = None;
    for part in parts.iter().filter(|p| !p.header.is_empty()) {
        let message =
            root_as_message(&part.header).map_err(|e| bad(format!("not an IPC message: {e}")))?;
        let version = message.version();
        if version < MetadataVersion::V4 || version > MetadataVersion::V5 {
            return Err(bad(format!("unsupported IPC metadata version {version:?}")));
        }
        match message.header_type() {
            MessageHeader::Schema => {
                let fb = message
                    .header_as_schema()
                    .ok_or_else(|| bad("a schema message without a schema"))?;
                if schema.is_some() {
                    return Err(bad("more than one schema"));
                }
                check_schema(&fb)?;
                schema = Some(Arc::new(fb_to_schema(fb)));
            }
            MessageHeader::RecordBatch => {
                let schema = schema
                    .as_ref()
                    .ok_or_else(|| bad("a batch before its schema"))?;
                if batch.is_some() {
                    return Err(bad(
                        "more than one batch: bind exactly one row of parameters",
                    ));
                }
                let fb = message
                    .header_as_record_batch()
                    .ok_or_else(|| bad("a batch message without a batch"))?;
                check_batch(&fb, message.bodyLength(), part.body.len(), schema)?;
                let body = Buffer::from(part.body.clone());
                let dictionaries = HashMap::new();
                let decoded =
                    RecordBatchDecoder::try_new(&body, fb, schema.clone(), &dictionaries, &version)
                        .and_then(|d| d.with_require_alignment(false).read_record_batch())
                        .map_err(|e| bad(format!("cannot decode the batch: {e}")))?;
                batch = Some(decoded);
            }
            MessageHeader::DictionaryBatch => {
                return Err(bad(
                    "dictionary-encoded parameters are not supported; send plain values",
                ));
            }
            other => return Err(bad(format!("unexpected IPC message {other:?}"))),
        }
    }
    batch.ok_or_else(|| bad("no parameter values were sent"))
}

/// Only scalar types, each in a form arrow-ipc builds without panicking.
fn check_schema(fb: &arrow::ipc::Schema<'_>) -> Result<(), Status> {
    if fb.endianness() != Endianness::Little {
        return Err(bad("big-endian data is not supported"));
    }
    let fields = fb.fields().ok_or_else(|| bad("a schema without fields"))?;
    if fields.len() > MAX_PARAMETERS {
        return Err(bad(format!(
            "{} parameters; a statement takes at most {MAX_PARAMETERS}",
            fields.len()
        )));
    }
    for (i, field) in fields.iter().enumerate() {
        let name = field.name().unwrap_or("?");
        if field.dictionary().is_some() || field.children().is_some_and(|c| !c.is_empty()) {
            return Err(bad(format!(
                "parameter {} ({name}) is not a plain scalar value",
                i + 1
            )));
        }
        if !scalar_type_ok(&field) {
            return Err(bad(format!(
                "parameter {} ({name}) has type {:?}, which cannot be bound; send a number, string, binary, boolean, decimal, date, time, timestamp or interval",
                i + 1,
                field.type_type()
            )));
        }
    }
    Ok(())
}

fn scalar_type_ok(field: &arrow::ipc::Field<'_>) -> bool {
    match field.type_type() {
        Type::Null
        | Type::Bool
        | Type::Utf8
        | Type::LargeUtf8
        | Type::Binary
        | Type::LargeBinary => true,
        Type::Int => field
            .type_as_int()
            .is_some_and(|t| matches!(t.bitWidth(), 8 | 16 | 32 | 64)),
        Type::FloatingPoint => field.type_as_floating_point().is_some_and(|t| {
            matches!(
                t.precision(),
                Precision::HALF | Precision::SINGLE | Precision::DOUBLE
            )
        }),
        Type::Decimal => field.type_as_decimal().is_some_and(|t| {
            matches!(t.bitWidth(), 32 | 64 | 128 | 256)
                && (1..=76).contains(&t.precision())
                && (-128..=127).contains(&t.scale())
        }),
        Type::Date => field
            .type_as_date()
            .is_some_and(|t| matches!(t.unit(), DateUnit::DAY | DateUnit::MILLISECOND)),
        Type::Time => field.type_as_time().is_some_and(|t| {
            matches!(
                (t.bitWidth(), t.unit()),
                (32, TimeUnit::SECOND | TimeUnit::MILLISECOND)
                    | (64, TimeUnit::MICROSECOND | TimeUnit::NANOSECOND)
            )
        }),
        Type::Timestamp => field.type_as_timestamp().is_some_and(|t| {
            matches!(
                t.unit(),
                TimeUnit::SECOND
                    | TimeUnit::MILLISECOND
                    | TimeUnit::MICROSECOND
                    | TimeUnit::NANOSECOND
            )
        }),
        Type::Interval => field.type_as_interval().is_some_and(|t| {
            matches!(
                t.unit(),
                IntervalUnit::YEAR_MONTH | IntervalUnit::DAY_TIME | IntervalUnit::MONTH_DAY_NANO
            )
        }),
        _ => false,
    }
}

/// One uncompressed row whose nodes and buffers are all inside the body.
fn check_batch(
    fb: &arrow::ipc::RecordBatch<'_>,
    stated_body: i64,
    body: usize,
    schema: &Schema,
) -> Result<(), Status> {
    if fb.compression().is_some() {
        return Err(bad("compressed parameters are not supported"));
    }
    if fb.length() != 1 {
        return Err(bad(format!(
            "bind exactly one row of parameters (got {} rows)",
            fb.length()
        )));
    }
    if usize::try_from(stated_body).map_or(true, |n| n > body) {
        return Err(bad(format!(
            "the batch claims a {stated_body}-byte body but {body} bytes came"
        )));
    }
    if fb.variadicBufferCounts().is_some_and(|v| !v.is_empty()) {
        return Err(bad("view types are not supported"));
    }
    let nodes = fb
        .nodes()
        .ok_or_else(|| bad("a batch without field nodes"))?;
    if nodes.len() != schema.fields().len() {
        return Err(bad(format!(
            "{} columns for {} parameters",
            nodes.len(),
            schema.fields().len()
        )));
    }
    for node in nodes.iter() {
        if node.length() != 1 || !(0..=1).contains(&node.null_count()) {
            return Err(bad("each parameter must hold exactly one value"));
        }
    }
    let buffers = fb.buffers().ok_or_else(|| bad("a batch without buffers"))?;
    if buffers.len() > 3 * nodes.len() {
        return Err(bad("more buffers than the columns use"));
    }
    for b in buffers.iter() {
        let inside = usize::try_from(b.offset())
            .ok()
            .zip(usize::try_from(b.length()).ok())
            .and_then(|(offset, len)| offset.checked_add(len))
            .is_some_and(|end| end <= body);
        if !inside {
            return Err(bad(format!(
                "a buffer at offset {} of {} bytes lies outside the {body}-byte body",
                b.offset(),
                b.length()
            )));
        }
    }
    Ok(())
}

/// Splits an IPC stream (as handles carry it) into its messages, checking
/// each stated length against the bytes there. Nothing is allocated from a
/// stated length.
pub(crate) fn split_stream(bytes: &Bytes) -> Result<Vec<IpcPart>, Status> {
    let mut parts = Vec::new();
    let mut pos = 0usize;
    let read_u32 = |at: usize| -> Option<u32> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    while pos < bytes.len() {
        let mut len = read_u32(pos).ok_or_else(|| bad("a truncated IPC stream"))?;
        pos += 4;
        if len == CONTINUATION {
            len = read_u32(pos).ok_or_else(|| bad("a truncated IPC stream"))?;
            pos += 4;
        }
        if len == 0 {
            break;
        }
        let len = len as usize;
        let header_end = pos
            .checked_add(len)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| {
                bad(format!(
                    "a message claims {len} bytes of metadata past the end"
                ))
            })?;
        let header = bytes.slice(pos..header_end);
        let message =
            root_as_message(&header).map_err(|e| bad(format!("not an IPC message: {e}")))?;
        let body_len =
            usize::try_from(message.bodyLength()).map_err(|_| bad("a negative body length"))?;
        let body_end = header_end
            .checked_add(body_len)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| {
                bad(format!(
                    "a message claims a {body_len}-byte body past the end of the data"
                ))
            })?;
        parts.push(IpcPart {
            header,
            body: bytes.slice(header_end..body_end),
        });
        pos = body_end;
    }
    Ok(parts)
}

/// One row of parameters as an IPC stream, for a handle.
pub(crate) fn encode_parameters(batch: &RecordBatch) -> Result<Vec<u8>, Status> {
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())
        .map_err(|e| Status::internal(format!("encoding parameters: {e}")))?;
    writer
        .write(batch)
        .and_then(|()| writer.finish())
        .map_err(|e| Status::internal(format!("encoding parameters: {e}")))?;
    drop(writer);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    use super::*;

    fn row() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("$1", DataType::Utf8, true),
                Field::new("$2", DataType::Int64, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["beijing"])),
                Arc::new(Int64Array::from(vec![7])),
            ],
        )
        .unwrap()
    }

    fn round_trip(bytes: &[u8]) -> Result<RecordBatch, Status> {
        decode_parameters(&split_stream(&Bytes::copy_from_slice(bytes))?)
    }

    #[test]
    fn a_row_round_trips() {
        let bytes = encode_parameters(&row()).unwrap();
        assert_eq!(round_trip(&bytes).unwrap(), row());
    }

    #[test]
    fn stated_lengths_beyond_the_data_are_refused_without_allocating() {
        let bytes = encode_parameters(&row()).unwrap();
        // The first message's metadata length: 2^31-1.
        let mut huge_meta = bytes.clone();
        huge_meta[4..8].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
        let e = round_trip(&huge_meta).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("past the end"), "{}", e.message());
        // Every single-byte edit and every truncation is an error or a
        // value, never a panic or an abort.
        for i in 0..bytes.len() {
            for v in [0u8, 0x7F, 0x80, 0xFF] {
                let mut edited = bytes.clone();
                edited[i] = v;
                let _ = round_trip(&edited);
            }
            let _ = round_trip(&bytes[..i]);
        }
    }

    #[test]
    fn more_than_one_row_is_refused() {
        let two = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![1, 2]))],
        )
        .unwrap();
        let e = round_trip(&encode_parameters(&two).unwrap()).unwrap_err();
        assert!(e.message().contains("exactly one row"), "{}", e.message());
    }
}
