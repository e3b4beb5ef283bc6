//! Flink's windowing table-valued functions, rewritten into SQL DataFusion
//! plans.
//!
//! Users write `FROM TABLE(TUMBLE(TABLE deals, DESCRIPTOR(event_time),
//! INTERVAL '1' MINUTE))`, as in Flink SQL. DataFusion has no such table
//! functions, so before planning each call is replaced by a subquery that
//! adds `window_start` and `window_end` to every row of the input:
//!
//! - TUMBLE computes them with Strata's window UDFs;
//! - HOP and CUMULATE give each row its *slice* (a TUMBLE of the slide or
//!   the step), not each window it belongs to: the aggregation merges the
//!   slices of a window when it closes (`operators::slicing`), so a row of a
//!   day-long CUMULATE by minute is aggregated once, not 1,440 times. A
//!   window join matches whole windows: there (two TVFs in a layer) they
//!   `unnest` a list of windows, one output row per window a row is in;
//! - SESSION cannot be assigned row by row (a session's bounds depend on the
//!   rows around it), so its columns are placeholders that the session
//!   operator fills in.
//!
//! After that the query is ordinary SQL: `GROUP BY window_start, window_end,
//! city` plans to a DataFusion aggregate, which the streaming planner turns
//! into a window operator that emits each window when the watermark passes
//! its end. The rewrite works on tokens, so `TUMBLE` inside a string literal
//! or a comment is left alone.

use std::fmt;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};

/// The four window kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed-size, non-overlapping.
    Tumble,
    /// Fixed-size, overlapping, advancing by a slide.
    Hop,
    /// Growing by a step from the start of a fixed-size period.
    Cumulate,
    /// Bounded by a gap of inactivity per key.
    Session,
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WindowKind::Tumble => "TUMBLE",
            WindowKind::Hop => "HOP",
            WindowKind::Cumulate => "CUMULATE",
            WindowKind::Session => "SESSION",
        })
    }
}

/// One window TVF found in a layer's SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowTvf {
    /// Which window.
    pub kind: WindowKind,
    /// The input table (an upstream layer or topic input).
    pub input: String,
    /// The time column (`DESCRIPTOR(col)`).
    pub time_column: String,
    /// TUMBLE/HOP: window size; CUMULATE: max size; SESSION: gap. Microseconds.
    pub size_us: i64,
    /// HOP: slide; CUMULATE: step. Microseconds.
    pub step_us: Option<i64>,
    /// TUMBLE: offset of window starts from the epoch. Microseconds.
    pub offset_us: i64,
    /// SESSION: `PARTITION BY` columns.
    pub partition_by: Vec<String>,
}

/// The SQL after rewriting, and the windows it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// SQL DataFusion can plan.
    pub sql: String,
    /// The window TVFs, in order of appearance.
    pub windows: Vec<WindowTvf>,
}

/// A window TVF that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TvfError {
    /// What is wrong and what to write instead.
    pub message: String,
}

fn err(message: impl Into<String>) -> TvfError {
    TvfError {
        message: message.into(),
    }
}

/// Rewrites every window TVF in `sql`.
///
/// ```
/// use strata_engine::sql::window_tvf::{rewrite, WindowKind};
/// let r = rewrite(
///     "SELECT window_start, city, count(*) FROM TABLE(TUMBLE(TABLE deals, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end, city",
/// ).unwrap();
/// assert_eq!(r.windows[0].kind, WindowKind::Tumble);
/// assert_eq!(r.windows[0].size_us, 60_000_000);
/// assert!(r.sql.contains("strata_window_start(ts, 60000000, 0) AS window_start"));
/// ```
pub fn rewrite(sql: &str) -> Result<Rewritten, TvfError> {
    rewrite_as(sql, Assign::Slices)
}

/// What a HOP or CUMULATE row is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assign {
    /// Its slice, for an aggregation that merges slices per window.
    Slices,
    /// A copy per window it belongs to (window joins match whole windows).
    Windows,
}

