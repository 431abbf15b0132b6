//! Storage engine of one partition: segments of Kafka RecordBatch v2.
