//! Cutting a table into splits by `splitPk`, as DataX does.
//!
//! An integer key is cut into ranges between its MIN and MAX; any other key is cut at quantiles
//! the database itself picks with `ORDER BY key OFFSET k`, so boundaries and the range predicates
//! use the same collation and no row is read twice or missed. Rows whose key is NULL get a split
//! of their own. Boundary values are turned into SQL literals by the database (`quote_literal`,
//! `QUOTE`), never by pasting text here.

use super::{Dialect, is_plain, select_list, sql_name};
use crate::sync::plugin::SyncError;
use std::future::Future;

/// The queries a database answers so a table can be split; a driver's connection implements it.
pub trait SplitQueries {
    /// Whether `column` of `table` has an integer type.
    fn is_integer(
        &mut self,
        table: &str,
        column: &str,
    ) -> impl Future<Output = Result<bool, String>> + Send;
    /// MIN and MAX of integer column `qpk` over `from_where` (`FROM t WHERE …`); `None` when
    /// there is no row.
    fn min_max(
        &mut self,
        qpk: &str,
        from_where: &str,
    ) -> impl Future<Output = Result<Option<(i64, i64)>, String>> + Send;
    fn count(&mut self, sql: &str) -> impl Future<Output = Result<i64, String>> + Send;
    /// The first column of the first row, as a SQL literal made by the database; `None` if no row.
    fn literal(&mut self, sql: &str)
    -> impl Future<Output = Result<Option<String>, String>> + Send;
    /// How the database makes a SQL literal of an expression (`quote_literal(x)`, `QUOTE(x)`).
    fn quote_literal_expr(&self, expr: &str) -> String;
}

/// One piece of a table to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSplit {
    pub sql: String,
    pub label: String,
    /// `table (columns)` when the split is the whole table with plain column names, so a
    /// database that can copy a table directly (PostgreSQL `COPY t TO`) may skip the executor.
    pub whole_table: Option<String>,
}

impl TableSplit {
    /// A reader error about this split.
    pub fn fail(&self, e: impl std::fmt::Display) -> SyncError {
        SyncError::Source(format!("{}: {e}", self.label))
    }
}

fn and_where(filter: Option<&str>, extra: &str) -> String {
    match filter {
        Some(w) if !w.trim().is_empty() => format!(" WHERE ({w}) AND {extra}"),
        _ => format!(" WHERE {extra}"),
    }
}

fn only_where(filter: Option<&str>) -> String {
    match filter {
        Some(w) if !w.trim().is_empty() => format!(" WHERE ({w})"),
        _ => String::new(),
    }
}

