//! Query errors as gRPC statuses a person can act on.
//!
//! BI tools show the status message as it is, so the message says what went
//! wrong in the user's terms: where the SQL stops parsing, which table names
//! are close to a misspelled one. The code says whose the problem is: the
//! statement's (INVALID_ARGUMENT: bad syntax, a division by zero, a failed
//! CAST, an unbound or surplus parameter), a limit's (RESOURCE_EXHAUSTED:
//! memory, generated rows), the storage's (UNAVAILABLE), or the server's own
//! (INTERNAL: a bug).

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use strata_schemas::closest;
use tonic::Status;

/// Maps a DataFusion error on `sql` to a status. `known_tables` are
/// qualified names (`ods.ods_deals`) for "did you mean" suggestions.
pub fn query_status(error: DataFusionError, sql: &str, known_tables: &[String]) -> Status {
    let root = error.find_root();
    // DataFusion reports a full spill directory as an I/O error.
    if root
        .to_string()
        .contains("disk space during the spilling process")
    {
        return Status::resource_exhausted(
            "the query needs more memory than it may use and more disk than it may spill to \
             (serve.limits.query_memory, serve.limits.spill); narrow it with filters or aggregate first",
        );
    }
    match root {
        DataFusionError::SQL(parser, _) => {
            let mut message = format!("SQL syntax error: {parser}");
            // The parser gives no position when the statement ends too
            // early; the end of the statement is the position.
            if !message.contains("Line:") && message.ends_with("found: EOF") {
                message.push_str(&format!(" at {}", end_position(sql)));
            }
            Status::invalid_argument(message)
        }
        DataFusionError::Plan(message) => match missing_table(message) {
            Some(name) => Status::not_found(not_found_message(name, known_tables)),
            None => Status::invalid_argument(message.clone()),
        },
        DataFusionError::SchemaError(e, _) => Status::invalid_argument(e.to_string()),
        DataFusionError::NotImplemented(m) => Status::unimplemented(format!("not supported: {m}")),
        DataFusionError::ResourcesExhausted(m) => Status::resource_exhausted(m.clone()),
        DataFusionError::ObjectStore(e) => Status::unavailable(format!("storage: {e}")),
        DataFusionError::IoError(e) => Status::unavailable(format!("storage: {e}")),
        DataFusionError::ArrowError(e, _) => arrow_status(e),
        // DataFusion reports bad values met while running (a function's
        // argument out of range, a string that does not parse) this way;
        // its own bugs are `Internal`.
        DataFusionError::Execution(m) | DataFusionError::Configuration(m) => {
            Status::invalid_argument(m.clone())
        }
        DataFusionError::External(e) => match e.downcast_ref::<ArrowError>() {
            Some(arrow) => arrow_status(arrow),
            None => Status::internal(root.to_string()),
        },
        other => Status::internal(other.to_string()),
    }
}

/// Arrow's errors while computing: mostly the data's or the statement's.
fn arrow_status(e: &ArrowError) -> Status {
    match e {
        ArrowError::DivideByZero
        | ArrowError::CastError(_)
        | ArrowError::ParseError(_)
        | ArrowError::InvalidArgumentError(_)
        | ArrowError::ComputeError(_)
        | ArrowError::ArithmeticOverflow(_)
        | ArrowError::SchemaError(_)
        | ArrowError::JsonError(_)
        | ArrowError::CsvError(_)
        | ArrowError::DictionaryKeyOverflowError
        | ArrowError::RunEndIndexOverflowError
        | ArrowError::OffsetOverflowError(_) => Status::invalid_argument(e.to_string()),
        ArrowError::MemoryError(_) => Status::resource_exhausted(e.to_string()),
        ArrowError::NotYetImplemented(m) => Status::unimplemented(format!("not supported: {m}")),
        ArrowError::IoError(..) => Status::unavailable(format!("storage: {e}")),
        _ => Status::internal(e.to_string()),
    }
}

/// `Line: L, Column: C` just past the last character of `sql`, in the
/// parser's format.
fn end_position(sql: &str) -> String {
    let trimmed = sql.trim_end();
    let line = trimmed.lines().count().max(1);
    let column = trimmed.lines().last().map_or(0, |l| l.chars().count()) + 1;
    format!("Line: {line}, Column: {column}")
}

