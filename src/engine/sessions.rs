//! Flight SQL transactions (a dedicated connection on the month's primary)
//! and sessions (their own connections and `catalog`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::capture;
use super::error::{EngineError, EngineResult, ErrorClass};
use super::month::MonthId;
use super::state::{new_id, Session, Transaction};
use super::*;

impl Engine {
    /// Begins a transaction on the month's primary (creating the month).
    pub async fn begin_transaction(self: &Arc<Self>, ctx: &CallContext) -> EngineResult<String> {
        ctx.caller.require(Role::Writer, "a transaction")?;
        let month = self.resolve_month(ctx)?;
        self.room_for_session(&ctx.caller)?;
        let me = Arc::clone(self);
        let (conn, capture_id) = blocking(move || {
            let m = me.months.get_or_create(month)?;
            let conn = m.primary().connect()?;
            let id = capture::begin(&conn, &m.log)?;
            Ok((conn, id))
        })
        .await?;
        let id = new_id();
        self.state.transactions.lock().insert(
            id.clone(),
            Transaction {
                month,
                conn: Arc::new(Mutex::new(conn)),
                capture_id,
                last_used: Instant::now(),
                owner: ctx.caller.user().to_string(),
            },
        );
        Ok(id)
    }

    /// Commits (with its change set) or rolls back a transaction. Returns
    /// the read-your-writes token of a commit that changed something.
    pub async fn end_transaction(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        commit: bool,
    ) -> EngineResult<Option<String>> {
        caller.require(Role::Writer, "a transaction")?;
        let txn = {
            let mut txns = self.state.transactions.lock();
            match txns.get(id) {
                Some(t) if t.owner == caller.user() => txns.remove(id),
                _ => None,
            }
        }
        .ok_or_else(|| {
            EngineError::not_found(format!(
                "transaction {id} does not exist (expired or ended)"
            ))
        })?;
        let m = self
            .existing_month(txn.month)
            .await?
            .ok_or_else(|| EngineError::not_found(format!("month {} does not exist", txn.month)))?;
        let log = Arc::clone(&m.log);
        let lsn = blocking(move || {
            let conn = txn.conn.lock();
            if commit {
                capture::commit(&conn, txn.capture_id, &log)
            } else {
                conn.execute_batch("ROLLBACK")?;
                Ok(None)
            }
        })
        .await?;
        Ok(super::token(Some(&m), lsn))
    }

    // ----- sessions --------------------------------------------------------

    /// Sets session options, creating the session if needed. Returns the
    /// session id and the options that were refused with a reason.
    pub fn set_session_options(
        &self,
        caller: &Caller,
        session: Option<&str>,
        options: Vec<(String, OptionValue)>,
    ) -> EngineResult<(String, Vec<(String, EngineError)>)> {
        caller.require(Role::Reader, "a session")?;
        let known = session.filter(|s| {
            self.state
                .sessions
                .lock()
                .get(*s)
                .is_some_and(|x| x.owner == caller.user())
        });
        if known.is_none() {
            self.room_for_session(caller)?;
        }
        let mut sessions = self.state.sessions.lock();
        let id = match known {
            Some(s) => s.to_string(),
            None => new_id(),
        };
        let s = sessions.entry(id.clone()).or_insert_with(|| Session {
            catalog: None,
            conns: Default::default(),
            last_used: Instant::now(),
            owner: caller.user().to_string(),
            query_timeout: None,
        });
        s.last_used = Instant::now();
        let mut errors = Vec::new();
        for (name, value) in options {
            match (name.as_str(), value) {
                ("catalog", OptionValue::String(v)) => {
                    match v
                        .parse::<MonthId>()
                        .and_then(|m| caller.require_month(m).map(|_| m))
                    {
                        Ok(m) => s.catalog = Some(m),
                        Err(e) => errors.push((name, e)),
                    }
                }
                ("catalog", _) => errors.push((
                    name,
                    EngineError::invalid("catalog must be a string YYYY-MM"),
                )),
                ("query_timeout", value) => match timeout_seconds(&value) {
                    Some(secs) => {
                        let asked = (secs > 0.0).then(|| Duration::from_secs_f64(secs));
                        s.query_timeout = match (asked, self.cfg.query_timeout) {
                            (Some(a), Some(server)) => Some(a.min(server)),
                            (a, _) => a,
                        };
                    }
                    None => errors.push((
                        name,
                        EngineError::invalid(
                            "query_timeout is a number of seconds (0: the server's --query-timeout)",
                        ),
                    )),
                },
                _ => errors.push((
                    name.clone(),
                    EngineError::not_found(format!("unknown session option '{name}'")),
                )),
            }
        }
        Ok((id, errors))
    }

