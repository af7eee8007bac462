//! Firebase Cloud Messaging (HTTP v1): the `fcm` sink sends each event as one push message,
//! authenticating as a service account (a JWT signed with its key, exchanged for an access
//! token that is refreshed before it expires).

pub mod auth;
pub mod config;
pub mod sink;
