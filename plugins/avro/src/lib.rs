//! `avro`: an Avro codec (SerDe). Events carry records as JSON objects; the plugin converts
//! them with the schema given in its config.
//!
//! ```yaml
//! plugins:
//!   orders:
//!     path: avro.wasm
//!     files:                          # read by the agent: the plugin has no file system
//!       schema: order.avsc            #   (and no network: Confluent schemas come this way too)
//!       schema.7: order-v7.avsc       #   `schema.<id>`: a Confluent schema id's schema
//!     config:
//!       format: container             # container (default) | single_object | confluent
//!       codec: deflate                # container encode: null | deflate | snappy | zstandard
//!       schema_id: 7                  # confluent encode: the id written before each record
//!       max_block_size: 16MiB-ish     # bytes; larger blocks and allocations are refused
//! ```
//!
//! `schema` may also be inline in `config` (a JSON schema as text or as an object), and
//! Confluent schemas as `schemas: {"7": <schema>}`.
//!
//! Formats:
//! - `container`: an object container file (magic `Obj\x01`, header with the writer's schema
//!   and codec, sync-marked blocks). Decode reads the schema from the file's header (any of
//!   the four codecs); encode writes one file per batch with `schema` and `codec`.
//! - `single_object`: Avro single-object encoding (`C3 01`, the schema's 8-byte CRC-64-AVRO
//!   fingerprint, the datum), one record per payload; decode finds the schema among the
//!   configured ones by fingerprint.
//! - `confluent`: the Confluent wire format (a zero byte, the 4-byte big-endian schema id,
//!   the datum), one record per payload; decode looks the id up in `schemas` / `files`.
//!   The plugin cannot reach a schema registry: export the schemas you read (`GET
//!   /schemas/ids/<id>`) into files and name them here.
//!
//! Each record becomes one event whose body is its JSON (unions as their value, bytes and
//! fixed as arrays of numbers, enums as their symbol). A payload that is not what the format
//! says — a bad magic, a truncated block, a sync marker that does not match, a datum that
//! does not fit the schema, an unknown schema id — fails whole with the reason (the host
//! dead-letters it). Encode refuses a JSON body that does not fit the schema, naming the
//! event.

use std::{collections::BTreeMap, io::Read, sync::OnceLock};

use apache_avro::{Schema, rabin::Rabin, types::Value as Avro};
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use sluice_guest::{Error, Event};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Container,
    SingleObject,
    Confluent,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockCodec {
    #[default]
    Null,
    Deflate,
    Snappy,
    Zstandard,
}

