//! Request bodies: the size limit while reading, draining refused bodies, and decompression
//! with a cap on the decompressed size.
//!
//! The declared `Content-Length` is checked before reading (by the handler); this module
//! enforces the limit again on the bytes actually received, so a chunked or lying client is
//! stopped as soon as it crosses it. Decompression works on the complete (size-limited) body,
//! so signatures can be checked over the raw bytes first, and stops one byte past the cap: a
//! gzip or zstd bomb costs at most the cap in memory, never its expanded size.

use std::{
    io::{self, Read},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Body;

/// Largest zstd window accepted (2^23 = 8 MiB, what compression levels up to 19 use). A frame
/// asking for more is refused instead of making the decoder allocate it.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// More bytes than allowed (on the wire, or after decompression).
    TooLarge,
    /// The connection failed mid-body.
    Read(String),
    /// The compressed data is corrupt.
    Corrupt(String),
}

/// Reads the whole body, failing as soon as it exceeds `limit` bytes. `expected` (the
/// declared length, already checked against `limit`) sizes the buffer. On failure the body
/// is handed back so the caller can [`discard`] the rest.
pub async fn read_limited<B>(
    mut body: B,
    limit: usize,
    expected: Option<u64>,
) -> Result<Bytes, (BodyError, B)>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    // A body that arrives as one frame (most small requests) is kept as it came, uncopied;
    // only a second frame starts a buffer.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return Err((BodyError::Read(e.to_string()), body)),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let held = first.as_ref().map_or(0, Bytes::len) + buf.len();
        if held + data.len() > limit {
            return Err((BodyError::TooLarge, body));
        }
        if first.is_none() && buf.is_empty() {
            first = Some(data);
            continue;
        }
        if let Some(f) = first.take() {
            let capacity = expected.map_or(8 * 1024, |n| usize::try_from(n).unwrap_or(limit));
            buf.reserve(capacity.min(limit).max(f.len() + data.len()));
            buf.extend_from_slice(&f);
        }
        buf.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// Reads and throws away what is left of a refused request's body (up to `max` bytes or for
/// `time`, whichever ends first), so the client reads our answer instead of a connection
/// reset; past either bound the connection is simply closed.
pub fn discard<B>(body: B, max: usize, time: Duration)
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0usize;
        let _ = tokio::time::timeout(time, async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    seen += d.len();
                    if seen > max {
                        break;
                    }
                }
            }
        })
        .await;
    });
}

/// A `Content-Encoding` the source can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

/// The request's content encoding; `Err` carries an unsupported one (answered 415).
pub fn encoding(headers: &HeaderMap) -> Result<Encoding, String> {
    let Some(v) = headers.get(http::header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let v = v.to_str().unwrap_or("").trim();
    match v.to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "zstd" => Ok(Encoding::Zstd),
        _ => Err(v.to_owned()),
    }
}

/// Decompresses `data`, refusing output larger than `cap` bytes (memory stays below `cap`
/// plus the decoder's window).
pub fn decompress(encoding: Encoding, data: &[u8], cap: usize) -> Result<Vec<u8>, BodyError> {
    let corrupt = |e: io::Error| BodyError::Corrupt(e.to_string());
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Identity => {
            if data.len() > cap {
                return Err(BodyError::TooLarge);
            }
            return Ok(data.to_vec());
        }
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
        Encoding::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(data).map_err(corrupt)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(corrupt)?;
            Box::new(d)
        }
    };
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(cap.saturating_add(1)));
    reader.take(limit).read_to_end(&mut out).map_err(corrupt)?;
    if out.len() > cap {
        return Err(BodyError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use http_body_util::Full;
    use hyper::body::Frame;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A body arriving in chunks, as a chunked request does.
    #[derive(Debug)]
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn reads_within_the_limit_and_stops_past_it() {
        let ok = read_limited(Full::new(Bytes::from_static(b"hello")), 5, Some(5))
            .await
            .unwrap();
        assert_eq!(&ok[..], b"hello");

        fn chunks(parts: &[&'static [u8]]) -> Chunks {
            Chunks(parts.iter().map(|&p| Bytes::from_static(p)).collect())
        }
        let whole = read_limited(chunks(&[b"abc", b"de"]), 5, None)
            .await
            .unwrap();
        assert_eq!(&whole[..], b"abcde");
        // The second chunk crosses the limit: refused without reading further.
        let (err, rest) = read_limited(chunks(&[b"abc", b"def", b"ghi"]), 5, None)
            .await
            .err()
            .unwrap();
        assert_eq!(err, BodyError::TooLarge);
        assert_eq!(
            rest.0.len(),
            1,
            "stopped at the chunk that crossed the limit"
        );
    }

    #[test]
    fn gzip_and_zstd_decode_within_the_cap() {
        let text = b"hello hello hello hello".repeat(10);
        let gz = gzip(&text);
        assert_eq!(decompress(Encoding::Gzip, &gz, text.len()).unwrap(), text);
        let zs = zstd::stream::encode_all(&text[..], 3).unwrap();
        assert_eq!(decompress(Encoding::Zstd, &zs, text.len()).unwrap(), text);
        assert_eq!(
            decompress(Encoding::Gzip, &gz, text.len() - 1),
            Err(BodyError::TooLarge)
        );
        assert!(matches!(
            decompress(Encoding::Gzip, b"not gzip", 100),
            Err(BodyError::Corrupt(_))
        ));
        assert_eq!(
            decompress(Encoding::Identity, b"abc", 2),
            Err(BodyError::TooLarge)
        );
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        // 64 MiB of zeros in concatenated gzip members: a few hundred KiB on the wire.
        let member = gzip(&vec![0u8; 1 << 20]);
        let bomb = member.repeat(64);
        assert!(bomb.len() < 200 * 1024, "{}", bomb.len());
        assert_eq!(
            decompress(Encoding::Gzip, &bomb, 4 << 20),
            Err(BodyError::TooLarge)
        );
        let zbomb = zstd::stream::encode_all(&vec![0u8; 16 << 20][..], 3).unwrap();
        assert_eq!(
            decompress(Encoding::Zstd, &zbomb, 4 << 20),
            Err(BodyError::TooLarge)
        );
    }

    #[test]
    fn encodings() {
        let mut h = HeaderMap::new();
        assert_eq!(encoding(&h), Ok(Encoding::Identity));
        h.insert(http::header::CONTENT_ENCODING, "GZIP".parse().unwrap());
        assert_eq!(encoding(&h), Ok(Encoding::Gzip));
        h.insert(http::header::CONTENT_ENCODING, "br".parse().unwrap());
        assert_eq!(encoding(&h), Err("br".into()));
    }
}
