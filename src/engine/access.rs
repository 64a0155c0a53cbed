//! Who may do what: the caller's role and months, checked by the engine
//! for every call of both front doors. The front doors only establish who
//! is calling (`crate::auth`); what that caller may do is decided here, once.

use std::fmt;
use std::sync::Arc;

use super::error::{EngineError, EngineResult, ErrorClass};
use super::month::MonthId;

/// A user's role; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries, metadata, month and node status, file listing.
    Reader,
    /// Also writes, DDL, ingest, transactions, exports, sync, batches.
    Writer,
    /// Also month creation, replica rebuilds, sessions.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?} (reader, writer or admin)")),
        }
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    /// Month globs (`2026-*`) the user may touch; `None`: every month.
    pub months: Option<Vec<String>>,
}

/// Who is calling: nobody (refused), or a principal. Without users the
/// front doors make every caller [`Caller::anonymous`], an admin.
#[derive(Debug, Clone, Default)]
pub struct Caller(Option<Arc<Principal>>);

impl Caller {
    pub fn new(p: Principal) -> Caller {
        Caller(Some(Arc::new(p)))
    }

    /// The caller of a server without users: may do everything.
    pub fn anonymous() -> Caller {
        Caller::new(Principal {
            user: "anonymous".into(),
            role: Role::Admin,
            months: None,
        })
    }

    pub fn principal(&self) -> Option<&Principal> {
        self.0.as_deref()
    }

    pub fn user(&self) -> &str {
        self.principal().map_or("-", |p| p.user.as_str())
    }

    /// Whether the caller holds `role` (or more).
    pub fn has(&self, role: Role) -> bool {
        self.principal().is_some_and(|p| p.role >= role)
    }

    /// Refuses unless the caller holds `role`; `what` names the call.
    pub fn require(&self, role: Role, what: &str) -> EngineResult<()> {
        match self.principal() {
            None => Err(EngineError::new(
                ErrorClass::Unauthenticated,
                "authentication required",
            )),
            Some(p) if p.role >= role => Ok(()),
            Some(p) => Err(EngineError::forbidden(format!(
                "permission denied: {what} needs role {role} (user {} has role {})",
                p.user, p.role
            ))),
        }
    }

    /// Whether the caller may touch `month` (its allow-list).
    pub fn may_use(&self, month: MonthId) -> bool {
        match self.principal() {
            None => false,
            Some(p) => match &p.months {
                None => true,
                Some(globs) => {
                    let m = month.to_string();
                    globs.iter().any(|g| glob_match(g, &m))
                }
            },
        }
    }

    /// Refuses a month outside the caller's allow-list.
    pub fn require_month(&self, month: MonthId) -> EngineResult<()> {
        if self.principal().is_none() {
            return self.require(Role::Reader, "this call");
        }
        if self.may_use(month) {
            Ok(())
        } else {
            Err(EngineError::forbidden(format!(
                "permission denied: user {} may not use month {month}",
                self.user()
            )))
        }
    }
}

/// `*` matches any run of characters, `?` one; everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, months: Option<Vec<&str>>) -> Caller {
        Caller::new(Principal {
            user: "u".into(),
            role,
            months: months.map(|m| m.into_iter().map(String::from).collect()),
        })
    }

    #[test]
    fn roles_include_the_ones_before() {
        let w = caller(Role::Writer, None);
        assert!(w.require(Role::Reader, "x").is_ok());
        assert!(w.require(Role::Writer, "x").is_ok());
        let e = w.require(Role::Admin, "create_month").unwrap_err();
        assert_eq!(e.class, ErrorClass::PermissionDenied);
        assert!(
            e.message.contains("create_month needs role admin"),
            "{}",
            e.message
        );
        let nobody = Caller::default();
        assert_eq!(
            nobody.require(Role::Reader, "x").unwrap_err().class,
            ErrorClass::Unauthenticated
        );
        assert!(Caller::anonymous().has(Role::Admin));
    }

    #[test]
    fn month_globs() {
        let c = caller(Role::Reader, Some(vec!["2026-*", "2025-1?"]));
        let m = |s: &str| s.parse::<MonthId>().unwrap();
        assert!(c.may_use(m("2026-01")));
        assert!(c.may_use(m("2025-11")));
        assert!(!c.may_use(m("2025-09")));
        assert!(!c.may_use(m("2027-01")));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b", "aXc"));
    }
}
