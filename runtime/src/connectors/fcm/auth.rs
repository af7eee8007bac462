//! Service-account authentication (OAuth 2.0 JWT bearer grant, RFC 7523): a JWT with the
//! account's email, the FCM scope and the token endpoint as audience, signed RS256 with the
//! account's private key, is exchanged for an access token; the token is kept until shortly
//! before it expires, or until FCM answers 401. Neither the key nor a token is ever logged:
//! their holders print as `<redacted>`.

use std::{
    fmt,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use ring::{
    rand::SystemRandom,
    signature::{RSA_PKCS1_SHA256, RsaKeyPair},
};
use serde::Deserialize;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// The fields of a service account's JSON key that are used.
#[derive(Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    #[serde(default)]
    pub token_uri: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl ServiceAccount {
    pub fn parse(json: &str, from: &str) -> Result<ServiceAccount, String> {
        // The error names the field, never the text (which holds the key).
        serde_json::from_str(json).map_err(|e| {
            format!(
                "{from}: not a service account key (line {}, column {}: {})",
                e.line(),
                e.column(),
                match e.classify() {
                    serde_json::error::Category::Data => "a field is missing or of the wrong type",
                    _ => "not JSON",
                }
            )
        })
    }
}

/// An access token; prints redacted.
#[derive(Clone)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// Makes and keeps access tokens for one service account.
pub struct Tokens {
    email: String,
    key_id: Option<String>,
    key: RsaKeyPair,
    url: String,
    client: reqwest::Client,
    current: Option<(AccessToken, Instant)>,
    rng: SystemRandom,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Tokens {
    /// `url` overrides the key's `token_uri`.
    pub fn new(
        account: ServiceAccount,
        url: Option<String>,
        client: reqwest::Client,
    ) -> Result<Tokens, String> {
        let url = url
            .or(account.token_uri.clone())
            .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into());
        let der = pem_body(&account.private_key)
            .ok_or("the service account's private_key is not a PEM PKCS#8 key")?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| format!("the service account's private_key is not an RSA key: {e}"))?;
        Ok(Tokens {
            email: account.client_email,
            key_id: account.private_key_id,
            key,
            url,
            client,
            current: None,
            rng: SystemRandom::new(),
        })
    }

    /// The current token, or a new one when there is none or it expires soon.
    pub async fn get(&mut self) -> Result<AccessToken, String> {
        if let Some((t, until)) = &self.current {
            if Instant::now() + RENEW_BEFORE < *until {
                return Ok(t.clone());
            }
        }
        let assertion = self.assertion()?;
        let resp = self
            .client
            .post(&self.url)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| format!("token endpoint {}: {e}", self.url))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("token endpoint: {e}"))?;
        if !status.is_success() {
            // An OAuth error answer names the problem (`invalid_grant`); it holds no secret.
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(format!(
                "token endpoint {} answered {status}: {text}",
                self.url
            ));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| format!("token endpoint {}: no access_token in the answer", self.url))?;
        let life = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        let token = AccessToken(answer.access_token);
        self.current = Some((token.clone(), Instant::now() + life));
        tracing::debug!(account = %self.email, expires_in = ?life, "new FCM access token");
        Ok(token)
    }

    /// Forgets the token (FCM refused it: revoked or expired early).
    pub fn invalidate(&mut self) {
        self.current = None;
    }

    /// The signed JWT (RS256) asking for the FCM scope.
    fn assertion(&self) -> Result<String, String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
        if let Some(kid) = &self.key_id {
            header["kid"] = kid.clone().into();
        }
        let claims = serde_json::json!({
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.url,
            "iat": now,
            "exp": now + 3600,
        });
        let signing_input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| "cannot sign the token request with the service account's key")?;
        Ok(format!("{signing_input}.{}", b64.encode(sig)))
    }
}

/// The DER bytes of a PEM `PRIVATE KEY` block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN PRIVATE KEY-----")? + "-----BEGIN PRIVATE KEY-----".len();
    let end = pem[start..].find("-----END PRIVATE KEY-----")? + start;
    let text: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let a = ServiceAccount::parse(
            r#"{"client_email": "a@b.iam", "private_key": "-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n"}"#,
            "key",
        )
        .unwrap();
        assert!(!format!("{a:?}").contains("SECRET"));
        assert!(!format!("{:?}", AccessToken("ya29.secret".into())).contains("secret"));
        let bad = ServiceAccount::parse(r#"{"client_email": 1, "private_key": "SECRET"}"#, "key")
            .unwrap_err();
        assert!(!bad.contains("SECRET"), "{bad}");
        assert!(pem_body("no pem here").is_none());
    }
}