/// Cuts `table` into splits for `channels` channels.
pub async fn plan_table<Q: SplitQueries + Send>(
    q: &mut Q,
    d: &(impl Dialect + Sync),
    table: &str,
    columns: &[String],
    filter: Option<&str>,
    split_pk: Option<&str>,
    channels: usize,
) -> Result<Vec<TableSplit>, String> {
    let qtable = sql_name(d, table);
    let base = format!("SELECT {} FROM {qtable}", select_list(d, columns));
    let Some(pk) = split_pk.filter(|_| channels > 1) else {
        let plain = columns.iter().all(|c| c == "*" || is_plain(c));
        let whole_table = (filter.is_none_or(|w| w.trim().is_empty()) && plain).then(|| {
            if columns.is_empty() || columns == ["*"] {
                qtable.clone()
            } else {
                format!("{qtable} ({})", select_list(d, columns))
            }
        });
        return Ok(vec![TableSplit {
            sql: format!("{base}{}", only_where(filter)),
            label: table.to_string(),
            whole_table,
        }]);
    };
    let qpk = sql_name(d, pk);
    let pieces = channels * 4;
    let mut splits = Vec::new();
    if q.is_integer(table, pk).await? {
        let from = format!("FROM {qtable}{}", only_where(filter));
        if let Some((lo, hi)) = q.min_max(&qpk, &from).await? {
            let span = (hi as i128) - (lo as i128) + 1;
            let step = (span + pieces as i128 - 1) / pieces as i128;
            let mut start = lo as i128;
            while start <= hi as i128 {
                let end = start + step;
                let cond = if end > hi as i128 {
                    format!("{qpk} >= {start} AND {qpk} <= {hi}")
                } else {
                    format!("{qpk} >= {start} AND {qpk} < {end}")
                };
                splits.push(TableSplit {
                    sql: format!("{base}{}", and_where(filter, &format!("({cond})"))),
                    label: format!("{table} [{cond}]"),
                    whole_table: None,
                });
                start = end;
            }
        }
    } else {
        let non_null = and_where(filter, &format!("{qpk} IS NOT NULL"));
        let count = q
            .count(&format!("SELECT COUNT(*) FROM {qtable}{non_null}"))
            .await?;
        let mut bounds: Vec<String> = Vec::new();
        if count > 0 {
            for k in 1..pieces as i64 {
                let offset = k * count / pieces as i64;
                if offset == 0 {
                    continue;
                }
                let sql = format!(
                    "SELECT {} FROM {qtable}{non_null} ORDER BY {qpk} LIMIT 1 OFFSET {offset}",
                    q.quote_literal_expr(&qpk)
                );
                if let Some(lit) = q.literal(&sql).await?
                    && bounds.last() != Some(&lit)
                {
                    bounds.push(lit);
                }
            }
        }
        if count > 0 {
            let mut lower: Option<&String> = None;
            for b in bounds.iter().map(Some).chain([None]) {
                let cond = match (lower, b) {
                    (None, Some(hi)) => format!("{qpk} < {hi}"),
                    (Some(lo), Some(hi)) => format!("{qpk} >= {lo} AND {qpk} < {hi}"),
                    (Some(lo), None) => format!("{qpk} >= {lo}"),
                    (None, None) => format!("{qpk} IS NOT NULL"),
                };
                splits.push(TableSplit {
                    sql: format!("{base}{}", and_where(filter, &format!("({cond})"))),
                    label: format!("{table} [{cond}]"),
                    whole_table: None,
                });
                lower = b;
            }
        }
    }
    splits.push(TableSplit {
        sql: format!("{base}{}", and_where(filter, &format!("{qpk} IS NULL"))),
        label: format!("{table} [{pk} IS NULL]"),
        whole_table: None,
    });
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pg;
    impl Dialect for Pg {
        fn quote_char(&self) -> char {
            '"'
        }
        fn quote_part(&self, p: &str) -> String {
            format!("\"{p}\"")
        }
    }

    #[test]
    fn names_are_names_and_select_items_pass_through() {
        assert_eq!(sql_name(&Pg, "orders"), "\"orders\"");
        assert_eq!(sql_name(&Pg, "public.orders"), "\"public\".\"orders\"");
        // Already quoted parts are kept as written.
        assert_eq!(
            sql_name(&Pg, "\"Mixed\".\"a.b\"\"c\""),
            "\"Mixed\".\"a.b\"\"c\""
        );
        assert_eq!(sql_name(&Pg, "public.\"T\""), "\"public\".\"T\"");
        // Anything else is one quoted name, never SQL.
        assert_eq!(sql_name(&Pg, "count(*)"), "\"count(*)\"");
        assert_eq!(
            sql_name(&Pg, "t\"; DROP TABLE x; --"),
            "\"t\"\"; DROP TABLE x; --\""
        );
        assert_eq!(sql_name(&Pg, "\"unclosed"), "\"\"\"unclosed\"");
        assert_eq!(sql_name(&Pg, "a..b"), "\"a..b\"");
        // A reader's select list keeps DataX's pass-through of expressions.
        assert_eq!(select_list(&Pg, &["*".into()]), "*");
        assert_eq!(
            select_list(&Pg, &["id".into(), "count(*)".into()]),
            "\"id\", count(*)"
        );
    }

    proptest::proptest! {
        /// Whatever the text, a name quoted whole parses back as exactly that one name: the
        /// quoted form has balanced, doubled quotes and nothing outside them.
        #[test]
        fn any_text_quotes_to_one_identifier(name in "\\PC{0,40}") {
            let q = sql_name(&Pg, &name);
            if let Some(ps) = super::super::parts(&q, '"') {
                for p in ps {
                    if let super::super::Part::Quoted(inner) = p {
                        let body = &inner[1..inner.len() - 1];
                        proptest::prop_assert!(!body.replace("\"\"", "").contains('"'));
                    }
                }
            } else {
                proptest::prop_assert!(false, "{q} is not a well-formed name");
            }
        }
    }

    struct Fake {
        integer: bool,
        rows: Vec<&'static str>,
    }

    impl SplitQueries for Fake {
        async fn is_integer(&mut self, _: &str, _: &str) -> Result<bool, String> {
            Ok(self.integer)
        }
        async fn min_max(&mut self, _: &str, _: &str) -> Result<Option<(i64, i64)>, String> {
            Ok(Some((1, 10)))
        }
        async fn count(&mut self, _: &str) -> Result<i64, String> {
            Ok(self.rows.len() as i64)
        }
        async fn literal(&mut self, sql: &str) -> Result<Option<String>, String> {
            let offset: usize = sql
                .rsplit("OFFSET ")
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Ok(self.rows.get(offset).map(|r| format!("'{r}'")))
        }
        fn quote_literal_expr(&self, e: &str) -> String {
            format!("quote_literal({e})")
        }
    }

    #[tokio::test]
    async fn integer_ranges_cover_min_to_max_and_nulls() -> Result<(), String> {
        let mut f = Fake {
            integer: true,
            rows: vec![],
        };
        let s = plan_table(
            &mut f,
            &Pg,
            "t",
            &["*".into()],
            Some("x > 0"),
            Some("id"),
            2,
        )
        .await?;
        let labels: Vec<_> = s.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            vec![
                "t [\"id\" >= 1 AND \"id\" < 3]",
                "t [\"id\" >= 3 AND \"id\" < 5]",
                "t [\"id\" >= 5 AND \"id\" < 7]",
                "t [\"id\" >= 7 AND \"id\" < 9]",
                "t [\"id\" >= 9 AND \"id\" <= 10]",
                "t [id IS NULL]",
            ]
        );
        assert!(
            s[0].sql
                .ends_with("WHERE (x > 0) AND (\"id\" >= 1 AND \"id\" < 3)")
        );
        Ok(())
    }

    #[tokio::test]
    async fn string_keys_split_at_database_quantiles() -> Result<(), String> {
        let mut f = Fake {
            integer: false,
            rows: vec!["a", "b", "b", "b", "c", "d", "e", "f"],
        };
        let s = plan_table(&mut f, &Pg, "t", &["*".into()], None, Some("k"), 2).await?;
        let labels: Vec<_> = s.iter().map(|s| s.label.as_str()).collect();
        // Offsets 1..8 step 1 (8 rows / 8 pieces): b, b, b, c, d, e, f -> deduplicated.
        assert_eq!(labels[0], "t [\"k\" < 'b']");
        assert_eq!(labels[1], "t [\"k\" >= 'b' AND \"k\" < 'c']");
        assert_eq!(labels[labels.len() - 2], "t [\"k\" >= 'f']");
        assert_eq!(labels[labels.len() - 1], "t [k IS NULL]");
        Ok(())
    }
}
