//! Who is calling: users from `--users` (argon2id password hashes), Basic
//! credentials, bearer tokens (HMAC-SHA256 JWTs), and the per-user limit on
//! failed sign-ins. Both front doors use this to turn an `authorization`
//! header into an engine [`Caller`]; what the caller may then do is the
//! engine's decision (`engine::access`).

mod limiter;
mod tokens;
mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use parking_lot::RwLock;

use crate::engine::{Caller, Principal};

pub use tokens::Issued;
pub use users::{hash_password, Users};

/// Why a caller was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials where they are needed.
    Missing,
    /// Wrong credentials: a bad password, an unknown user, an expired or
    /// forged token, an unreadable header.
    Invalid(String),
    /// Too many failed sign-ins for this user: retry after this many seconds.
    TooMany { user: String, retry_after: u64 },
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::Missing => "authentication required: send Basic credentials (Flight SQL Handshake or an authorization header) or a bearer token".into(),
            Refusal::Invalid(why) => format!("authentication failed: {why}"),
            Refusal::TooMany { user, retry_after } => format!(
                "too many failed sign-ins for user {user}: retry in {retry_after} s"
            ),
        }
    }
}

/// Credentials from an `authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic { user: String, password: String },
    Bearer(String),
}

impl Credentials {
    /// Parses `Basic <base64(user:password)>` (padding optional, as the Go
    /// ADBC driver omits it) or `Bearer <token>`; the scheme is
    /// case-insensitive.
    pub fn parse(header: &str) -> Result<Credentials, Refusal> {
        let bad = |why: &str| Refusal::Invalid(why.to_string());
        let (scheme, rest) = header
            .trim()
            .split_once(' ')
            .ok_or_else(|| bad("the authorization header is neither Basic nor Bearer"))?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Credentials::Bearer(rest.to_string()));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(bad("the authorization header is neither Basic nor Bearer"));
        }
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(rest.trim_end_matches('='))
            .map_err(|_| bad("Basic credentials are not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| bad("Basic credentials are not UTF-8"))?;
        let (user, password) = text
            .split_once(':')
            .ok_or_else(|| bad("Basic credentials are not user:password"))?;
        Ok(Credentials::Basic {
            user: user.to_string(),
            password: password.to_string(),
        })
    }
}

/// Settings of [`Auth`].
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The users file (`None`: no authentication, loopback only).
    pub users: Option<PathBuf>,
    pub token_ttl: Duration,
    /// Where the signing key is (`None`: `<data-dir>/.token-secret`).
    pub token_secret_file: Option<PathBuf>,
    pub data_dir: PathBuf,
}

/// The authenticator of a server with users.
pub struct Auth {
    path: PathBuf,
    users: RwLock<Arc<Users>>,
    keys: tokens::Keys,
    ttl: Duration,
    limiter: limiter::Limiter,
}

