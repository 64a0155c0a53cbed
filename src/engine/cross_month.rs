//! Cross-month reads (`x-duckflock-months: 2026-01,2026-02` or `all`): the
//! statement runs on each month in turn and the answers form one stream with
//! a leading `month` column; columns are unified by name across months (a
//! column a month lacks is NULL there).

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

use super::classify::{classify, StatementKind};
use super::error::{EngineError, EngineResult};
use super::exec::{self, CHANNEL_DEPTH};
use super::month::MonthId;
use super::months::Month;
use super::{blocking, BatchStream, Caller, Engine, Role};

/// Most months one cross-month read may open (each is 1 + `--replicas`
/// DuckDB files and their threads).
pub const MAX_MONTHS_PER_READ: usize = 120;

/// The months a `x-duckflock-months` value names that exist (in order,
/// without repeats), at most [`MAX_MONTHS_PER_READ`]. Names that are not
/// months are an error; months that do not exist yet hold no data and are
/// skipped.
fn select_months(engine: &Engine, caller: &Caller, spec: &str) -> EngineResult<Vec<MonthId>> {
    let spec = spec.trim();
    let months = if spec.eq_ignore_ascii_case("all") {
        let mut ids = engine.months.ids();
        ids.retain(|m| caller.may_use(*m));
        ids
    } else {
        let mut ids: Vec<MonthId> = Vec::new();
        for part in spec.split(',') {
            let id: MonthId = part.trim().parse()?;
            caller.require_month(id)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.into_iter()
            .filter(|id| engine.months.exists(*id))
            .collect()
    };
    if months.is_empty() {
        return Err(EngineError::not_found(format!(
            "no existing month matches '{spec}'"
        )));
    }
    if months.len() > MAX_MONTHS_PER_READ {
        return Err(EngineError::new(
            super::error::ErrorClass::ResourceExhausted,
            format!(
                "x-duckflock-months selects {} months, more than one read may open \
                 ({MAX_MONTHS_PER_READ}): name the months (YYYY-MM,YYYY-MM,...) instead",
                months.len()
            ),
        ));
    }
    Ok(months)
}

/// `month` followed by every column name in order of first appearance; a
/// column keeps the type of the first month that has it.
fn unify(schemas: &[SchemaRef]) -> SchemaRef {
    let mut fields: Vec<Field> = vec![Field::new("month", DataType::Utf8, false)];
    for s in schemas {
        for f in s.fields() {
            if !fields[1..].iter().any(|g| g.name() == f.name()) {
                fields.push(f.as_ref().clone().with_nullable(true));
            }
        }
    }
    Arc::new(Schema::new(fields))
}

/// Reshapes one month's batch to the unified schema.
fn conform(unified: &SchemaRef, month: &str, batch: &RecordBatch) -> EngineResult<RecordBatch> {
    let n = batch.num_rows();
    let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![month; n]))];
    for f in unified.fields().iter().skip(1) {
        let col = match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Arc::clone(c),
            Some(c) => cast(c, f.data_type()).map_err(|e| {
                EngineError::invalid(format!(
                    "column '{}' is {} in {month} but {} in an earlier month: {e}",
                    f.name(),
                    c.data_type(),
                    f.data_type()
                ))
            })?,
            None => new_null_array(f.data_type(), n),
        };
        cols.push(col);
    }
    RecordBatch::try_new(Arc::clone(unified), cols)
        .map_err(|e| EngineError::internal(e.to_string()))
}

pub(super) struct CrossMonthPlan {
    months: Vec<Arc<Month>>,
    pub schema: SchemaRef,
    pub parameter_schema: SchemaRef,
}