/// Rewrites every window TVF in `sql`, HOP and CUMULATE as `assign` says.
pub fn rewrite_as(sql: &str, assign: Assign) -> Result<Rewritten, TvfError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .with_unescape(false)
        .tokenize()
        .map_err(|e| err(format!("SQL syntax error: {e}")))?;
    let mut out = String::with_capacity(sql.len() + 128);
    let mut windows = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if let Some((kind, open)) = tvf_start(&tokens, i) {
            let close = matching_paren(&tokens, open)
                .ok_or_else(|| err(format!("{kind}(...) has no closing parenthesis")))?;
            // TABLE( KIND( args ) ): the outer `)` follows the inner one.
            let outer_close = next_significant(&tokens, close + 1)
                .filter(|&j| tokens[j] == Token::RParen)
                .ok_or_else(|| {
                    err(format!(
                        "write TABLE({kind}(...)) with both closing parentheses"
                    ))
                })?;
            let args = split_args(&tokens[open + 1..close]);
            let tvf = parse_tvf(kind, &args)?;
            out.push_str(&subquery(&tvf, assign));
            // Keep the input's name as the alias unless the user gave one.
            if !has_alias(&tokens, outer_close + 1) {
                out.push_str(&format!(" AS {}", tvf.input));
            }
            windows.push(tvf);
            i = outer_close + 1;
        } else {
            out.push_str(&tokens[i].to_string());
            i += 1;
        }
    }
    Ok(Rewritten { sql: out, windows })
}

fn word(token: &Token) -> Option<&Word> {
    match token {
        Token::Word(w) => Some(w),
        _ => None,
    }
}

fn is_word(token: &Token, text: &str) -> bool {
    word(token).is_some_and(|w| w.value.eq_ignore_ascii_case(text))
}

fn next_significant(tokens: &[Token], from: usize) -> Option<usize> {
    (from..tokens.len()).find(|&j| !matches!(tokens[j], Token::Whitespace(_)))
}

/// At `TABLE ( KIND (`: the kind and the index of KIND's `(`.
fn tvf_start(tokens: &[Token], i: usize) -> Option<(WindowKind, usize)> {
    if !is_word(&tokens[i], "TABLE") {
        return None;
    }
    let lparen = next_significant(tokens, i + 1)?;
    if tokens[lparen] != Token::LParen {
        return None;
    }
    let name_at = next_significant(tokens, lparen + 1)?;
    let name = word(&tokens[name_at])?.value.to_ascii_uppercase();
    let kind = match name.as_str() {
        "TUMBLE" => WindowKind::Tumble,
        "HOP" => WindowKind::Hop,
        "CUMULATE" => WindowKind::Cumulate,
        "SESSION" => WindowKind::Session,
        _ => return None,
    };
    let open = next_significant(tokens, name_at + 1)?;
    (tokens[open] == Token::LParen).then_some((kind, open))
}