    pub fn get_session_options(&self, ctx: &CallContext) -> Vec<(String, OptionValue)> {
        let month = self.resolve_month(&CallContext {
            session: ctx.session.clone(),
            caller: ctx.caller.clone(),
            ..CallContext::default()
        });
        let mut out = match month {
            Ok(m) => vec![("catalog".to_string(), OptionValue::String(m.to_string()))],
            Err(_) => Vec::new(),
        };
        if let Some(t) = self.query_timeout(ctx) {
            out.push((
                "query_timeout".to_string(),
                OptionValue::Double(t.as_secs_f64()),
            ));
        }
        out
    }

    /// How long a statement of this call may run: the session's
    /// `query_timeout` if it set one (never above the server's), else
    /// `--query-timeout`.
    pub(super) fn query_timeout(&self, ctx: &CallContext) -> Option<Duration> {
        let own = ctx.session.as_deref().and_then(|id| {
            let sessions = self.state.sessions.lock();
            sessions
                .get(id)
                .filter(|s| s.owner == ctx.caller.user())
                .and_then(|s| s.query_timeout)
        });
        own.or(self.cfg.query_timeout)
    }

    /// Refuses a new session or transaction beyond `--max-sessions` (both
    /// kinds together; admins are exempt, so they can always get in to
    /// kill sessions).
    fn room_for_session(&self, caller: &Caller) -> EngineResult<()> {
        let Some(max) = self.cfg.max_sessions else {
            return Ok(());
        };
        if caller.has(Role::Admin) {
            return Ok(());
        }
        let user = caller.user();
        let (sessions, transactions) = (self.state.sessions.lock(), self.state.transactions.lock());
        let mine = sessions.values().filter(|s| s.owner == user).count()
            + transactions.values().filter(|t| t.owner == user).count();
        let open = sessions.len() + transactions.len();
        drop((sessions, transactions));
        if let Some(per_user) = self.cfg.max_sessions_per_user.filter(|&m| mine >= m) {
            return Err(EngineError::new(
                ErrorClass::ResourceExhausted,
                format!(
                    "user {user} holds {mine} sessions and transactions, the most \
                     --max-sessions-per-user ({per_user}) allows: close some first"
                ),
            ));
        }
        if open >= max {
            return Err(EngineError::new(
                ErrorClass::Unavailable,
                format!(
                    "the server holds {open} sessions and transactions, the most --max-sessions allows: retry later"
                ),
            ));
        }
        Ok(())
    }

    /// Every open session and transaction (admin).
    pub fn list_sessions(&self, caller: &Caller) -> EngineResult<Vec<SessionInfo>> {
        caller.require(Role::Admin, "list_sessions")?;
        let now = Instant::now();
        let mut out: Vec<SessionInfo> = self
            .state
            .sessions
            .lock()
            .iter()
            .map(|(id, s)| SessionInfo {
                session: id.clone(),
                kind: "session",
                user: s.owner.clone(),
                month: s.catalog.map(|m| m.to_string()),
                idle_s: now.duration_since(s.last_used).as_secs_f64(),
            })
            .collect();
        out.extend(
            self.state
                .transactions
                .lock()
                .iter()
                .map(|(id, t)| SessionInfo {
                    session: id.clone(),
                    kind: "transaction",
                    user: t.owner.clone(),
                    month: Some(t.month.to_string()),
                    idle_s: now.duration_since(t.last_used).as_secs_f64(),
                }),
        );
        out.sort_by(|a, b| a.session.cmp(&b.session));
        Ok(out)
    }

    /// Closes a session, or rolls back a transaction (admin).
    pub fn kill_session(&self, caller: &Caller, id: &str) -> EngineResult<&'static str> {
        caller.require(Role::Admin, "kill_session")?;
        if self.state.sessions.lock().remove(id).is_some() {
            return Ok("session");
        }
        // Dropping the connection makes DuckDB roll the transaction back.
        let txn = self.state.transactions.lock().remove(id);
        match txn {
            Some(t) => {
                drop(t);
                Ok("transaction")
            }
            None => Err(EngineError::not_found(format!(
                "no session or transaction {id}"
            ))),
        }
    }

    pub fn close_session(&self, caller: &Caller, session: &str) -> bool {
        let mut sessions = self.state.sessions.lock();
        match sessions.get(session) {
            Some(s) if s.owner == caller.user() => sessions.remove(session).is_some(),
            _ => false,
        }
    }
}

/// One open session or transaction (`list_sessions`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub session: String,
    /// `session` or `transaction`.
    pub kind: &'static str,
    pub user: String,
    pub month: Option<String>,
    pub idle_s: f64,
}

/// Seconds from a session option value (a number, or a string holding one).
fn timeout_seconds(v: &OptionValue) -> Option<f64> {
    let secs = match v {
        OptionValue::Int(i) => *i as f64,
        OptionValue::Double(d) => *d,
        OptionValue::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (secs.is_finite() && (0.0..1e9).contains(&secs)).then_some(secs)
}
