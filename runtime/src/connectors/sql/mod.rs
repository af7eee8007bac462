//! SQL databases (through sqlx): a sink that inserts or upserts one row per event in one
//! transaction per batch, and a source that reads a table or query incrementally. PostgreSQL behind the `sql-postgres` feature, MySQL/MariaDB behind
//! `sql-mysql`.

pub mod config;
pub mod sink;
pub mod source;

use std::sync::Arc;

use sluice_core::{
    registry::{BuildCx, ReadCx, SinkSpec, plain_sink},
    sink::Sink,
};

use self::config::SqlSinkConfig;

/// `type: sql` sinks.
pub(crate) fn read(cx: &mut ReadCx<'_>) -> Option<Arc<dyn SinkSpec>> {
    plain_sink::<SqlSinkConfig>(cx)
}

impl SinkSpec for SqlSinkConfig {
    fn build(&self, cx: &BuildCx<'_>) -> Result<Box<dyn Sink>, String> {
        let sink = sink::SqlSink::new(cx.name, self).map_err(|e| e.to_string())?;
        Ok(Box::new(sink))
    }

    fn idempotent(&self) -> Option<sluice_core::guarantee::Idempotence> {
        let mode = match self.mode {
            config::SqlMode::Insert => return None,
            config::SqlMode::Upsert => "upsert",
            config::SqlMode::InsertNew => "insert_new",
        };
        Some(sluice_core::guarantee::Idempotence::Keyed(format!(
            "rows are keyed on `{}` (`mode: {mode}`): an event written again leaves one row",
            self.key.join(", ")
        )))
    }
}
