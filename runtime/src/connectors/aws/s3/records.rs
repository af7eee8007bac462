//! What an object's bytes become: records for the `s3` source. Compression (gzip, zstd) and
//! format (lines, NDJSON, a JSON array, CSV with a header row, Parquet) are chosen by setting
//! or, with `auto`, by the key's extensions (`part-0.ndjson.gz`, `x.parquet`).
//!
//! Every record is one event body: a line as it is; an NDJSON line through the built-in codec
//! (a plain object is the body, the envelope restores headers); an array element's JSON text;
//! a CSV row or a Parquet row as a JSON object of its columns. A record that cannot be read
//! is reported on its own (for the dead-letter channel) while the others go on; an object that
//! cannot be read at all (a truncated gzip stream, not Parquet) fails as a whole.

use std::io::Read;

use bytes::Bytes;
use serde::Deserialize;

use sluice_core::event::{
    Event,
    codec::{CodecName, decode_line_shared},
};

/// `format:` of the `s3` source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectFormat {
    /// By extension: `.parquet`, `.csv`, `.json` (an array), `.ndjson`/`.jsonl`, else lines.
    #[default]
    Auto,
    Lines,
    Ndjson,
    JsonArray,
    Csv,
    Parquet,
}

/// `compression:` of the `s3` source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectCompression {
    /// By extension: `.gz`, `.zst`.
    #[default]
    Auto,
    None,
    Gzip,
    Zstd,
}

/// One record: an event, or the bytes that could not be read and why.
pub type Record = Result<Event, (Bytes, String)>;

/// Decompresses and decodes a whole object into `out`.
pub fn records(
    key: &str,
    data: Bytes,
    format: ObjectFormat,
    compression: ObjectCompression,
    max_size: usize,
    out: &mut Vec<Record>,
) -> Result<(), String> {
    let mut name = key;
    let compression = match compression {
        ObjectCompression::Auto => {
            if let Some(n) = key.strip_suffix(".gz") {
                name = n;
                ObjectCompression::Gzip
            } else if let Some(n) = key.strip_suffix(".zst") {
                name = n;
                ObjectCompression::Zstd
            } else {
                ObjectCompression::None
            }
        }
        c => c,
    };
    let data = match compression {
        ObjectCompression::Gzip => inflate(
            flate2::read::MultiGzDecoder::new(&data[..]),
            max_size,
            "gzip",
        )?,
        ObjectCompression::Zstd => inflate(
            zstd::stream::read::Decoder::new(&data[..]).map_err(|e| format!("zstd: {e}"))?,
            max_size,
            "zstd",
        )?,
        ObjectCompression::Auto | ObjectCompression::None => data,
    };
    let format = match format {
        ObjectFormat::Auto => {
            let ext = name
                .rsplit_once('.')
                .map_or("", |(_, e)| e)
                .to_ascii_lowercase();
            match ext.as_str() {
                "parquet" => ObjectFormat::Parquet,
                "csv" => ObjectFormat::Csv,
                "ndjson" | "jsonl" => ObjectFormat::Ndjson,
                "json" if data.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'[') => {
                    ObjectFormat::JsonArray
                }
                "json" => ObjectFormat::Ndjson,
                _ => ObjectFormat::Lines,
            }
        }
        f => f,
    };
    match format {
        ObjectFormat::Auto | ObjectFormat::Lines => {
            for line in lines(&data) {
                out.push(Ok(Event::new(line)));
            }
        }
        ObjectFormat::Ndjson => {
            for (n, line) in lines(&data).enumerate() {
                out.push(
                    decode_line_shared(CodecName::Ndjson, line.clone())
                        .map_err(|e| (line, format!("{key}: line {}: {e}", n + 1))),
                );
            }
        }
        ObjectFormat::JsonArray => {
            let items: Vec<&serde_json::value::RawValue> =
                serde_json::from_slice(&data).map_err(|e| format!("not a JSON array: {e}"))?;
            for item in items {
                let text = item.get().as_bytes();
                // Each element's text is a slice of the object, not a copy.
                let start = text.as_ptr() as usize - data.as_ptr() as usize;
                out.push(Ok(Event::new(data.slice(start..start + text.len()))));
            }
        }
        ObjectFormat::Csv => csv_rows(key, &data, out)?,
        ObjectFormat::Parquet => parquet_rows(key, data, out)?,
    }
    Ok(())
}

fn inflate(mut r: impl Read, max: usize, what: &str) -> Result<Bytes, String> {
    let mut buf = Vec::new();
    r.by_ref()
        .take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{what}: {e}"))?;
    if buf.len() > max {
        return Err(format!(
            "{what}: decompressed past max_object_size ({max} bytes)"
        ));
    }
    Ok(Bytes::from(buf))
}

/// Non-empty lines without their `\n` / `\r\n`, as slices of `data`.
fn lines(data: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < data.len() {
            let end = memchr::memchr(b'\n', &data[at..]).map_or(data.len(), |i| at + i);
            let mut line_end = end;
            if line_end > at && data[line_end - 1] == b'\r' {
                line_end -= 1;
            }
            let line = data.slice(at..line_end);
            at = end + 1;
            if !line.is_empty() {
                return Some(line);
            }
        }
        None
    })
}