impl Auth {
    /// `None` when no users file is configured.
    pub fn open(cfg: &AuthConfig) -> anyhow::Result<Option<Arc<Auth>>> {
        let Some(path) = &cfg.users else {
            return Ok(None);
        };
        let users = Users::load(path)?;
        let key_path = cfg
            .token_secret_file
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join(".token-secret"));
        let keys = tokens::Keys::load_or_create(&key_path, cfg.token_secret_file.is_none())?;
        tracing::info!(users = users.len(), file = %path.display(), "authentication on");
        Ok(Some(Arc::new(Auth {
            path: path.clone(),
            users: RwLock::new(Arc::new(users)),
            keys,
            ttl: cfg.token_ttl,
            limiter: limiter::Limiter::default(),
        })))
    }

    /// The files SQL must never read (the users file, the signing key).
    pub fn secret_paths(&self) -> Vec<PathBuf> {
        vec![self.path.clone(), self.keys.path().to_path_buf()]
    }

    /// Re-reads the users file (SIGHUP); on error the old users stay.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let users = Users::load(&self.path)?;
        let n = users.len();
        *self.users.write() = Arc::new(users);
        Ok(n)
    }

    pub fn users_file(&self) -> &Path {
        &self.path
    }

    /// Checks credentials. A Basic sign-in also gets a fresh token (for the
    /// `authorization: Bearer` answer). Password checks are slow on
    /// purpose (argon2id): they run on the blocking pool.
    pub async fn authenticate(
        self: &Arc<Self>,
        creds: Credentials,
    ) -> Result<(Caller, Option<Issued>), Refusal> {
        match creds {
            Credentials::Bearer(token) => {
                let claims = self.keys.verify(&token)?;
                let users = Arc::clone(&self.users.read());
                let user = users
                    .get(&claims.sub)
                    .ok_or_else(|| Refusal::Invalid("the token's user no longer exists".into()))?;
                Ok((Caller::new(principal(user)), None))
            }
            Credentials::Basic { user, password } => {
                if let Some(retry_after) = self.limiter.locked(&user) {
                    return Err(Refusal::TooMany { user, retry_after });
                }
                let users = Arc::clone(&self.users.read());
                let name = user.clone();
                let found = tokio::task::spawn_blocking(move || {
                    users.verify(&name, &password).map(principal)
                })
                .await
                .map_err(|_| Refusal::Invalid("password check failed".into()))?;
                match found {
                    Some(p) => {
                        self.limiter.succeeded(&user);
                        let issued = self.keys.issue(&p.user, p.role, self.ttl);
                        match issued {
                            Ok(t) => Ok((Caller::new(p), Some(t))),
                            Err(e) => Err(Refusal::Invalid(format!("cannot issue a token: {e}"))),
                        }
                    }
                    None => {
                        self.limiter.failed(&user);
                        Err(Refusal::Invalid("wrong user name or password".into()))
                    }
                }
            }
        }
    }

    /// A fresh token for an authenticated principal.
    pub fn issue(&self, p: &Principal) -> anyhow::Result<Issued> {
        self.keys.issue(&p.user, p.role, self.ttl)
    }

    /// Parses and checks an `authorization` header (`None`: absent).
    pub async fn check_header(
        self: &Arc<Self>,
        header: Option<&[u8]>,
    ) -> Result<(Caller, Option<Issued>), Refusal> {
        let header = header.ok_or(Refusal::Missing)?;
        let text = std::str::from_utf8(header)
            .map_err(|_| Refusal::Invalid("the authorization header is not text".into()))?;
        let creds = Credentials::parse(text)?;
        self.authenticate(creds).await
    }
}

fn principal(u: &users::User) -> Principal {
    Principal {
        user: u.name.clone(),
        role: u.role,
        months: u.months.clone(),
    }
}

/// Authenticates a request of either front door by its `authorization`
/// header (everyone is the anonymous admin without a users file): the
/// caller, and the token a Basic sign-in was issued, go into the request's
/// extensions, and the user into the call's access log line. Returns the
/// issued token for the answer's headers.
pub async fn sign_in<B>(
    auth: Option<&Arc<Auth>>,
    req: &mut http::Request<B>,
) -> Result<Option<Issued>, Refusal> {
    let (caller, issued) = match auth {
        None => (Caller::anonymous(), None),
        Some(auth) => {
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec());
            auth.check_header(header.as_deref()).await?
        }
    };
    if let Some(n) = crate::access_log::current() {
        n.set_user(caller.user());
    }
    req.extensions_mut().insert(caller);
    if let Some(i) = &issued {
        req.extensions_mut().insert(i.clone());
    }
    Ok(issued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_with_and_without_padding() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("al:ice pwd");
        assert!(b64.ends_with('='), "{b64}");
        let want = Credentials::Basic {
            user: "al".into(),
            password: "ice pwd".into(),
        };
        assert_eq!(Credentials::parse(&format!("Basic {b64}")).unwrap(), want);
        let unpadded = b64.trim_end_matches('=');
        assert_eq!(
            Credentials::parse(&format!("basic {unpadded}")).unwrap(),
            want
        );
        assert_eq!(
            Credentials::parse("Bearer abc").unwrap(),
            Credentials::Bearer("abc".into())
        );
        for bad in ["", "Basic", "Basic !!!", "Digest x", "Basic bm9jb2xvbg"] {
            assert!(Credentials::parse(bad).is_err(), "{bad}");
        }
    }
}
