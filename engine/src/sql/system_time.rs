//! `FOR SYSTEM_TIME AS OF e.proc_time`: Flink's marker of a lookup join.
//!
//! Flink joins a dimension "as of" each row's processing time, which is
//! what a lookup does anyway: the row sees the dimension as it is when the
//! row is processed. DataFusion does not parse the clause, so it is removed
//! before planning and the tables it followed are remembered: a dimension
//! joined without it is refused, as in Flink, so that every lookup join is
//! visibly one.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The SQL without its `FOR SYSTEM_TIME AS OF` clauses, and the tables
/// (as written, lower-cased) that had one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemTimeJoins {
    /// SQL DataFusion can plan.
    pub sql: String,
    /// Tables joined `FOR SYSTEM_TIME AS OF`.
    pub tables: Vec<String>,
}

/// Removes every `FOR SYSTEM_TIME AS OF <column or call>` from `sql`.
///
/// ```
/// use strata_engine::sql::system_time::strip_system_time;
/// let s = strip_system_time(
///     "SELECT * FROM deals d JOIN agents FOR SYSTEM_TIME AS OF d.proc_time AS a ON d.agent_id = a.agent_id",
/// ).unwrap();
/// assert_eq!(s.tables, vec!["agents"]);
/// assert!(!s.sql.contains("SYSTEM_TIME"));
/// ```
pub fn strip_system_time(sql: &str) -> Result<SystemTimeJoins, String> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .with_unescape(false)
        .tokenize()
        .map_err(|e| format!("SQL syntax error: {e}"))?;
    let is =
        |t: &Token, text: &str| matches!(t, Token::Word(w) if w.value.eq_ignore_ascii_case(text));
    let significant =
        |from: usize| (from..tokens.len()).find(|&j| !matches!(tokens[j], Token::Whitespace(_)));
    let mut out = String::with_capacity(sql.len());
    let mut tables = Vec::new();
    let mut last_word: Option<String> = None;
    let mut i = 0;
    while i < tokens.len() {
        if is(&tokens[i], "FOR") {
            let a = significant(i + 1);
            let b = a.and_then(|a| significant(a + 1));
            let c = b.and_then(|b| significant(b + 1));
            if let (Some(a), Some(b), Some(c)) = (a, b, c)
                && is(&tokens[a], "SYSTEM_TIME")
                && is(&tokens[b], "AS")
                && is(&tokens[c], "OF")
            {
                let end = skip_time_expr(&tokens, c + 1).ok_or_else(|| {
                    "FOR SYSTEM_TIME AS OF needs the row's processing time: `FOR SYSTEM_TIME AS OF e.proc_time`".to_string()
                })?;
                let table = last_word.clone().ok_or_else(|| {
                    "FOR SYSTEM_TIME AS OF follows the dimension's name: `JOIN agents FOR SYSTEM_TIME AS OF e.proc_time AS a`".to_string()
                })?;
                tables.push(table);
                i = end;
                continue;
            }
        }
        match &tokens[i] {
            Token::Word(w) => last_word = Some(w.value.to_ascii_lowercase()),
            Token::Whitespace(_) | Token::Period => {}
            _ => last_word = None,
        }
        out.push_str(&tokens[i].to_string());
        i += 1;
    }
    if tables.is_empty() {
        // Nothing to remove: the SQL as written, not as re-rendered.
        return Ok(SystemTimeJoins {
            sql: sql.to_string(),
            tables,
        });
    }
    Ok(SystemTimeJoins { sql: out, tables })
}

/// Past `a.b.c` or `f(...)` starting at (or after whitespace at) `from`.
fn skip_time_expr(tokens: &[Token], from: usize) -> Option<usize> {
    let mut j = (from..tokens.len()).find(|&j| !matches!(tokens[j], Token::Whitespace(_)))?;
    if !matches!(tokens[j], Token::Word(_)) {
        return None;
    }
    j += 1;
    while j + 1 < tokens.len()
        && tokens[j] == Token::Period
        && matches!(tokens[j + 1], Token::Word(_))
    {
        j += 2;
    }
    if j < tokens.len() && tokens[j] == Token::LParen {
        let mut depth = 0usize;
        while j < tokens.len() {
            match tokens[j] {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(j + 1);
                    }
                }
                _ => {}
            }
            j += 1;
        }
        return None;
    }
    Some(j)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_go_and_their_tables_are_named() {
        let s = strip_system_time(
            "SELECT d.id, a.name, s.city FROM deals AS d \
             LEFT JOIN agents FOR SYSTEM_TIME AS OF d.proc_time AS a ON d.agent_id = a.agent_id \
             JOIN stores FOR SYSTEM_TIME AS OF PROCTIME() s ON a.store_id = s.store_id",
        )
        .unwrap();
        assert_eq!(s.tables, vec!["agents", "stores"]);
        assert!(s.sql.contains("LEFT JOIN agents  AS a ON"), "{}", s.sql);
        assert!(s.sql.contains("JOIN stores  s ON"), "{}", s.sql);
    }

    #[test]
    fn strings_are_left_alone() {
        let s = strip_system_time("SELECT 'FOR SYSTEM_TIME AS OF x' AS t FROM deals").unwrap();
        assert!(s.tables.is_empty());
        assert!(s.sql.contains("'FOR SYSTEM_TIME AS OF x'"));
    }

    #[test]
    fn quotes_inside_literals_survive() {
        let s = strip_system_time(
            "SELECT * FROM d JOIN a FOR SYSTEM_TIME AS OF d.t AS x ON d.k = x.k WHERE x.n = 'O''Brien'",
        )
        .unwrap();
        assert!(s.sql.contains("'O''Brien'"), "{}", s.sql);
    }

    #[test]
    fn a_missing_time_says_what_to_write() {
        let e = strip_system_time("SELECT * FROM d JOIN a FOR SYSTEM_TIME AS OF").unwrap_err();
        assert!(e.contains("e.proc_time"), "{e}");
    }
}
