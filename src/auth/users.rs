//! The users file (`--users`, TOML):
//!
//! ```toml
//! [[user]]
//! name = "rita"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # duckflock hash-password
//! role = "reader"                                         # reader | writer | admin
//! months = ["2026-*"]                                     # optional
//! ```

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use password_hash::rand_core::OsRng;
use password_hash::SaltString;
use serde::Deserialize;

use crate::engine::{MonthId, Role};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: String,
    role: Role,
    months: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// The PHC string (checked to parse when the file is read).
    hash: String,
    pub role: Role,
    pub months: Option<Vec<String>>,
}

/// The users, by name.
#[derive(Debug)]
pub struct Users {
    by_name: HashMap<String, User>,
}

/// A hash no password matches, checked for unknown users so that a wrong
/// name costs as long as a wrong password.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3lkZWNveWRlY295$mcOqUWFzYb3bsMJ4bf1VcU8qNvmeQ2FOCgl5D9mgVE8";

impl Users {
    pub fn load(path: &Path) -> anyhow::Result<Users> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading users file {}", path.display()))?;
        Users::parse(&text).with_context(|| format!("users file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Users> {
        let file: File = toml::from_str(text)?;
        let mut by_name = HashMap::new();
        for u in file.user {
            if u.name.is_empty() || u.name.contains(':') {
                bail!("user name {:?} is empty or contains ':'", u.name);
            }
            PasswordHash::new(&u.password_hash).map_err(|e| {
                anyhow::anyhow!(
                    "user {}: password_hash is not a PHC hash ({e}); make one with `duckflock hash-password`",
                    u.name
                )
            })?;
            if let Some(globs) = &u.months {
                for g in globs {
                    if g.is_empty() || g.len() > 7 {
                        bail!(
                            "user {}: month pattern {g:?} is not like 2026-* or 2026-01",
                            u.name
                        );
                    }
                }
                // A pattern with no wildcard must be a real month.
                for g in globs.iter().filter(|g| !g.contains(['*', '?'])) {
                    g.parse::<MonthId>()
                        .map_err(|e| anyhow::anyhow!("user {}: {}", u.name, e.message))?;
                }
            }
            let name = u.name.clone();
            let user = User {
                name: u.name,
                hash: u.password_hash,
                role: u.role,
                months: u.months,
            };
            if by_name.insert(name.clone(), user).is_some() {
                bail!("user {name} appears twice");
            }
        }
        if by_name.is_empty() {
            bail!("no [[user]] entries");
        }
        Ok(Users { by_name })
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    /// The user if `password` is theirs (slow: argon2id).
    pub fn verify(&self, name: &str, password: &str) -> Option<&User> {
        let user = self.by_name.get(name);
        let hash = user.map_or(DECOY, |u| u.hash.as_str());
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        user.filter(|_| ok)
    }
}

/// An argon2id PHC hash of `password` with a fresh salt
/// (`duckflock hash-password`).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verify_and_file_rules() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        let text = format!(
            "[[user]]\nname = \"a\"\npassword_hash = \"{h}\"\nrole = \"writer\"\nmonths = [\"2026-*\"]\n"
        );
        let users = Users::parse(&text).unwrap();
        assert_eq!(
            users.verify("a", "s3cret").map(|u| u.role),
            Some(Role::Writer)
        );
        assert!(users.verify("a", "wrong").is_none());
        assert!(users.verify("nobody", "s3cret").is_none());
        assert!(Users::parse(&text.replace("writer", "boss")).is_err());
        assert!(Users::parse(&text.replace(&h, "plain")).is_err());
        assert!(Users::parse(&format!("{text}{text}")).is_err());
        assert!(Users::parse(&text.replace("2026-*", "2026-13")).is_err());
        assert!(Users::parse("").is_err());
    }
}
