//! Flight SQL transactions (a dedicated connection on the month's primary)
//! and sessions (their own connections and `catalog`).

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::capture;
use super::error::{EngineError, EngineResult};
use super::month::MonthId;
use super::state::{new_id, Session, Transaction};
use super::*;

impl Engine {
    /// Begins a transaction on the month's primary (creating the month).
    pub async fn begin_transaction(self: &Arc<Self>, ctx: &CallContext) -> EngineResult<String> {
        let month = self.resolve_month(ctx)?;
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
            },
        );
        Ok(id)
    }

    /// Commits (with its change set) or rolls back a transaction. Returns
    /// the read-your-writes token of a commit that changed something.
    pub async fn end_transaction(
        self: &Arc<Self>,
        id: &str,
        commit: bool,
    ) -> EngineResult<Option<String>> {
        let txn = self.state.transactions.lock().remove(id).ok_or_else(|| {
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
        session: Option<&str>,
        options: Vec<(String, OptionValue)>,
    ) -> (String, Vec<(String, EngineError)>) {
        let mut sessions = self.state.sessions.lock();
        let id = match session {
            Some(s) if sessions.contains_key(s) => s.to_string(),
            _ => new_id(),
        };
        let s = sessions.entry(id.clone()).or_insert_with(|| Session {
            catalog: None,
            conns: Default::default(),
            last_used: Instant::now(),
        });
        s.last_used = Instant::now();
        let mut errors = Vec::new();
        for (name, value) in options {
            match (name.as_str(), value) {
                ("catalog", OptionValue::String(v)) => match v.parse::<MonthId>() {
                    Ok(m) => s.catalog = Some(m),
                    Err(e) => errors.push((name, e)),
                },
                ("catalog", _) => errors.push((
                    name,
                    EngineError::invalid("catalog must be a string YYYY-MM"),
                )),
                _ => errors.push((
                    name.clone(),
                    EngineError::not_found(format!("unknown session option '{name}'")),
                )),
            }
        }
        (id, errors)
    }

    pub fn get_session_options(&self, ctx: &CallContext) -> Vec<(String, OptionValue)> {
        let month = self.resolve_month(&CallContext {
            session: ctx.session.clone(),
            ..CallContext::default()
        });
        match month {
            Ok(m) => vec![("catalog".to_string(), OptionValue::String(m.to_string()))],
            Err(_) => Vec::new(),
        }
    }

    pub fn close_session(&self, session: &str) -> bool {
        self.state.sessions.lock().remove(session).is_some()
    }
}
