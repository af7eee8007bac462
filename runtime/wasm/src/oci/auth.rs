//! Registry credentials, found where container tooling keeps them.
//!
//! In order: `SLUICE_REGISTRY_TOKEN` (a bearer token, sent as is), then
//! `SLUICE_REGISTRY_USERNAME` + `SLUICE_REGISTRY_PASSWORD`, then the Docker config file
//! (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`: `auths.<registry>.auth`,
//! base64 `user:password`, or its `username`/`password`, or a `registrytoken`), else
//! anonymous. Basic credentials also serve registries that answer with a bearer challenge:
//! oci-client exchanges them for a token at the registry's realm. Credential helpers
//! (`credsStore`, `credHelpers`) are not run; use the environment instead.

use std::path::PathBuf;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

/// The credentials to use for `registry` (`host` or `host:port`).
pub fn for_registry(registry: &str) -> RegistryAuth {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(token) = env("SLUICE_REGISTRY_TOKEN") {
        return RegistryAuth::Bearer(token);
    }
    if let (Some(u), Some(p)) = (
        env("SLUICE_REGISTRY_USERNAME"),
        env("SLUICE_REGISTRY_PASSWORD"),
    ) {
        return RegistryAuth::Basic(u, p);
    }
    let Some(path) = docker_config_path() else {
        return RegistryAuth::Anonymous;
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => from_docker_config(&text, registry).unwrap_or(RegistryAuth::Anonymous),
        Err(_) => RegistryAuth::Anonymous,
    }
}

fn docker_config_path() -> Option<PathBuf> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
    Some(dir.join("config.json"))
}

/// The entry of a Docker `config.json` for `registry`. Keys may be bare hosts or URLs
/// (`https://host/v1/`); Docker Hub is stored as `https://index.docker.io/v1/`.
pub fn from_docker_config(text: &str, registry: &str) -> Option<RegistryAuth> {
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let auths = json.get("auths")?.as_object()?;
    let wanted = if registry == "docker.io" {
        "index.docker.io"
    } else {
        registry
    };
    let entry = auths.iter().find_map(|(key, v)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        (host == wanted).then_some(v)
    })?;
    let field = |k: &str| {
        entry
            .get(k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    if let Some(token) = field("registrytoken") {
        return Some(RegistryAuth::Bearer(token.to_owned()));
    }
    if let Some(encoded) = field("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (u, p) = text.split_once(':')?;
        return Some(RegistryAuth::Basic(u.to_owned(), p.to_owned()));
    }
    match (field("username"), field("password")) {
        (Some(u), Some(p)) => Some(RegistryAuth::Basic(u.to_owned(), p.to_owned())),
        _ => None,
    }
}

/// How credentials are described in messages (never the secret itself).
pub fn describe(auth: &RegistryAuth) -> &'static str {
    match auth {
        RegistryAuth::Anonymous => "anonymous",
        RegistryAuth::Basic(..) => "basic credentials",
        RegistryAuth::Bearer(_) => "a bearer token",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_entries_by_host_or_url() {
        let text = r#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
            "ghcr.io":{"username":"u","password":"p"},
            "r.example:5000":{"registrytoken":"tok"},
            "other.io":{}
        }}"#;
        let basic = |r: &str| match from_docker_config(text, r) {
            Some(RegistryAuth::Basic(u, p)) => Some((u, p)),
            _ => None,
        };
        let pair = |u: &str, p: &str| Some((u.to_owned(), p.to_owned()));
        assert_eq!(basic("docker.io"), pair("user", "pass"));
        assert_eq!(basic("ghcr.io"), pair("u", "p"));
        assert!(matches!(
            from_docker_config(text, "r.example:5000"),
            Some(RegistryAuth::Bearer(t)) if t == "tok"
        ));
        let got = |r: &str| from_docker_config(text, r).map(|a| format!("{a:?}"));
        assert_eq!(got("other.io"), None);
        assert_eq!(got("nowhere.io"), None);
    }
}