impl BlockCodec {
    fn name(self) -> &'static str {
        match self {
            BlockCodec::Null => "null",
            BlockCodec::Deflate => "deflate",
            BlockCodec::Snappy => "snappy",
            BlockCodec::Zstandard => "zstandard",
        }
    }

    fn from_name(n: &str) -> Result<BlockCodec, Error> {
        Ok(match n {
            "null" => BlockCodec::Null,
            "deflate" => BlockCodec::Deflate,
            "snappy" => BlockCodec::Snappy,
            "zstandard" => BlockCodec::Zstandard,
            other => {
                return Err(err(format!(
                    "the file's codec `{other}` is not supported (null, deflate, snappy, zstandard)"
                )));
            }
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub codec: BlockCodec,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub schemas: BTreeMap<String, Value>,
    #[serde(default)]
    pub schema_id: Option<u32>,
    #[serde(default = "default_block")]
    pub max_block_size: usize,
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

fn default_block() -> usize {
    16 << 20
}

fn err(message: impl Into<String>) -> Error {
    Error::new(format!("avro: {}", message.into()))
}

/// A schema, as given (what a container file's header carries: the canonical form would
/// drop `logicalType`, defaults and docs), and its single-object fingerprint.
struct Known {
    schema: Schema,
    text: String,
    fingerprint: [u8; 8],
}

impl Known {
    fn parse(text: &str, what: &str) -> Result<Known, Error> {
        let schema = Schema::parse_str(text).map_err(|e| err(format!("{what}: {e}")))?;
        let fp = schema.fingerprint::<Rabin>().bytes;
        let fingerprint = fp.as_slice().try_into().map_err(|_| err("a fingerprint is not 8 bytes"))?;
        Ok(Known { schema, text: text.trim().to_owned(), fingerprint })
    }
}

/// A schema given inline (text or object) as text.
fn schema_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The configured codec.
pub struct AvroCodec {
    format: Format,
    codec: BlockCodec,
    /// `schema`: what encode writes (and single-object decode may match).
    writer: Option<Known>,
    /// Confluent schemas by id.
    by_id: BTreeMap<u32, Known>,
    schema_id: Option<u32>,
    max_block: usize,
}

impl AvroCodec {
    pub fn new(cfg: Config) -> Result<Self, Error> {
        let file = |name: &str| -> Result<Option<String>, Error> {
            cfg.files
                .get(name)
                .map(|b64| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .map_err(|e| err(format!("files.{name} is not base64: {e}")))?;
                    String::from_utf8(bytes).map_err(|_| err(format!("files.{name} is not UTF-8 text")))
                })
                .transpose()
        };
        let writer = match (&cfg.schema, file("schema")?) {
            (Some(_), Some(_)) => return Err(err("`schema` is given both inline and in `files`")),
            (Some(v), None) => Some(Known::parse(&schema_text(v), "schema")?),
            (None, Some(t)) => Some(Known::parse(&t, "files.schema")?),
            (None, None) => None,
        };
        let mut by_id = BTreeMap::new();
        for (id, v) in &cfg.schemas {
            let n: u32 = id.parse().map_err(|_| err(format!("schemas: {id:?} is not a schema id")))?;
            by_id.insert(n, Known::parse(&schema_text(v), &format!("schemas.{id}"))?);
        }
        for name in cfg.files.keys() {
            if let Some(id) = name.strip_prefix("schema.") {
                let n: u32 = id.parse().map_err(|_| err(format!("files: {name:?}: `schema.<id>` needs a number")))?;
                let text = file(name)?.unwrap_or_default();
                by_id.insert(n, Known::parse(&text, &format!("files.{name}"))?);
            } else if name != "schema" {
                return Err(err(format!("files: {name:?} is neither `schema` nor `schema.<id>`")));
            }
        }
        match cfg.format {
            Format::SingleObject if writer.is_none() && by_id.is_empty() => {
                return Err(err("single_object needs `schema` (or `schemas`)"));
            }
            Format::Confluent if by_id.is_empty() => {
                return Err(err("confluent needs the schemas by id: `files: {schema.<id>: x.avsc}` or `schemas`"));
            }
            Format::Confluent if cfg.schema_id.is_some_and(|id| !by_id.contains_key(&id)) => {
                return Err(err("schema_id names no configured schema"));
            }
            _ => {}
        }
        // Lengths read from the payload (strings, arrays) may not ask for more. Set once per
        // instance (the library keeps the first value), never below 1 MiB.
        apache_avro::max_allocation_bytes(cfg.max_block_size.max(1 << 20));
        Ok(AvroCodec {
            format: cfg.format,
            codec: cfg.codec,
            writer,
            by_id,
            schema_id: cfg.schema_id,
            max_block: cfg.max_block_size,
        })
    }

    pub fn decode(&self, payload: &[u8]) -> Result<Vec<Event>, Error> {
        match self.format {
            Format::Container => self.decode_container(payload),
            Format::SingleObject => {
                let rest = payload
                    .strip_prefix(&[0xC3, 0x01])
                    .ok_or_else(|| err("not single-object encoded (no C3 01 marker)"))?;
                if rest.len() < 8 {
                    return Err(err("single-object payload shorter than its fingerprint"));
                }
                let (fp, datum) = rest.split_at(8);
                let known = self
                    .writer
                    .iter()
                    .chain(self.by_id.values())
                    .find(|k| k.fingerprint == fp)
                    .ok_or_else(|| err(format!("no configured schema has the fingerprint {}", hex(fp))))?;
                Ok(vec![one_datum(&known.schema, datum)?])
            }
            Format::Confluent => {
                if payload.len() < 5 || payload[0] != 0 {
                    return Err(err("not in the Confluent wire format (no zero magic byte and schema id)"));
                }
                let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
                let known = self
                    .by_id
                    .get(&id)
                    .ok_or_else(|| err(format!("schema id {id} is not configured (files: schema.{id})")))?;
                let mut e = one_datum(&known.schema, &payload[5..])?;
                e.set_header("avro.schema_id", id.to_string());
                Ok(vec![e])
            }
        }
    }

    fn decode_container(&self, payload: &[u8]) -> Result<Vec<Event>, Error> {
        let mut r = payload;
        if r.len() < 4 || &r[..4] != b"Obj\x01" {
            return Err(err("not an Avro object container file (no `Obj\\x01` magic)"));
        }
        r = &r[4..];
        let meta = read_metadata(&mut r, self.max_block)?;
        let schema_json = meta.get("avro.schema").ok_or_else(|| err("the file header has no avro.schema"))?;
        let schema =
            Schema::parse_str(std::str::from_utf8(schema_json).map_err(|_| err("the header's schema is not UTF-8"))?)
                .map_err(|e| err(format!("the header's schema: {e}")))?;
        let codec = BlockCodec::from_name(
            meta.get("avro.codec").map(|c| std::str::from_utf8(c).unwrap_or("?")).unwrap_or("null"),
        )?;
        let sync: [u8; 16] = take(&mut r, 16)?.try_into().map_err(|_| err("truncated header"))?;
        let mut out = Vec::new();
        let mut block_no = 0usize;
        while !r.is_empty() {
            let count = read_long(&mut r).map_err(|e| err(format!("block {block_no}: {e}")))?;
            let size = read_long(&mut r).map_err(|e| err(format!("block {block_no}: {e}")))?;
            let (Ok(count), Ok(size)) = (usize::try_from(count), usize::try_from(size)) else {
                return Err(err(format!("block {block_no}: a negative count or size")));
            };
            if size > self.max_block {
                return Err(err(format!("block {block_no}: {size} bytes, over max_block_size ({})", self.max_block)));
            }
            // A record takes at least a byte unless the schema is empty (`null`): a block
            // claiming more records than that cannot make that many events.
            if count > self.max_block {
                return Err(err(format!(
                    "block {block_no}: {count} records, over max_block_size ({})",
                    self.max_block
                )));
            }
            let data =
                take(&mut r, size).map_err(|_| err(format!("block {block_no}: truncated ({size} bytes announced)")))?;
            let marker =
                take(&mut r, 16).map_err(|_| err(format!("block {block_no}: truncated before its sync marker")))?;
            if marker != sync {
                return Err(err(format!("block {block_no}: the sync marker does not match the header's")));
            }
            let plain = decompress(codec, data, self.max_block).map_err(|e| err(format!("block {block_no}: {e}")))?;
            let mut d = plain.as_slice();
            for k in 0..count {
                let v = apache_avro::from_avro_datum(&schema, &mut d, None)
                    .map_err(|e| err(format!("block {block_no}, record {k}: {e}")))?;
                out.push(Event::new(json_of(v)?));
            }
            if !d.is_empty() {
                return Err(err(format!("block {block_no}: {} bytes left after its {count} records", d.len())));
            }
            block_no += 1;
        }
        Ok(out)
    }

    pub fn encode(&self, events: &[Event]) -> Result<Vec<u8>, Error> {
        let values = |schema: &Schema| -> Result<Vec<Vec<u8>>, Error> {
            events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let json: Value = serde_json::from_slice(e.body())
                        .map_err(|x| err(format!("event {i}: the body is not JSON: {x}")))?;
                    let v = Avro::from(json)
                        .resolve(schema)
                        .map_err(|x| err(format!("event {i}: does not fit the schema: {x}")))?;
                    apache_avro::to_avro_datum(schema, v).map_err(|x| err(format!("event {i}: {x}")))
                })
                .collect()
        };
        match self.format {
            Format::Container => {
                let w = self.writer.as_ref().ok_or_else(|| err("encoding needs `schema`"))?;
                let datums = values(&w.schema)?;
                let mut out = b"Obj\x01".to_vec();
                let schema_text = &w.text;
                let mut meta = Vec::new();
                write_long(&mut meta, 2);
                for (k, v) in [("avro.schema", schema_text.as_bytes()), ("avro.codec", self.codec.name().as_bytes())] {
                    write_bytes(&mut meta, k.as_bytes());
                    write_bytes(&mut meta, v);
                }
                write_long(&mut meta, 0);
                out.extend_from_slice(&meta);
                // The sync marker: any 16 bytes, unlikely in the data; derived from the batch.
                let sync = sync_marker(&datums);
                out.extend_from_slice(&sync);
                if !datums.is_empty() {
                    let plain: Vec<u8> = datums.concat();
                    let data = compress(self.codec, &plain);
                    write_long(&mut out, datums.len() as i64);
                    write_long(&mut out, data.len() as i64);
                    out.extend_from_slice(&data);
                    out.extend_from_slice(&sync);
                }
                Ok(out)
            }
            Format::SingleObject => {
                let one = only_one(events, "single_object")?;
                let w = self.writer.as_ref().ok_or_else(|| err("encoding needs `schema`"))?;
                let mut out = vec![0xC3, 0x01];
                out.extend_from_slice(&w.fingerprint);
                out.extend_from_slice(&values(&w.schema)?.remove(one));
                Ok(out)
            }
            Format::Confluent => {
                let one = only_one(events, "confluent")?;
                let id = self.schema_id.ok_or_else(|| err("confluent encoding needs `schema_id`"))?;
                let known = &self.by_id[&id];
                let mut out = vec![0];
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&values(&known.schema)?.remove(one));
                Ok(out)
            }
        }
    }
}

