//! A statement's shape, read from its tokens before anything parses it: its
//! length, how deeply its expressions can nest, and its placeholders.
//!
//! The parser limits nesting it recurses on (parentheses, NOT, CASE, calls),
//! but builds operator chains (`1+1+...`, `a OR b OR ...`, `x || x || ...`,
//! UNION chains) in a loop, into trees as deep as the chain is long; later
//! passes (dropping the tree, printing it, the optimizer, evaluation) recurse
//! on them and overflow any fixed stack. The tokenizer does not recurse, so
//! counting here bounds the depth before a deep tree exists: per
//! parenthesis, CASE or bracket level, the operators of each comma-separated
//! expression, plus the deepest level inside it, plus the level's JOINs and
//! set operations. That is never less than the depth of the tree the parser
//! would build, and chains that the planner joins together (the conditions
//! of WHERE, ON and HAVING, combined when filters are pushed down) are
//! counted together. Value lists (`IN (...)`) are walked recursively too,
//! but cheaply: they count one level per 16 values.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};
use tonic::Status;

/// Values of an `IN (...)` list that count as one level: a value costs
/// about a sixteenth of the stack an operator level does (measured: 2,500
/// values overflowed a 2 MiB stack, 20,000 an 8 MiB one; a 1,000-operator
/// chain needs 12 MiB, in a debug build).
const VALUES_PER_LEVEL: usize = 16;

/// What the server accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShapeLimits {
    /// Longest SQL text, in bytes.
    pub sql_bytes: usize,
    /// Deepest expression.
    pub expression_depth: usize,
}

/// A statement ready to plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shaped {
    /// The SQL with `?` placeholders numbered `$1`, `$2`, ...
    pub sql: String,
    /// How many parameters it takes (the highest `$n`).
    pub placeholders: usize,
    /// The bound on its expressions' depth.
    pub depth: usize,
}

/// Checks `sql` against `limits` and numbers its `?` placeholders.
pub(crate) fn shape(sql: &str, limits: ShapeLimits) -> Result<Shaped, Status> {
    if sql.len() > limits.sql_bytes {
        return Err(Status::invalid_argument(format!(
            "the statement is {} bytes; this server accepts statements up to {} bytes (serve.limits.sql_bytes)",
            sql.len(),
            limits.sql_bytes
        )));
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| Status::invalid_argument(format!("SQL syntax error: {e}")))?;
    let scan = scan(&tokens, limits.expression_depth);
    if scan.depth > limits.expression_depth {
        let at = scan
            .crossed_at
            .map(|l| {
                format!(
                    " (the limit is crossed at line {}, column {})",
                    l.line, l.column
                )
            })
            .unwrap_or_default();
        return Err(Status::invalid_argument(format!(
            "the statement nests expressions {} levels deep{at}; this server accepts {} (serve.limits.expression_depth). \
             Long chains of AND / OR / + / || count one level per operator: write `x IN (a, b, ...)` instead of many ORs, \
             or join with a table of the values",
            scan.depth, limits.expression_depth
        )));
    }
    let sql = if scan.questions > 0 {
        number_questions(&tokens)
    } else {
        sql.to_string()
    };
    Ok(Shaped {
        sql,
        placeholders: scan.questions.max(scan.highest_dollar),
        depth: scan.depth,
    })
}

/// The number of parameters `sql` (already numbered) takes: its highest
/// `$n`; 0 when it does not tokenize (planning reports that).
pub(crate) fn placeholder_count(sql: &str) -> usize {
    match Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() {
        Ok(tokens) => {
            let scan = scan(&tokens, usize::MAX);
            scan.questions.max(scan.highest_dollar)
        }
        Err(_) => 0,
    }
}

/// One parenthesis, bracket or CASE level of the statement.
#[derive(Default)]
struct Level {
    /// Operators in the current comma-separated expression.
    ops: usize,
    /// The deepest level opened inside the current expression.
    child: usize,
    /// The deepest expression finished at this level.
    best: usize,
    /// JOINs, comma joins and UNION / EXCEPT / INTERSECT at this level:
    /// the plan nests one level per each, whatever the commas.
    carry: usize,
    /// Between FROM and the next clause: commas are joins.
    in_from: bool,
    /// Opened by `IN (`: a value list, which planning and pruning walk
    /// recursively, one (small) frame per value.
    in_list: bool,
    /// Values of the list so far.
    values: usize,
}

impl Level {
    fn end_expression(&mut self) {
        self.best = self.best.max(self.ops + self.child);
        self.ops = 0;
        self.child = 0;
    }

    fn depth(&self) -> usize {
        self.best.max(self.ops + self.child) + self.carry
    }
}

