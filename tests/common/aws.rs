//! The AWS-compatible test server (moto, started by `scripts/test`) as the tests and benches
//! reach it: its endpoint, unique resource names, and SDK clients built the way the agent
//! builds its own (`sluice::aws::sdk_config`). Benches include this file by path.

// Each test or bench uses only some of it.
#![allow(dead_code)]

use std::time::Duration;

use sluice::config::{Secret, aws::AwsConnection};

/// `SLUICE_TEST_AWS`, default moto's port on loopback.
pub fn endpoint() -> String {
    std::env::var("SLUICE_TEST_AWS").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

/// `prefix` plus a random suffix, so runs never share a bucket, queue, table or stream.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
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
    sluice::aws::sdk_config(&connection(), timeout).await
}

/// An S3 client with path-style addressing.
pub async fn s3(timeout: Duration) -> aws_sdk_s3::Client {
    let sdk = sdk(timeout).await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
}