/// The table named in DataFusion's "table '...' not found".
fn missing_table(message: &str) -> Option<&str> {
    let start = message.find("table '")? + "table '".len();
    let len = message[start..].find("' not found")?;
    Some(&message[start..start + len])
}

fn not_found_message(name: &str, known: &[String]) -> String {
    // Users write `ods_deals`, `ods.ods_deals` or `strata.ods.ods_deals`;
    // compare like with like.
    let wanted = name.strip_prefix("strata.").unwrap_or(name);
    let bare = |q: &str| q.rsplit('.').next().unwrap_or(q).to_string();
    let candidates: Vec<String> = if wanted.contains('.') {
        known.to_vec()
    } else {
        known.iter().map(|q| bare(q)).collect()
    };
    let hint = match closest(wanted, candidates.iter().map(String::as_str)) {
        Some(near) => {
            let qualified = known
                .iter()
                .find(|q| q.as_str() == near || bare(q) == near)
                .map_or(near, String::as_str);
            format!("did you mean `{qualified}`?")
        }
        None if known.is_empty() => {
            "the warehouse has no tables yet: they appear when their layer first commits".into()
        }
        None => format!("tables: {}", known.join(", ")),
    };
    format!("table `{name}` not found; {hint}")
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::parser::ParserError;

    use super::*;

    fn known() -> Vec<String> {
        vec![
            "ods.ods_deals".into(),
            "ods.ods_deals_dead_letter".into(),
            "ads.gmv_by_city".into(),
        ]
    }

    #[test]
    fn unknown_tables_are_not_found_with_the_closest_name() {
        let e = DataFusionError::Plan("table 'strata.ods.ods_deal' not found".into());
        let s = query_status(e, "SELECT 1", &known());
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert!(
            s.message().contains("did you mean `ods.ods_deals`?"),
            "{}",
            s.message()
        );

        let e = DataFusionError::Plan("table 'gmv_by_cty' not found".into());
        let s = query_status(e, "SELECT 1", &known());
        assert!(s.message().contains("`ads.gmv_by_city`"), "{}", s.message());

        let e = DataFusionError::Plan("table 'zzz' not found".into());
        let s = query_status(e, "SELECT 1", &known());
        assert!(
            s.message().contains("tables: ods.ods_deals"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn syntax_errors_are_invalid_arguments_with_the_position() {
        let e = DataFusionError::SQL(
            Box::new(ParserError::ParserError(
                "Expected: an expression, found: FROM at Line: 1, Column: 8".into(),
            )),
            None,
        );
        let s = query_status(e, "SELECT 1", &known());
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message().contains("Line: 1, Column: 8"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn the_statements_mistakes_are_invalid_arguments_and_bugs_internal() {
        let cases = [
            (
                DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None),
                tonic::Code::InvalidArgument,
            ),
            (
                DataFusionError::ArrowError(
                    Box::new(ArrowError::CastError("Cannot cast string 'abc'".into())),
                    None,
                ),
                tonic::Code::InvalidArgument,
            ),
            (
                DataFusionError::Context(
                    "while running".into(),
                    Box::new(DataFusionError::Execution("bad regex".into())),
                ),
                tonic::Code::InvalidArgument,
            ),
            (
                DataFusionError::ResourcesExhausted("memory".into()),
                tonic::Code::ResourceExhausted,
            ),
            (
                DataFusionError::Internal("a bug".into()),
                tonic::Code::Internal,
            ),
            (
                DataFusionError::IoError(std::io::Error::other(
                    "The used disk space during the spilling process has exceeded the allowable limit of 256.0 MB.",
                )),
                tonic::Code::ResourceExhausted,
            ),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            let s = query_status(e, "SELECT 1", &known());
            assert_eq!(s.code(), code, "{text}");
        }
    }

    #[test]
    fn a_statement_that_ends_too_early_points_at_its_end() {
        let e = DataFusionError::SQL(
            Box::new(ParserError::ParserError(
                "Expected: an expression, found: EOF".into(),
            )),
            None,
        );
        let s = query_status(e, "SELECT x\nFROM t WHERE  ", &known());
        assert!(
            s.message().ends_with("found: EOF at Line: 2, Column: 13"),
            "{}",
            s.message()
        );
    }
}