struct Scan {
    depth: usize,
    crossed_at: Option<Location>,
    questions: usize,
    highest_dollar: usize,
}

fn scan(tokens: &[TokenWithSpan], limit: usize) -> Scan {
    let mut levels = Levels::default();
    let mut crossed_at = None;
    let mut questions = 0;
    let mut highest_dollar = 0;
    let mut previous_in = false;
    for t in tokens {
        if matches!(t.token, Token::Whitespace(_)) {
            continue;
        }
        let after_in = std::mem::replace(&mut previous_in, false);
        let mut operator = false;
        match &t.token {
            Token::LParen | Token::LBracket => levels.open(after_in),
            Token::RParen | Token::RBracket => levels.close(),
            Token::Comma => {
                let top = &mut levels.top;
                if top.in_list {
                    top.values += 1;
                    operator = top.values % VALUES_PER_LEVEL == 0;
                } else if top.in_from {
                    top.carry += 1;
                } else {
                    top.end_expression();
                }
            }
            Token::Placeholder(p) if p == "?" => questions += 1,
            Token::Placeholder(p) => {
                if let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                    highest_dollar = highest_dollar.max(n);
                }
            }
            Token::Word(w) => match w.keyword {
                Keyword::CASE => levels.open(false),
                Keyword::END => levels.close(),
                Keyword::WHEN | Keyword::THEN | Keyword::ELSE => levels.top.end_expression(),
                Keyword::SELECT | Keyword::WITH | Keyword::VALUES => {
                    let top = &mut levels.top;
                    // `IN (SELECT ...)` is a subquery, not a value list.
                    top.in_list = false;
                    top.in_from = false;
                    top.end_expression();
                }
                Keyword::FROM => {
                    let top = &mut levels.top;
                    top.end_expression();
                    top.in_from = true;
                }
                Keyword::WHERE | Keyword::HAVING | Keyword::ON | Keyword::USING => {
                    levels.top.in_from = false;
                }
                Keyword::GROUP
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::WINDOW
                | Keyword::QUALIFY => {
                    let top = &mut levels.top;
                    top.in_from = false;
                    top.end_expression();
                }
                Keyword::JOIN | Keyword::UNION | Keyword::EXCEPT | Keyword::INTERSECT => {
                    levels.top.carry += 1;
                }
                Keyword::IN => {
                    previous_in = true;
                    operator = true;
                }
                Keyword::AND
                | Keyword::OR
                | Keyword::XOR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::RLIKE
                | Keyword::REGEXP
                | Keyword::BETWEEN
                | Keyword::INTERVAL
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::OVERLAPS
                | Keyword::DIV
                | Keyword::ESCAPE
                | Keyword::EXISTS
                | Keyword::ANY
                | Keyword::ALL
                | Keyword::SOME => operator = true,
                _ => {}
            },
            other => operator = is_operator(other),
        }
        if operator {
            levels.top.ops += 1;
        }
        if crossed_at.is_none() && levels.path_depth() > limit {
            crossed_at = Some(t.span.start);
        }
    }
    while !levels.outer.is_empty() {
        levels.close();
    }
    Scan {
        depth: levels.top.depth(),
        crossed_at,
        questions,
        highest_dollar,
    }
}

/// The open levels: the innermost, and those around it.
#[derive(Default)]
struct Levels {
    top: Level,
    outer: Vec<Level>,
    /// What the outer levels add to the current expression's depth (kept
    /// as levels open and close: a statement of a million parentheses is
    /// scanned in linear time).
    outer_depth: usize,
}

impl Levels {
    fn open(&mut self, in_list: bool) {
        let inner = Level {
            in_list,
            ..Level::default()
        };
        let outer = std::mem::replace(&mut self.top, inner);
        self.outer_depth += outer.ops + outer.carry + 1;
        self.outer.push(outer);
    }

    /// Ends the innermost level; its depth, plus one for itself, counts in
    /// the expression that contains it. An unmatched closer is left to the
    /// parser to report.
    fn close(&mut self) {
        let Some(outer) = self.outer.pop() else {
            return;
        };
        self.outer_depth -= outer.ops + outer.carry + 1;
        let inner = std::mem::replace(&mut self.top, outer);
        self.top.child = self.top.child.max(inner.depth() + 1);
    }

    /// The depth of the expression being read, through every open level.
    fn path_depth(&self) -> usize {
        self.outer_depth + self.top.ops + self.top.carry
    }
}