fn only_one(events: &[Event], format: &str) -> Result<usize, Error> {
    if events.len() != 1 {
        return Err(err(format!("{format} holds one record per payload, and this batch has {}", events.len())));
    }
    Ok(0)
}

fn one_datum(schema: &Schema, datum: &[u8]) -> Result<Event, Error> {
    let mut d = datum;
    let v = apache_avro::from_avro_datum(schema, &mut d, None).map_err(|e| err(format!("the record: {e}")))?;
    if !d.is_empty() {
        return Err(err(format!("{} bytes left after the record", d.len())));
    }
    Ok(Event::new(json_of(v)?))
}

fn json_of(v: Avro) -> Result<Vec<u8>, Error> {
    let json = Value::try_from(v).map_err(|e| err(format!("the record has no JSON form: {e}")))?;
    Ok(serde_json::to_vec(&json)?)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], Error> {
    if r.len() < n {
        return Err(err("truncated"));
    }
    let (a, b) = r.split_at(n);
    *r = b;
    Ok(a)
}

/// An Avro `long`: zig-zag varint.
fn read_long(r: &mut &[u8]) -> Result<i64, String> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let (&b, rest) = r.split_first().ok_or("truncated number")?;
        *r = rest;
        if shift == 63 && b > 1 {
            return Err("a number longer than 64 bits".into());
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok((v >> 1) as i64 ^ -((v & 1) as i64));
        }
    }
    Err("a number longer than 64 bits".into())
}

fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// The header's metadata map (`map<bytes>`, in blocks).
fn read_metadata(r: &mut &[u8], max: usize) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let mut meta = BTreeMap::new();
    loop {
        let mut count = read_long(r).map_err(|e| err(format!("header: {e}")))?;
        if count == 0 {
            return Ok(meta);
        }
        if count < 0 {
            count = count.checked_neg().ok_or_else(|| err("header: a bad entry count"))?;
            read_long(r).map_err(|e| err(format!("header: {e}")))?;
        }
        for _ in 0..count {
            let mut field = || -> Result<Vec<u8>, Error> {
                let n = read_long(r).map_err(|e| err(format!("header: {e}")))?;
                let n = usize::try_from(n).map_err(|_| err("header: a negative length"))?;
                if n > max {
                    return Err(err("header: an entry over max_block_size"));
                }
                Ok(take(r, n).map_err(|_| err("header: truncated"))?.to_vec())
            };
            let key = String::from_utf8(field()?).map_err(|_| err("header: a key is not UTF-8"))?;
            let value = field()?;
            meta.insert(key, value);
        }
    }
}

fn decompress(codec: BlockCodec, data: &[u8], max: usize) -> Result<Vec<u8>, String> {
    match codec {
        BlockCodec::Null => Ok(data.to_vec()),
        BlockCodec::Deflate => {
            miniz_oxide::inflate::decompress_to_vec_with_limit(data, max).map_err(|e| format!("deflate: {e:?}"))
        }
        BlockCodec::Snappy => {
            if data.len() < 4 {
                return Err("snappy: no checksum".into());
            }
            let (body, crc) = data.split_at(data.len() - 4);
            let len = snap::raw::decompress_len(body).map_err(|e| format!("snappy: {e}"))?;
            if len > max {
                return Err(format!("snappy: {len} bytes once decompressed, over max_block_size"));
            }
            let plain = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| format!("snappy: {e}"))?;
            if crc32fast::hash(&plain).to_be_bytes() != crc {
                return Err("snappy: the checksum does not match".into());
            }
            Ok(plain)
        }
        BlockCodec::Zstandard => {
            let mut d = ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| format!("zstandard: {e}"))?;
            let mut out = Vec::new();
            (&mut d).take(max as u64 + 1).read_to_end(&mut out).map_err(|e| format!("zstandard: {e}"))?;
            if out.len() > max {
                return Err("zstandard: over max_block_size once decompressed".into());
            }
            Ok(out)
        }
    }
}