impl Engine {
    /// Prepares `sql` on every selected month: it must be one read statement
    /// everywhere. Returns the unified result schema.
    pub(super) async fn plan_cross_month(
        self: &Arc<Self>,
        caller: &Caller,
        spec: &str,
        sql: &str,
    ) -> EngineResult<CrossMonthPlan> {
        caller.require(Role::Reader, "a query")?;
        let ids = select_months(self, caller, spec)?;
        let sql = sql.to_string();
        let me = Arc::clone(self);
        let (months, schemas, parameter_schema) = blocking(move || {
            let months: Vec<Arc<Month>> = ids
                .into_iter()
                .filter_map(|id| me.months.get(id).transpose())
                .collect::<EngineResult<_>>()?;
            let mut schemas = Vec::new();
            let mut params = None;
            for m in &months {
                let (schema, p) = m
                    .primary()
                    .lease()?
                    .with(|conn| {
                        let script = conn.extract(&sql)?;
                        if script.len() != 1 {
                            return Err(EngineError::invalid(
                                "a cross-month statement must be a single statement",
                            ));
                        }
                        let stmt = script.prepare(conn, 0)?;
                        if classify(stmt.statement_type()) != StatementKind::Read {
                            return Err(EngineError::invalid(
                                "x-duckflock-months is for read statements only",
                            ));
                        }
                        Ok((stmt.result_schema()?, stmt.parameter_schema()?))
                    })
                    .map_err(|e| EngineError::new(e.class, format!("{}: {}", m.id, e.message)))?;
                schemas.push(schema);
                params.get_or_insert(p);
            }
            let params = params.unwrap_or_else(|| Arc::new(Schema::empty()));
            Ok((months, schemas, params))
        })
        .await?;
        Ok(CrossMonthPlan {
            months,
            schema: unify(&schemas),
            parameter_schema,
        })
    }

    /// Runs a cross-month read and streams it: one month after another,
    /// each through the same bounded channel.
    pub(super) async fn stream_cross_month(
        self: &Arc<Self>,
        ctx: &super::CallContext,
        spec: &str,
        sql: &str,
        params: Vec<RecordBatch>,
    ) -> EngineResult<BatchStream> {
        let plan = self.plan_cross_month(&ctx.caller, spec, sql).await?;
        let unified = Arc::clone(&plan.schema);
        // Each month is read on a random healthy replica (else its primary).
        let picks: Vec<(Arc<Month>, Arc<super::node::Node>, usize)> = plan
            .months
            .iter()
            .map(|m| {
                let (node, i) = m.read_node();
                (Arc::clone(m), node, i)
            })
            .collect();
        let nodes = picks
            .iter()
            .map(|(m, _, i)| format!("{}/node_{i}", m.id))
            .collect::<Vec<_>>()
            .join(",");
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let sql = sql.to_string();
        // One deadline and one turn for the whole cross-month statement
        // (its months are read one after another).
        let deadline = self.deadline(ctx);
        let turn = self.turn().await?;
        tokio::spawn(async move {
            let _turn = turn;
            for (m, node, _) in picks {
                let month = m.id.to_string();
                let lease = match node.lease() {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let (schema_rx, mut inner) = exec::spawn_stream(
                    lease,
                    sql.clone(),
                    params.clone(),
                    exec::Mode::ReadOnly,
                    deadline.clone(),
                    None,
                );
                match schema_rx.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        let _ = tx
                            .send(Err(EngineError::new(
                                e.class,
                                format!("{month}: {}", e.message),
                            )))
                            .await;
                        return;
                    }
                    Err(_) => {
                        let _ = tx
                            .send(Err(EngineError::internal(format!(
                                "{month}: execution ended without a result"
                            ))))
                            .await;
                        return;
                    }
                }
                while let Some(item) = inner.recv().await {
                    let out = item.and_then(|b| conform(&unified, &month, &b));
                    let failed = out.is_err();
                    // A closed channel means the client went away; dropping
                    // `inner` then stops this month's producer too.
                    if tx.send(out).await.is_err() || failed {
                        return;
                    }
                }
            }
        });
        super::first_batch(plan.schema, rx, nodes).await
    }
}