/// Tokens that combine the expressions beside them (everything but names,
/// literals and punctuation).
fn is_operator(token: &Token) -> bool {
    !matches!(
        token,
        Token::EOF
            | Token::Word(_)
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Whitespace(_)
            | Token::Comma
            | Token::LParen
            | Token::RParen
            | Token::LBracket
            | Token::RBracket
            | Token::LBrace
            | Token::RBrace
            | Token::SemiColon
            | Token::Period
            | Token::Colon
            | Token::Placeholder(_)
    )
}

/// The statement again, with each `?` placeholder (outside literals and
/// comments, which the tokenizer already told apart) numbered `$1`, `$2`, ...
/// ODBC, JDBC and Python's DB-API (ADBC) write `?`; DataFusion reads `$n`.
fn number_questions(tokens: &[TokenWithSpan]) -> String {
    let mut next = 0;
    let mut out = String::new();
    for t in tokens {
        match &t.token {
            Token::Placeholder(p) if p == "?" => {
                next += 1;
                out.push_str(&format!("${next}"));
            }
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: ShapeLimits = ShapeLimits {
        sql_bytes: 1 << 20,
        expression_depth: 1 << 30,
    };

    fn depth(sql: &str) -> usize {
        shape(sql, OPEN).unwrap().depth
    }

    #[test]
    fn placeholders_are_numbered_outside_literals_and_comments() {
        let s = shape("SELECT '?' AS q FROM t WHERE a = ? AND b > ?", OPEN).unwrap();
        assert_eq!(s.sql, "SELECT '?' AS q FROM t WHERE a = $1 AND b > $2");
        assert_eq!(s.placeholders, 2);
        let s = shape("SELECT \"?\" , x -- what?\nFROM t WHERE y = ?", OPEN).unwrap();
        assert_eq!(s.sql, "SELECT \"?\" , x -- what?\nFROM t WHERE y = $1");
        assert_eq!(shape("SELECT $3, $1", OPEN).unwrap().placeholders, 3);
        assert_eq!(placeholder_count("SELECT $1 + $2"), 2);
    }

    #[test]
    fn chains_count_one_level_per_operator() {
        let chain =
            |op: &str, n: usize| format!("SELECT {}", vec!["1"; n].join(&format!(" {op} ")));
        assert_eq!(depth(&chain("+", 400)), 399);
        assert_eq!(depth(&chain("||", 250)), 249);
        assert_eq!(depth(&chain("OR", 2000)), 1999);
        // Comma-separated expressions are separate trees.
        assert_eq!(depth("SELECT a + b, c + d + e, f FROM t"), 2);
        // Parentheses and calls are levels of their own (the parser keeps
        // a node for each).
        assert_eq!(depth("SELECT a + (b + (c + d))"), 5);
        assert_eq!(depth("SELECT f(g(h(x)))"), 3);
        // A value list is walked recursively too, at a sixteenth of the cost.
        let list = format!("SELECT * FROM t WHERE x IN ({})", vec!["1"; 1600].join(","));
        assert!(depth(&list) >= 100, "{}", depth(&list));
        // A subquery is not a value list.
        assert_eq!(depth("SELECT * FROM t WHERE x IN (SELECT a, b FROM u)"), 2);
    }

    #[test]
    fn conditions_that_planning_combines_count_together() {
        let on = ["a.x = b.x"; 10].join(" AND ");
        let filter = ["a.y = 1"; 10].join(" AND ");
        let sql = format!("SELECT a.x FROM a JOIN b ON {on} WHERE {filter}");
        assert!(depth(&sql) >= 39, "{}", depth(&sql));
        let unions = vec!["SELECT 1"; 50].join(" UNION ALL ");
        assert!(depth(&unions) >= 49);
        let commas = format!("SELECT 1 FROM {}", vec!["t"; 30].join(", "));
        assert!(depth(&commas) >= 29);
    }

    #[test]
    fn case_branches_are_separate_expressions() {
        let branches: String = (0..500)
            .map(|i| format!(" WHEN x = {i} THEN 'v{i}'"))
            .collect();
        let sql = format!("SELECT CASE{branches} ELSE 'other' END FROM t");
        assert!(depth(&sql) <= 3, "{}", depth(&sql));
    }

    #[test]
    fn too_deep_or_too_long_is_an_invalid_argument_that_says_where() {
        let limits = ShapeLimits {
            sql_bytes: 100_000,
            expression_depth: 100,
        };
        let sql = format!("SELECT {}", vec!["1"; 400].join("+"));
        let e = shape(&sql, limits).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("399 levels deep"), "{}", e.message());
        assert!(e.message().contains("line 1, column"), "{}", e.message());
        let long = format!("SELECT '{}'", "x".repeat(200_000));
        let e = shape(&long, limits).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("sql_bytes"), "{}", e.message());
    }
}