fn compress(codec: BlockCodec, data: &[u8]) -> Vec<u8> {
    match codec {
        BlockCodec::Null => data.to_vec(),
        BlockCodec::Deflate => miniz_oxide::deflate::compress_to_vec(data, 6),
        BlockCodec::Snappy => {
            let mut out = snap::raw::Encoder::new().compress_vec(data).unwrap_or_default();
            out.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
            out
        }
        BlockCodec::Zstandard => ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest),
    }
}

/// 16 bytes from the batch's contents (FNV-1a over two seeds): different between batches,
/// the same for the same batch, and no clock or randomness needed in the sandbox.
fn sync_marker(datums: &[Vec<u8>]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (half, seed) in [(0usize, 0xcbf2_9ce4_8422_2325u64), (8, 0x8422_2325_cbf2_9ce4)] {
        let mut h = seed;
        for d in datums {
            for &b in d {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        out[half..half + 8].copy_from_slice(&h.to_le_bytes());
    }
    out
}

static CODEC: OnceLock<AvroCodec> = OnceLock::new();

fn codec() -> Result<&'static AvroCodec, Error> {
    CODEC.get().ok_or_else(|| Error::new("avro: not initialised"))
}

/// The plugin: a thin shell over the [`AvroCodec`] built by `init`.
pub struct AvroPlugin;

#[sluice_guest::serde]
impl sluice_guest::Codec for AvroPlugin {
    fn init(config: Value) -> Result<(), Error> {
        let cfg: Config =
            serde_json::from_value(config).map_err(|e| Error::new(format!("avro: invalid config: {e}")))?;
        CODEC.set(AvroCodec::new(cfg)?).map_err(|_| Error::new("avro: init called twice"))
    }

    fn decode(payload: &[u8], _content_type: &str) -> Result<Vec<Event>, Error> {
        codec()?.decode(payload)
    }

    fn encode(events: &[Event]) -> Result<Vec<u8>, Error> {
        codec()?.encode(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::parts;

    const SCHEMA: &str = include_str!("../testdata/order.avsc");

    fn codec(extra: &str) -> AvroCodec {
        let cfg = format!(r#"{{"schema": {SCHEMA} {extra}}}"#);
        AvroCodec::new(serde_json::from_str(&cfg).unwrap()).unwrap()
    }

    fn body(e: &Event) -> Value {
        serde_json::from_str(&parts(e).1).unwrap()
    }

    #[test]
    fn reads_container_files_written_by_fastavro_with_every_codec() {
        let files: [(&str, &[u8]); 4] = [
            ("null", include_bytes!("../testdata/orders-null.avro")),
            ("deflate", include_bytes!("../testdata/orders-deflate.avro")),
            ("snappy", include_bytes!("../testdata/orders-snappy.avro")),
            ("zstandard", include_bytes!("../testdata/orders-zstandard.avro")),
        ];
        for (codec_name, file) in files {
            let events = codec("").decode(file).unwrap_or_else(|e| panic!("{codec_name}: {e}"));
            assert_eq!(events.len(), 50, "{codec_name}");
            let v = body(&events[3]);
            assert_eq!(v["id"], 10_000_000_003i64, "{codec_name}");
            assert_eq!(v["customer"], "c3");
            assert_eq!(v["status"], "PAID");
            assert_eq!(v["coupon"], "X3");
            assert_eq!(v["tags"][0], "t3");
            assert_eq!(body(&events[1])["coupon"], Value::Null);
        }
    }

    #[test]
    fn container_encode_round_trips_with_every_codec() {
        let events = codec("").decode(include_bytes!("../testdata/orders-null.avro")).unwrap();
        for c in ["null", "deflate", "snappy", "zstandard"] {
            let enc = codec(&format!(r#", "codec": "{c}""#));
            let file = enc.encode(&events).unwrap();
            let again = enc.decode(&file).unwrap();
            assert_eq!(again.len(), 50, "{c}");
            assert_eq!(body(&again[7]), body(&events[7]), "{c}");
        }
    }

    #[test]
    fn container_files_carry_the_schema_as_given() {
        let schema = r#"{"type": "record", "name": "T", "fields": [{"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}"#;
        let c = AvroCodec::new(serde_json::from_str(&format!(r#"{{"schema": {schema}}}"#)).unwrap()).unwrap();
        let file = c.encode(&[Event::new(r#"{"at": 1}"#)]).unwrap();
        let text = String::from_utf8_lossy(&file);
        assert!(text.contains("timestamp-millis"), "{text}");
    }

    #[test]
    fn confluent_and_single_object_records() {
        let c = AvroCodec::new(
            serde_json::from_str(&format!(
                r#"{{"format": "confluent", "schemas": {{"7": {SCHEMA}}}, "schema_id": 7}}"#
            ))
            .unwrap(),
        )
        .unwrap();
        let framed = include_bytes!("../testdata/order-confluent-7.bin");
        let events = c.decode(framed).unwrap();
        assert_eq!(body(&events[0])["customer"], "c1");
        assert!(parts(&events[0]).0.contains(&("avro.schema_id".to_owned(), "7".to_owned())));
        assert_eq!(c.encode(&events).unwrap(), framed);
        let mut unknown = framed.to_vec();
        unknown[4] = 8;
        assert!(c.decode(&unknown).unwrap_err().to_string().contains("schema id 8 is not configured"));

        let s = codec(r#", "format": "single_object""#);
        let single = include_bytes!("../testdata/order-single.bin");
        let events = s.decode(single).unwrap();
        assert_eq!(body(&events[0])["customer"], "c1");
        assert_eq!(s.encode(&events).unwrap(), single, "our fingerprint is fastavro's");
    }

    #[test]
    fn hostile_input_is_refused_with_a_reason() {
        let c = codec("");
        let file = include_bytes!("../testdata/orders-deflate.avro");
        let e = c.decode(&file[..file.len() - 40]).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let mut bad_sync = file.to_vec();
        let n = bad_sync.len();
        bad_sync[n - 1] ^= 0xff;
        let e = c.decode(&bad_sync).unwrap_err().to_string();
        assert!(e.contains("sync marker"), "{e}");
        assert!(c.decode(b"PAR1....").unwrap_err().to_string().contains("not an Avro object container"));
        // Blocks over max_block_size are refused before they are read.
        let small = codec(r#", "max_block_size": 600"#);
        let e = small.decode(include_bytes!("../testdata/orders-null.avro")).unwrap_err().to_string();
        assert!(e.contains("bytes, over max_block_size (600)"), "{e}");
        let e = c.encode(&[Event::new(r#"{"id": "x"}"#)]).unwrap_err().to_string();
        assert!(e.contains("event 0: does not fit the schema"), "{e}");
    }

    /// Order `i` as JSON, about 256 bytes: the record `benches/codecs.rs` runs in the sandbox.
    fn order_json(i: u64) -> String {
        format!(
            r#"{{"id":{},"customer":"customer-{i:08}-of-the-winter-sale-campaign-2026","amount":{}.25,"status":"PAID","coupon":"WINTER-{:06}-EU-WEST","tags":["sku-{:06}","sku-{:06}","web","eu-west-{}","campaign-winter-2026","priority"]}}"#,
            10_000_000_000 + i,
            i % 500,
            i % 100_000,
            i % 100_000,
            (i * 7) % 100_000,
            i % 3
        )
    }

    /// The native figure beside the sandbox's (`cargo test --release -p avro -- --ignored
    /// --nocapture native_speed`).
    #[test]
    #[ignore]
    fn native_speed() {
        let c = codec(r#", "codec": "deflate""#);
        let n = 500_000u64;
        let batches: Vec<Vec<Event>> = (0..n)
            .collect::<Vec<_>>()
            .chunks(1024)
            .map(|b| b.iter().map(|&i| Event::new(order_json(i))).collect())
            .collect();
        let t0 = std::time::Instant::now();
        let files: Vec<Vec<u8>> = batches.iter().map(|b| c.encode(b).unwrap()).collect();
        let enc = n as f64 / t0.elapsed().as_secs_f64();
        let t0 = std::time::Instant::now();
        let got: usize = files.iter().map(|f| c.decode(f).unwrap().len()).sum();
        let dec = n as f64 / t0.elapsed().as_secs_f64();
        assert_eq!(got as u64, n);
        println!("avro native (deflate containers): encode {enc:.0} ev/s, decode {dec:.0} ev/s");
    }
}
