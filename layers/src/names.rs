//! The rules for names Strata turns into identifiers.

use crate::diagnostic::Diagnostics;
use crate::node_reader::Located;

/// Warehouse, schema and layer names become table names, SQL identifiers
/// and directory names, so they keep to lower-case letters, digits and `_`
/// (SQL folds unquoted names to lower case).
pub(crate) fn check_name(d: &mut Diagnostics, name: &Located<String>, path: &str) {
    let lower = name.value.chars().all(|c| !c.is_ascii_uppercase());
    check_identifier_with(d, name, path, lower);
}

/// Field names are column names in Parquet, Delta and SQL: letters, digits
/// and `_`. Mixed case is allowed (JSON keys are often camelCase).
pub(crate) fn check_identifier(d: &mut Diagnostics, name: &Located<String>, path: &str) {
    check_identifier_with(d, name, path, true);
}

fn check_identifier_with(d: &mut Diagnostics, name: &Located<String>, path: &str, case_ok: bool) {
    let ok = case_ok
        && name
            .value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        let suggestion: String = name
            .value
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        d.error(
            name.pos,
            path,
            format!("`{}` is not a valid name", name.value),
            Some(format!(
                "use letters, digits and `_`, starting with a letter, e.g. `{suggestion}`"
            )),
        );
    }
}