/// CSV with a header row: each row a JSON object of strings keyed by the header.
fn csv_rows(key: &str, data: &[u8], out: &mut Vec<Record>) -> Result<(), String> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("CSV header row: {e}"))?
        .iter()
        .map(str::to_owned)
        .collect();
    for (n, row) in reader.records().enumerate() {
        let record = match row {
            Ok(r) => r,
            Err(e) => {
                out.push(Err((
                    Bytes::new(),
                    format!("{key}: CSV row {}: {e}", n + 1),
                )));
                continue;
            }
        };
        if record.len() != header.len() {
            out.push(Err((
                Bytes::from(record.iter().collect::<Vec<_>>().join(",")),
                format!(
                    "{key}: CSV row {}: {} fields, the header has {}",
                    n + 1,
                    record.len(),
                    header.len()
                ),
            )));
            continue;
        }
        let object: serde_json::Map<String, serde_json::Value> = header
            .iter()
            .zip(record.iter())
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_owned())))
            .collect();
        out.push(Ok(Event::new(
            serde_json::to_vec(&object).unwrap_or_default(),
        )));
    }
    Ok(())
}

/// Every row of a Parquet file as a JSON object of its columns.
fn parquet_rows(key: &str, data: Bytes, out: &mut Vec<Record>) -> Result<(), String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(data).map_err(|e| format!("not Parquet: {e}"))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| format!("Parquet: {e}"))?;
    for (n, row) in rows.enumerate() {
        match row {
            Ok(row) => out.push(Ok(Event::new(
                serde_json::to_vec(&row.to_json_value()).unwrap_or_default(),
            ))),
            // A row that cannot be decoded means the column chunks are damaged: the rest of
            // the object cannot be trusted either.
            Err(e) => return Err(format!("{key}: Parquet row {}: {e}", n + 1)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(key: &str, data: &[u8], format: ObjectFormat) -> Vec<Result<String, String>> {
        let mut out = Vec::new();
        records(
            key,
            Bytes::copy_from_slice(data),
            format,
            ObjectCompression::Auto,
            1 << 20,
            &mut out,
        )
        .unwrap();
        out.into_iter()
            .map(|r| {
                r.map(|e| String::from_utf8(e.body.to_vec()).unwrap())
                    .map_err(|(_, why)| why)
            })
            .collect()
    }

    #[test]
    fn formats_by_extension() {
        assert_eq!(
            bodies("a.log", b"one\r\n\ntwo", ObjectFormat::Auto),
            [Ok("one".into()), Ok("two".into())]
        );
        let got = bodies("a.ndjson", b"{\"a\":1}\nnope\n", ObjectFormat::Auto);
        assert_eq!(got[0], Ok("{\"a\":1}".into()));
        assert!(
            got[1].as_ref().unwrap_err().contains("a.ndjson: line 2"),
            "{got:?}"
        );
        assert_eq!(
            bodies("a.json", b" [ {\"a\": 1}, 2, \"x\" ]", ObjectFormat::Auto),
            [Ok("{\"a\": 1}".into()), Ok("2".into()), Ok("\"x\"".into())]
        );
        let got = bodies("t.csv", b"id,name\n1,\"a, b\"\n2\n", ObjectFormat::Auto);
        assert_eq!(got[0], Ok(r#"{"id":"1","name":"a, b"}"#.into()));
        assert!(got[1].as_ref().unwrap_err().contains("1 fields"), "{got:?}");
    }

    #[test]
    fn compressed_objects_and_limits() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"{\"n\":1}\n{\"n\":2}\n").unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            bodies("p.ndjson.gz", &gz, ObjectFormat::Auto),
            [Ok("{\"n\":1}".into()), Ok("{\"n\":2}".into())]
        );
        let zst = zstd::encode_all(&b"x\ny\n"[..], 3).unwrap();
        assert_eq!(
            bodies("p.zst", &zst, ObjectFormat::Auto),
            [Ok("x".into()), Ok("y".into())]
        );
        let mut out = Vec::new();
        let e = records(
            "p.gz",
            Bytes::from(gz[..gz.len() / 2].to_vec()),
            ObjectFormat::Lines,
            ObjectCompression::Auto,
            1 << 20,
            &mut out,
        )
        .unwrap_err();
        assert!(e.starts_with("gzip"), "{e}");
        let e = records(
            "p.zst",
            Bytes::from(zstd::encode_all(&[b'a'; 5000][..], 3).unwrap()),
            ObjectFormat::Lines,
            ObjectCompression::Auto,
            1000,
            &mut out,
        )
        .unwrap_err();
        assert!(e.contains("max_object_size"), "{e}");
        let e = records(
            "x.parquet",
            Bytes::from_static(b"not parquet"),
            ObjectFormat::Auto,
            ObjectCompression::Auto,
            1000,
            &mut out,
        )
        .unwrap_err();
        assert!(e.contains("Parquet"), "{e}");
    }
}