fn matching_paren(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in tokens.iter().enumerate().skip(open) {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// The tokens of each top-level argument, whitespace trimmed.
fn split_args(tokens: &[Token]) -> Vec<Vec<Token>> {
    let mut args = vec![Vec::new()];
    let mut depth = 0usize;
    for t in tokens {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Comma if depth == 0 => {
                args.push(Vec::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = args.last_mut() {
            last.push(t.clone());
        }
    }
    args.into_iter()
        .map(|a| {
            a.into_iter()
                .filter(|t| !matches!(t, Token::Whitespace(_)))
                .collect()
        })
        .collect()
}

fn text(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_tvf(kind: WindowKind, args: &[Vec<Token>]) -> Result<WindowTvf, TvfError> {
    let usage = match kind {
        WindowKind::Tumble => "TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE [, offset])",
        WindowKind::Hop => {
            "HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE /*slide*/, INTERVAL '5' MINUTE /*size*/)"
        }
        WindowKind::Cumulate => {
            "CUMULATE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE /*step*/, INTERVAL '1' HOUR /*max size*/)"
        }
        WindowKind::Session => {
            "SESSION(TABLE t [PARTITION BY (k1, k2)], DESCRIPTOR(ts), INTERVAL '10' MINUTE /*gap*/)"
        }
    };
    let bad = |what: &str| err(format!("{kind}: {what}; write {usage}"));
    if args.iter().flatten().any(|t| *t == Token::RArrow) {
        return Err(bad("named arguments (=>) are not supported"));
    }
    let (input, partition_by) =
        parse_table_arg(&args[0]).ok_or_else(|| bad("the first argument must be TABLE <name>"))?;
    let time_column = args
        .get(1)
        .and_then(|a| parse_descriptor(a))
        .ok_or_else(|| bad("the second argument must be DESCRIPTOR(<time column>)"))?;
    let interval = |n: usize, what: &str| -> Result<i64, TvfError> {
        let arg = args
            .get(n)
            .ok_or_else(|| bad(&format!("missing the {what}")))?;
        let us = parse_interval_us(arg).map_err(|e| bad(&format!("the {what} {e}")))?;
        if us <= 0 {
            return Err(bad(&format!("the {what} must be positive")));
        }
        Ok(us)
    };
    let expected_args = match kind {
        WindowKind::Tumble => 3..=4,
        WindowKind::Hop | WindowKind::Cumulate => 4..=4,
        WindowKind::Session => 3..=3,
    };
    if !expected_args.contains(&args.len()) {
        return Err(bad(&format!("{} arguments given", args.len())));
    }
    if !partition_by.is_empty() && kind != WindowKind::Session {
        return Err(bad("PARTITION BY belongs to SESSION only"));
    }
    let (size_us, step_us, offset_us) = match kind {
        WindowKind::Tumble => {
            let offset = if args.len() == 4 {
                parse_interval_us(&args[3]).map_err(|e| bad(&format!("the offset {e}")))?
            } else {
                0
            };
            (interval(2, "size")?, None, offset)
        }
        WindowKind::Hop => {
            let (slide, size) = (interval(2, "slide")?, interval(3, "size")?);
            if size % slide != 0 {
                return Err(bad("the size must be a whole multiple of the slide"));
            }
            (size, Some(slide), 0)
        }
        WindowKind::Cumulate => {
            let (step, max) = (interval(2, "step")?, interval(3, "max size")?);
            if max % step != 0 {
                return Err(bad("the max size must be a whole multiple of the step"));
            }
            (max, Some(step), 0)
        }
        WindowKind::Session => (interval(2, "gap")?, None, 0),
    };
    Ok(WindowTvf {
        kind,
        input,
        time_column,
        size_us,
        step_us,
        offset_us,
        partition_by,
    })
}

/// `TABLE name [PARTITION BY a | PARTITION BY (a, b)]`.
fn parse_table_arg(tokens: &[Token]) -> Option<(String, Vec<String>)> {
    let mut it = tokens.iter();
    if !is_word(it.next()?, "TABLE") {
        return None;
    }
    let mut name = word(it.next()?)?.value.clone();
    let rest: Vec<&Token> = it.collect();
    let mut rest = rest.as_slice();
    // A qualified name: schema.table.
    while let [Token::Period, Token::Word(w), tail @ ..] = rest {
        name = format!("{name}.{}", w.value);
        rest = tail;
    }
    let mut keys = Vec::new();
    match rest {
        [] => {}
        [p, b, tail @ ..] if is_word(p, "PARTITION") && is_word(b, "BY") => {
            for t in tail.iter().copied() {
                match t {
                    Token::Word(w) => keys.push(w.value.clone()),
                    Token::LParen | Token::RParen | Token::Comma => {}
                    _ => return None,
                }
            }
            if keys.is_empty() {
                return None;
            }
        }
        _ => return None,
    }
    Some((name, keys))
}

fn parse_descriptor(tokens: &[Token]) -> Option<String> {
    match tokens {
        [d, Token::LParen, Token::Word(col), Token::RParen] if is_word(d, "DESCRIPTOR") => {
            Some(col.value.clone())
        }
        _ => None,
    }
}

/// `INTERVAL '5' MINUTE`, `INTERVAL '5 minutes'`, `INTERVAL '1.5' SECOND`.
fn parse_interval_us(tokens: &[Token]) -> Result<i64, String> {
    let shown = text(tokens);
    let (value, unit) = match tokens {
        [i, Token::SingleQuotedString(v), Token::Word(u)] if is_word(i, "INTERVAL") => {
            (v.trim().to_string(), u.value.clone())
        }
        [i, Token::SingleQuotedString(v)] if is_word(i, "INTERVAL") => {
            let mut parts = v.split_whitespace();
            let n = parts.next().unwrap_or_default().to_string();
            let u = parts.next().unwrap_or_default().to_string();
            if parts.next().is_some() {
                return Err(format!("`{shown}` has more than a number and a unit"));
            }
            (n, u)
        }
        _ => {
            return Err(format!(
                "`{shown}` is not an interval like INTERVAL '1' MINUTE"
            ));
        }
    };
    let unit_us: f64 = match unit.to_ascii_lowercase().as_str() {
        "ms" | "millisecond" | "milliseconds" => 1_000.0,
        "s" | "sec" | "second" | "seconds" => 1_000_000.0,
        "min" | "minute" | "minutes" => 60_000_000.0,
        "h" | "hour" | "hours" => 3_600_000_000.0,
        "d" | "day" | "days" => 86_400_000_000.0,
        _ => {
            return Err(format!(
                "`{shown}` has unit `{unit}`; use MILLISECOND, SECOND, MINUTE, HOUR or DAY (months vary in length)"
            ));
        }
    };
    let n: f64 = value
        .parse()
        .map_err(|_| format!("`{shown}` does not start with a number"))?;
    Ok((n * unit_us).round() as i64)
}

/// Whether the tokens from `from` start with an alias (`AS x` or a bare
/// identifier that is not a keyword continuing the query).
fn has_alias(tokens: &[Token], from: usize) -> bool {
    let Some(j) = next_significant(tokens, from) else {
        return false;
    };
    match &tokens[j] {
        Token::Word(w) => {
            if w.value.eq_ignore_ascii_case("AS") {
                return true;
            }
            const CONTINUES: &[&str] = &[
                "WHERE",
                "GROUP",
                "ORDER",
                "LIMIT",
                "JOIN",
                "LEFT",
                "RIGHT",
                "INNER",
                "FULL",
                "CROSS",
                "ON",
                "UNION",
                "HAVING",
                "WINDOW",
                "QUALIFY",
                "NATURAL",
                "EXCEPT",
                "INTERSECT",
                "OFFSET",
                "FOR",
            ];
            !CONTINUES.iter().any(|k| w.value.eq_ignore_ascii_case(k))
        }
        _ => false,
    }
}

/// The subquery that assigns windows to the rows of `tvf.input`.
fn subquery(tvf: &WindowTvf, assign: Assign) -> String {
    let (t, ts, size) = (&tvf.input, &tvf.time_column, tvf.size_us);
    match tvf.kind {
        WindowKind::Tumble => format!(
            "(SELECT *, strata_window_start({ts}, {size}, {offset}) AS window_start, strata_window_end({ts}, {size}, {offset}) AS window_end FROM {t})",
            offset = tvf.offset_us
        ),
        WindowKind::Hop if assign == Assign::Windows => format!(
            "(SELECT *, strata_add_micros(window_start, {size}) AS window_end FROM (SELECT *, unnest(strata_hop_starts({ts}, {slide}, {size})) AS window_start FROM {t}))",
            slide = tvf.step_us.unwrap_or(size)
        ),
        WindowKind::Cumulate if assign == Assign::Windows => format!(
            "(SELECT *, strata_window_start({ts}, {size}, 0) AS window_start, unnest(strata_cumulate_ends({ts}, {step}, {size})) AS window_end FROM {t})",
            step = tvf.step_us.unwrap_or(size)
        ),
        // Overlapping windows: each row gets its slice (a TUMBLE of the
        // slide or step); the aggregation merges slices per window
        // (operators::slicing).
        WindowKind::Hop | WindowKind::Cumulate => format!(
            "(SELECT *, strata_window_start({ts}, {slice}, 0) AS window_start, strata_window_end({ts}, {slice}, 0) AS window_end FROM {t})",
            slice = tvf.step_us.unwrap_or(size)
        ),
        WindowKind::Session => {
            format!("(SELECT *, {ts} AS window_start, {ts} AS window_end FROM {t})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_four_kinds_parse() {
        let r = rewrite(
            "SELECT * FROM TABLE(HOP(TABLE d, DESCRIPTOR(ts), INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)) h \
             JOIN TABLE(CUMULATE(TABLE e, DESCRIPTOR(t2), INTERVAL '10 seconds', INTERVAL '1' MINUTE)) c ON true \
             JOIN TABLE(SESSION(TABLE f PARTITION BY (agent, client), DESCRIPTOR(ts), INTERVAL '30' SECOND)) s ON true",
        )
        .unwrap();
        let kinds: Vec<_> = r.windows.iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds,
            [WindowKind::Hop, WindowKind::Cumulate, WindowKind::Session]
        );
        assert_eq!(
            (r.windows[0].step_us, r.windows[0].size_us),
            (Some(60_000_000), 300_000_000)
        );
        assert_eq!(
            (r.windows[1].step_us, r.windows[1].size_us),
            (Some(10_000_000), 60_000_000)
        );
        assert_eq!(r.windows[2].partition_by, ["agent", "client"]);
        assert!(r.sql.contains(") h"), "{}", r.sql);
        assert!(!r.sql.contains(" AS d"), "user aliases are kept: {}", r.sql);
    }

    #[test]
    fn the_input_name_becomes_the_alias_when_there_is_none() {
        let r = rewrite("SELECT d.city FROM TABLE(TUMBLE(TABLE d, DESCRIPTOR(ts), INTERVAL '1' HOUR)) GROUP BY d.city").unwrap();
        assert!(r.sql.contains("FROM d) AS d GROUP BY"), "{}", r.sql);
    }

    #[test]
    fn quotes_inside_literals_survive_the_rewrite() {
        let r = rewrite(
            "SELECT window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE deals, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) WHERE agent <> 'O''Brien' GROUP BY window_start, window_end",
        )
        .unwrap();
        assert!(r.sql.contains("'O''Brien'"), "{}", r.sql);
    }

    #[test]
    fn strings_and_comments_are_left_alone() {
        let sql = "SELECT 'TABLE(TUMBLE(x))' -- TABLE(TUMBLE(\nFROM t";
        assert_eq!(rewrite(sql).unwrap().sql, sql);
    }

    #[test]
    fn mistakes_say_what_to_write() {
        for (sql, needle) in [
            (
                "FROM TABLE(TUMBLE(d, DESCRIPTOR(ts), INTERVAL '1' MINUTE))",
                "TABLE <name>",
            ),
            (
                "FROM TABLE(TUMBLE(TABLE d, ts, INTERVAL '1' MINUTE))",
                "DESCRIPTOR",
            ),
            (
                "FROM TABLE(TUMBLE(TABLE d, DESCRIPTOR(ts), INTERVAL '1' MONTH))",
                "months vary",
            ),
            (
                "FROM TABLE(HOP(TABLE d, DESCRIPTOR(ts), INTERVAL '2' MINUTE, INTERVAL '5' MINUTE))",
                "whole multiple",
            ),
            (
                "FROM TABLE(TUMBLE(TABLE d, DESCRIPTOR(ts)))",
                "write TUMBLE(TABLE t",
            ),
            (
                "FROM TABLE(TUMBLE(TABLE d PARTITION BY k, DESCRIPTOR(ts), INTERVAL '1' MINUTE))",
                "SESSION only",
            ),
        ] {
            let e = rewrite(sql).unwrap_err();
            assert!(e.message.contains(needle), "{sql}: {e}");
        }
    }

    #[test]
    fn intervals() {
        let p = |s: &str| {
            let toks = Tokenizer::new(&GenericDialect {}, s).tokenize().unwrap();
            let toks: Vec<Token> = toks
                .into_iter()
                .filter(|t| !matches!(t, Token::Whitespace(_)))
                .collect();
            parse_interval_us(&toks)
        };
        assert_eq!(p("INTERVAL '1' MINUTE"), Ok(60_000_000));
        assert_eq!(p("INTERVAL '1.5' SECOND"), Ok(1_500_000));
        assert_eq!(p("INTERVAL '2 hours'"), Ok(7_200_000_000));
        assert_eq!(p("INTERVAL '250' MILLISECOND"), Ok(250_000));
        assert!(p("5").is_err());
    }
}
