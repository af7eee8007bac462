//! One place that turns [`AwsConnection`] into an SDK configuration and classifies SDK errors,
//! shared by the S3, SQS, DynamoDB and Kinesis connectors.
//!
//! The SDK's HTTP client is built here with rustls on the `ring` provider (the crypto the rest
//! of the agent already uses), so the AWS SDK adds no second crypto stack. Each service is a
//! folder of its own, behind its feature (`aws-s3`, `aws-sqs`, `aws-dynamodb`, `aws-kinesis`).

pub mod connection;
#[cfg(feature = "aws-dynamodb")]
pub mod dynamodb;
#[cfg(feature = "aws-kinesis")]
pub mod kinesis;
#[cfg(feature = "aws-s3")]
pub mod s3;
#[cfg(feature = "aws-sqs")]
pub mod sqs;

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};
use aws_smithy_types::{error::metadata::ProvideErrorMetadata, timeout::TimeoutConfig};

use sluice_core::registry::ReadCx;

pub use self::connection::{AWS_KEYS, AwsConnection};

/// Region used when neither the config nor the standard chain names one.
const FALLBACK_REGION: &str = "us-east-1";

/// Builds the SDK configuration: region, endpoint, credentials, and an operation timeout.
/// Resolves the region and profile (reads local files); it makes no request to AWS.
pub async fn sdk_config(c: &AwsConnection, timeout: Duration) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .operation_attempt_timeout(timeout)
                .build(),
        );
    if let Some(p) = &c.profile {
        loader = loader.profile_name(p);
    }
    // Without a region in the config the loader's own chain looks (environment, profile,
    // instance metadata, through the client above); `RegionProviderChain::or_default_provider`
    // would build that chain without our HTTP client.
    if let Some(r) = &c.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(e) = &c.endpoint {
        loader = loader.endpoint_url(e);
    }
    if let (Some(id), Some(secret)) = (&c.access_key_id, &c.secret_access_key) {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            id.expose(),
            secret.expose(),
            None,
            None,
            "sluice-config",
        ));
    }
    let sdk = loader.load().await;
    if sdk.region().is_some() {
        sdk
    } else {
        sdk.into_builder()
            .region(Region::from_static(FALLBACK_REGION))
            .build()
    }
}

/// What an SDK error means for the events that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Network trouble, timeouts, throttling, server errors, missing credentials: try later.
    Retriable,
    /// The service refused the request's content (validation, too large): it will refuse it
    /// every time, so its events go to the DLQ.
    Permanent,
}

/// Error codes that say the request's content is wrong, so sending the same events again
/// can never succeed. Only these dead-letter events: every other error (network, throttling,
/// 5xx, credentials, a wrong region, clock skew, a missing bucket, queue, table or stream,
/// KMS trouble) is retried, since its fix is outside the events — the runner's attempt budget
/// still bounds the retries.
const PERMANENT_CODES: &[&str] = &[
    "ValidationException",
    "ValidationError",
    "SerializationException",
    "InvalidArgument",
    "InvalidArgumentException",
    "InvalidParameterValue",
    "InvalidParameterException",
    "InvalidParameterCombination",
    "InvalidMessageContents",
    "EntityTooLarge",
    "KeyTooLongError",
    "MetadataTooLarge",
    "ItemCollectionSizeLimitExceededException",
    "ConditionalCheckFailedException",
];

/// Classifies an SDK error (see [`PERMANENT_CODES`]).
pub fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> ErrorClass {
    match e {
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let code = s.err().code().unwrap_or_default();
            if (400..500).contains(&status) && status != 429 && PERMANENT_CODES.contains(&code) {
                ErrorClass::Permanent
            } else {
                ErrorClass::Retriable
            }
        }
        // Construction failures are bugs or bad settings, never the events' fault.
        _ => ErrorClass::Retriable,
    }
}

/// A one-line description of an SDK error: code and message when the service sent them, the
/// error chain otherwise (the SDK's `Display` alone says only "service error").
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: &SdkError<E, HttpResponse>,
) -> String {
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_owned(),
                _ => format!("HTTP {}: {err}", s.raw().status().as_u16()),
            }
        }
        other => {
            let mut text = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                text.push_str(": ");
                text.push_str(&s.to_string());
                src = s.source();
            }
            text
        }
    }
}

/// The region name the SDK will use, for logs.
pub fn region_name(c: &SdkConfig) -> &str {
    c.region().map(|r| r.as_ref()).unwrap_or(FALLBACK_REGION)
}

/// Reads an AWS connector: the shared connection keys ([`AWS_KEYS`]) into an
/// [`AwsConnection`], the rest into the connector's own settings `T`, whose connection
/// `aws` points at.
pub(crate) fn read_with_connection<T: serde::de::DeserializeOwned>(
    cx: &mut ReadCx<'_>,
    aws: impl FnOnce(&mut T) -> &mut AwsConnection,
) -> Option<T> {
    let conn_node = cx.body.filter_keys(|k| AWS_KEYS.contains(&k));
    let own_node = cx.body.filter_keys(|k| !AWS_KEYS.contains(&k));
    let conn: Option<AwsConnection> = cx.read_node(&conn_node);
    let own: Option<T> = cx.read_node(&own_node);
    let conn = conn?;
    if let Err(e) = conn.check() {
        cx.error(cx.body.pos, e);
        return None;
    }
    let mut own = own?;
    *aws(&mut own) = conn;
    Some(own)
}
