//! Bearer tokens: HMAC-SHA256 JWTs (`sub`, `role`, `iat`, `exp`) signed with
//! the server's key, which lives in a file so that tokens survive a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::engine::Role;

use super::Refusal;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    pub iat: u64,
    pub exp: u64,
}

/// A token just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

pub struct Keys {
    path: PathBuf,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Bytes of a generated key.
const KEY_BYTES: usize = 32;

impl Keys {
    /// Reads the key at `path`; when `create` and it does not exist, makes
    /// one (random, hex, mode 0600).
    pub fn load_or_create(path: &Path, create: bool) -> anyhow::Result<Keys> {
        if create && !path.exists() {
            let mut key = [0u8; KEY_BYTES];
            rand::fill(&mut key);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_0600()
                .open(path)
                .with_context(|| format!("creating token key {}", path.display()))?;
            f.write_all(hex::encode(key).as_bytes())?;
            f.sync_all()?;
        }
        let secret =
            std::fs::read(path).with_context(|| format!("reading token key {}", path.display()))?;
        let secret = secret.trim_ascii();
        if secret.len() < KEY_BYTES {
            bail!(
                "token key {} holds {} bytes; at least {KEY_BYTES} are needed",
                path.display(),
                secret.len()
            );
        }
        Ok(Keys {
            path: path.to_path_buf(),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn issue(&self, user: &str, role: Role, ttl: Duration) -> anyhow::Result<Issued> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let exp = now + ttl.as_secs().max(1);
        let claims = Claims {
            sub: user.to_string(),
            role: role.as_str().to_string(),
            iat: now,
            exp,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok(Issued {
            token,
            expires_at: exp,
        })
    }

    /// The claims of a token this server signed and that has not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| {
                Refusal::Invalid(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        "the token has expired: sign in again".to_string()
                    }
                    _ => "the token is not valid".to_string(),
                })
            })
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_expire_forge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let keys = Keys::load_or_create(&path, true).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let t = keys
            .issue("ann", Role::Writer, Duration::from_secs(60))
            .unwrap();
        let c = keys.verify(&t.token).unwrap();
        assert_eq!((c.sub.as_str(), c.role.as_str()), ("ann", "writer"));
        // The same file gives the same key (tokens survive a restart).
        let again = Keys::load_or_create(&path, true).unwrap();
        assert!(again.verify(&t.token).is_ok());
        // Another key, a changed payload, garbage: refused.
        let other = Keys::load_or_create(&dir.path().join("k2"), true).unwrap();
        assert!(other.verify(&t.token).is_err());
        let mut parts: Vec<&str> = t.token.split('.').collect();
        let forged_payload = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
                r#"{{"sub":"ann","role":"admin","iat":0,"exp":{}}}"#,
                c.exp
            ))
        };
        parts[1] = &forged_payload;
        assert!(keys.verify(&parts.join(".")).is_err());
        assert!(keys.verify("x.y.z").is_err());
        // Expired (no leeway).
        let mut claims = c;
        claims.exp = claims.iat.saturating_sub(1);
        let old =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert!(matches!(keys.verify(&old), Err(Refusal::Invalid(m)) if m.contains("expired")));
    }
}
