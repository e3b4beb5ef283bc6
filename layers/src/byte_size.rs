//! Sizes as people write them in config: `512MiB`, `1GiB`, `64KB`.

/// Parses `<number><unit>` with unit `B`, `KB`/`KiB`, `MB`/`MiB`,
/// `GB`/`GiB` or `TB`/`TiB` (case-insensitive; a bare integer is bytes).
/// Both spellings are binary (`1MB` = `1MiB` = 1,048,576 bytes), as memory
/// limits are everywhere else (DataFusion, JVM `-Xmx`).
///
/// ```
/// use strata_layers::parse_byte_size;
/// assert_eq!(parse_byte_size("512MiB"), Some(512 << 20));
/// assert_eq!(parse_byte_size("1.5 GiB"), Some(3 << 29));
/// assert_eq!(parse_byte_size("64kb"), Some(64 << 10));
/// assert_eq!(parse_byte_size("4096"), Some(4096));
/// assert_eq!(parse_byte_size("lots"), None);
/// ```
pub fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    let bytes = number * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}
