//! The AWS-compatible test server (moto, started by `scripts/test`) as the tests and benches
//! reach it: its endpoint, SDK clients built the way the agent builds its own
//! (`sluice::connectors::aws::sdk_config`), and the S3 bucket set-up and listing both need
//! (with the `aws-s3` feature). Unique resource names are [`super::unique`]. Benches reach
//! this module through `tests/common/mod.rs`, included by path.

// Each test or bench uses only some of it.
#![allow(dead_code)]

#[cfg(feature = "aws-s3")]
use std::collections::BTreeMap;
use std::time::Duration;

use sluice::connectors::aws::connection::AwsConnection;
use sluice_core::config::Secret;

#[cfg(feature = "aws-s3")]
use super::unique;

/// `SLUICE_TEST_AWS`, default moto's port on loopback.
pub fn endpoint() -> String {
    std::env::var("SLUICE_TEST_AWS").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

/// The connection the tests use: region us-east-1, the test key pair, path-style S3.
pub fn connection() -> AwsConnection {
    AwsConnection {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint()),
        access_key_id: Some(Secret::new("test")),
        secret_access_key: Some(Secret::new("test")),
        force_path_style: true,
        ..AwsConnection::default()
    }
}

pub async fn sdk(timeout: Duration) -> aws_config::SdkConfig {
    sluice::connectors::aws::sdk_config(&connection(), timeout).await
}

/// An S3 client with path-style addressing.
#[cfg(feature = "aws-s3")]
pub async fn s3(timeout: Duration) -> aws_sdk_s3::Client {
    let sdk = sdk(timeout).await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
}

/// A fresh bucket named `prefix` plus a random suffix; panics naming the endpoint when the
/// server is not there (the first request a test or bench makes, so it fails loudly there).
#[cfg(feature = "aws-s3")]
pub async fn create_bucket(c: &aws_sdk_s3::Client, prefix: &str) -> String {
    let name = unique(prefix);
    if let Err(e) = c.create_bucket().bucket(&name).send().await {
        panic!(
            "creating bucket {name} at {} (is moto_server running? scripts/test starts it): {}",
            endpoint(),
            sluice::connectors::aws::describe(&e)
        );
    }
    name
}

/// Every object under `prefix`, all pages of the listing: key → size, sorted by key.
#[cfg(feature = "aws-s3")]
pub async fn list_objects(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = c
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "listing {bucket}: {}",
                    sluice::connectors::aws::describe(&e)
                )
            });
        for o in page.contents() {
            out.insert(
                o.key().unwrap_or_default().to_owned(),
                o.size().unwrap_or(0),
            );
        }
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
            _ => return out,
        }
    }
}
