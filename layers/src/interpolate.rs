//! `${VAR}` and `${VAR:-default}` in warehouse files, so one file serves a
//! laptop, CI and production (the broker address, the storage root).

/// Replaces every `${NAME}` / `${NAME:-default}` in `text` using `lookup`.
/// Returns the name of the first variable that is unset and has no default.
///
/// ```
/// use strata_layers::interpolate;
/// let env = |k: &str| (k == "HOST").then(|| "kafka1".to_string());
/// assert_eq!(interpolate("${HOST}:9092", env), Ok("kafka1:9092".into()));
/// assert_eq!(interpolate("${PORT:-9092}", env), Ok("9092".into()));
/// assert_eq!(interpolate("${PORT}", env), Err("PORT".into()));
/// assert_eq!(interpolate("$$ and $x", env), Ok("$$ and $x".into()));
/// ```
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let inner = &rest[start + 2..start + len];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => return Err(name.to_string()),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
