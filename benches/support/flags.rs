//! `--name value` flags for bench binaries (`cargo bench` adds `--bench`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;

/// The flags a bench was given.
pub struct Flags(HashMap<String, String>);

impl Flags {
    /// Parses the process arguments; only names in `known` are accepted.
    pub fn parse(known: &[&str]) -> Result<Self, String> {
        let mut flags = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--bench" {
                continue;
            }
            let name = flag.trim_start_matches("--");
            if !known.contains(&name) {
                let usage: Vec<String> = known.iter().map(|k| format!("--{k} VALUE")).collect();
                return Err(format!("unknown argument {flag}; use {}", usage.join(" ")));
            }
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            flags.insert(name.to_string(), value);
        }
        Ok(Flags(flags))
    }

    /// A bench's arguments, which `build` reads from the flags in `known`;
    /// a bad flag is printed and gives `None` (the bench then fails).
    pub fn args<T>(known: &[&str], build: impl FnOnce(&Flags) -> Result<T, String>) -> Option<T> {
        match Flags::parse(known).and_then(|flags| build(&flags)) {
            Ok(args) => Some(args),
            Err(e) => {
                eprintln!("{e}");
                None
            }
        }
    }

    /// The value of `--name`, or `default`.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(name) {
            Some(v) => v.parse().map_err(|e| format!("--{name} {v}: {e}")),
            None => Ok(default),
        }
    }

    /// The value of `--name` as text, if given.
    pub fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    /// `--strata PATH`, or this build's `strata`: another build under the
    /// same load gives before/after figures.
    pub fn strata(&self) -> PathBuf {
        self.text("strata").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_strata")),
            PathBuf::from,
        )
    }
}
