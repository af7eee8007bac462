//! Human-friendly units in config: durations like `30s` / `250ms` and sizes like `64MiB`.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    str::FromStr,
    time::Duration,
};

use serde::{Deserialize, Deserializer, de};

/// A duration written with a unit (`100ms`, `30s`, `5m`, `1h 30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "invalid duration {s:?}: a unit is required, e.g. \"{s}s\" or \"{s}ms\""
            ));
        }
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 250ms, 30s, 5m)"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A byte count written as a plain integer or with a unit (`512KiB`, `64MiB`, `1GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| ByteSize(b.as_u64()))
            .map_err(|e| format!("invalid size {s:?}: {e} (examples: 4096, 512KiB, 64MiB, 1GB)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "30s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(30)
        );
        assert!(
            "30".parse::<HumanDuration>()
                .unwrap_err()
                .contains("unit is required")
        );
        assert!("3 parsecs".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 * 1024 * 1024);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert_eq!("1KB".parse::<ByteSize>().unwrap().0, 1000);
        assert!("lots".parse::<ByteSize>().is_err());
    }
}

/// An address to listen on: `host:port`, or a bare port (on 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let s = s.trim();
        if let Ok(port) = s.parse::<u16>() {
            return Ok(ListenAddr(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
            )));
        }
        if let Some(port) = s.strip_prefix("localhost:") {
            if let Ok(port) = port.parse::<u16>() {
                return Ok(ListenAddr(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    port,
                )));
            }
        }
        s.parse().map(ListenAddr).map_err(|_| {
            de::Error::custom(format!(
                "invalid listen address {s:?}: expected host:port (127.0.0.1:8080, 0.0.0.0:8080, [::1]:8080) or a port"
            ))
        })
    }
}
