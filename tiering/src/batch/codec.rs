//! Compression codecs of record batches, and the topic-level choice of codec for rebuilt batches.
//!
//! The codec implementations are kafka-protocol's (`kafka_protocol::compression`): xerial-framed
//! snappy, LZ4 frames, gzip and zstd exactly as Kafka clients expect them. This module only maps
//! Kafka's attribute bits and config names onto them.

use std::fmt;
use std::str::FromStr;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::compression::{self as kc, Compressor, Decompressor};

use super::BatchError;

/// The compression codec of one record batch (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    pub const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    /// The codec id as stored in the low three attribute bits.
    pub fn id(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }

    /// The codec named by a batch's attributes; `None` for the ids Kafka does not define (5-7).
    pub fn from_attributes(attributes: i16) -> Option<Codec> {
        match attributes & 0x07 {
            0 => Some(Codec::None),
            1 => Some(Codec::Gzip),
            2 => Some(Codec::Snappy),
            3 => Some(Codec::Lz4),
            4 => Some(Codec::Zstd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    /// Compresses a records section (the bytes after the 61-byte batch header).
    pub fn compress(self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
        // kafka-protocol's codecs return anyhow errors; they are kept as the `source`.
        fn run<C: Compressor<Vec<u8>, BufMut = BytesMut>>(
            codec: Codec,
            raw: &[u8],
            out: &mut Vec<u8>,
        ) -> Result<(), BatchError> {
            C::compress(out, |tmp| {
                tmp.extend_from_slice(raw);
                Ok(())
            })
            .map_err(|e| BatchError::Compress {
                codec,
                source: e.into(),
            })
        }
        match self {
            Codec::None => {
                out.extend_from_slice(raw);
                Ok(())
            }
            Codec::Gzip => run::<kc::Gzip>(self, raw, out),
            Codec::Snappy => run::<kc::Snappy>(self, raw, out),
            Codec::Lz4 => run::<kc::Lz4>(self, raw, out),
            Codec::Zstd => run::<kc::Zstd>(self, raw, out),
        }
    }

    /// Decompresses a records section. `base_offset` only names the batch in errors.
    pub fn decompress(self, data: Bytes, base_offset: i64) -> Result<Bytes, BatchError> {
        fn run<C: Decompressor<Bytes, Buf = Bytes>>(
            codec: Codec,
            mut data: Bytes,
            base_offset: i64,
        ) -> Result<Bytes, BatchError> {
            C::decompress(&mut data, |buf| Ok(buf.copy_to_bytes(buf.remaining()))).map_err(|e| {
                BatchError::Decompress {
                    base_offset,
                    codec,
                    source: e.into(),
                }
            })
        }
        match self {
            Codec::None => Ok(data),
            Codec::Gzip => run::<kc::Gzip>(self, data, base_offset),
            Codec::Snappy => run::<kc::Snappy>(self, data, base_offset),
            Codec::Lz4 => run::<kc::Lz4>(self, data, base_offset),
            Codec::Zstd => run::<kc::Zstd>(self, data, base_offset),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A topic's `compression.type`: which codec rebuilt batches get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TopicCompression {
    /// Kafka's `producer`: every batch keeps the codec it was produced with (recorded in the
    /// `attributes` column).
    #[default]
    Producer,
    /// Every rebuilt batch uses this codec.
    Codec(Codec),
}

impl TopicCompression {
    /// The codec a rebuilt batch gets, given the attributes it was stored with.
    pub fn codec_for(self, stored_attributes: i16) -> Codec {
        match self {
            // Attributes come from our own Parquet files, where a codec id outside 0-4 was
            // rejected on the way in; `None` keeps a damaged file readable.
            TopicCompression::Producer => {
                Codec::from_attributes(stored_attributes).unwrap_or(Codec::None)
            }
            TopicCompression::Codec(codec) => codec,
        }
    }
}

impl FromStr for TopicCompression {
    type Err = BatchError;

    /// Kafka's `compression.type` values; `none` is accepted as a synonym of `uncompressed`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "producer" => TopicCompression::Producer,
            "uncompressed" | "none" => TopicCompression::Codec(Codec::None),
            "gzip" => TopicCompression::Codec(Codec::Gzip),
            "snappy" => TopicCompression::Codec(Codec::Snappy),
            "lz4" => TopicCompression::Codec(Codec::Lz4),
            "zstd" => TopicCompression::Codec(Codec::Zstd),
            other => return Err(BatchError::UnknownCompressionType(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let raw: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in Codec::ALL {
            let mut out = Vec::new();
            codec.compress(&raw, &mut out).unwrap();
            let back = codec.decompress(Bytes::from(out), 0).unwrap();
            assert_eq!(back.as_ref(), raw.as_slice(), "{codec}");
        }
    }

    #[test]
    fn attribute_ids_match_kafka() {
        for codec in Codec::ALL {
            assert_eq!(Codec::from_attributes(codec.id() | 0x30), Some(codec));
        }
        assert_eq!(Codec::from_attributes(5), None);
        assert_eq!(Codec::from_attributes(7), None);
    }

    #[test]
    fn compression_type_names() {
        assert_eq!(
            "producer".parse::<TopicCompression>().unwrap(),
            TopicCompression::Producer
        );
        assert_eq!(
            "uncompressed".parse::<TopicCompression>().unwrap(),
            TopicCompression::Codec(Codec::None)
        );
        assert_eq!(
            "zstd".parse::<TopicCompression>().unwrap(),
            TopicCompression::Codec(Codec::Zstd)
        );
        assert!("brotli".parse::<TopicCompression>().is_err());
        assert_eq!(TopicCompression::Producer.codec_for(0x13), Codec::Lz4);
        assert_eq!(
            TopicCompression::Codec(Codec::Gzip).codec_for(0x13),
            Codec::Gzip
        );
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let err = codec
                .decompress(Bytes::from_static(b"\x00\x01garbage"), 42)
                .unwrap_err();
            assert!(err.to_string().contains("42"), "{err}");
        }
    }
}
