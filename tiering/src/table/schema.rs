//! The Arrow/Parquet schema of an archived segment: one row per record.
//!
//! Column meanings, and which are needed for a lossless rebuild, are documented in
//! docs/TABLE.md; keep the two in step. The first eleven columns are the data-lake view
//! DESIGN.md fixes; the `batch_*` columns and the two `record_*` ones exist so the original
//! batches can be rebuilt exactly. Batch-level values repeat on every row of their batch and
//! cost next to nothing after dictionary/RLE encoding.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

pub const OFFSET: &str = "offset";
pub const TIMESTAMP: &str = "timestamp";
pub const KEY: &str = "key";
pub const VALUE: &str = "value";
pub const HEADERS: &str = "headers";
pub const PRODUCER_ID: &str = "producer_id";
pub const PRODUCER_EPOCH: &str = "producer_epoch";
pub const SEQUENCE: &str = "sequence";
pub const BATCH_BASE_OFFSET: &str = "batch_base_offset";
pub const ATTRIBUTES: &str = "attributes";
pub const IS_CONTROL: &str = "is_control";
pub const BATCH_LAST_OFFSET: &str = "batch_last_offset";
pub const BATCH_BASE_TIMESTAMP: &str = "batch_base_timestamp";
pub const BATCH_MAX_TIMESTAMP: &str = "batch_max_timestamp";
pub const BATCH_LEADER_EPOCH: &str = "batch_leader_epoch";
pub const BATCH_BASE_SEQUENCE: &str = "batch_base_sequence";
pub const BATCH_RECORD_COUNT: &str = "batch_record_count";
pub const RECORD_TIMESTAMP_DELTA: &str = "record_timestamp_delta";
pub const RECORD_ATTRIBUTES: &str = "record_attributes";

/// Fields of the `headers` list's struct.
pub const HEADER_KEY: &str = "key";
pub const HEADER_VALUE: &str = "value";
pub const HEADER_KEY_RAW: &str = "key_raw";

/// Parquet key-value metadata naming the table layout version, so a reader can refuse a
/// layout it does not know.
pub const VERSION_KEY: &str = "strata.table.version";
pub const VERSION: &str = "1";

/// Arrow's timestamp columns carry a time zone string; Kafka timestamps are UTC instants.
pub const TIME_ZONE: &str = "UTC";

pub fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new(HEADER_KEY, DataType::Utf8, false),
        Field::new(HEADER_VALUE, DataType::Binary, true),
        Field::new(HEADER_KEY_RAW, DataType::Binary, true),
    ])
}

pub fn header_item_field() -> Arc<Field> {
    Arc::new(Field::new_list_field(
        DataType::Struct(header_fields()),
        false,
    ))
}

/// The table schema. Every file this crate writes has exactly these columns in this order.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new(OFFSET, DataType::Int64, false),
                Field::new(
                    TIMESTAMP,
                    DataType::Timestamp(TimeUnit::Millisecond, Some(TIME_ZONE.into())),
                    false,
                ),
                Field::new(KEY, DataType::Binary, true),
                Field::new(VALUE, DataType::Binary, true),
                Field::new(HEADERS, DataType::List(header_item_field()), false),
                Field::new(PRODUCER_ID, DataType::Int64, false),
                Field::new(PRODUCER_EPOCH, DataType::Int16, false),
                Field::new(SEQUENCE, DataType::Int32, false),
                Field::new(BATCH_BASE_OFFSET, DataType::Int64, false),
                Field::new(ATTRIBUTES, DataType::Int16, false),
                Field::new(IS_CONTROL, DataType::Boolean, false),
                Field::new(BATCH_LAST_OFFSET, DataType::Int64, false),
                Field::new(BATCH_BASE_TIMESTAMP, DataType::Int64, false),
                Field::new(BATCH_MAX_TIMESTAMP, DataType::Int64, false),
                Field::new(BATCH_LEADER_EPOCH, DataType::Int32, false),
                Field::new(BATCH_BASE_SEQUENCE, DataType::Int32, false),
                Field::new(BATCH_RECORD_COUNT, DataType::Int32, false),
                Field::new(RECORD_TIMESTAMP_DELTA, DataType::Int64, true),
                Field::new(RECORD_ATTRIBUTES, DataType::Int8, false),
            ]))
        })
        .clone()
}
