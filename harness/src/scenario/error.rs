// A scenario that does not load: every problem found, each with file, line, column and JSON path;
// the first few are shown and the rest counted, and lists inside messages are capped the same way.

use std::fmt;
use std::path::PathBuf;

/// Problems shown one by one; the rest are counted ("… and 199,990 more").
pub const SHOWN: usize = 10;
/// Candidates searched for a "did you mean": past this many, none is offered (typo suggestions
/// must not make `ebb check` quadratic in a file with 500,000 names).
const SUGGEST_AMONG: usize = 1_000;

/// One thing wrong with a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column (bytes) of the offending value.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// JSON path of the offending value, e.g. `alerts[2].for`; empty for the whole file.
    pub path: String,
    pub message: String,
}

/// A scenario that does not load. Always the scenario's fault (or its file's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    /// The first problems found, at most [`SHOWN`].
    pub problems: Vec<Problem>,
    /// Problems found beyond those.
    pub more: usize,
}

impl ScenarioError {
    /// One problem with no position (the file itself: unreadable, too large).
    pub fn file(file: PathBuf, message: String) -> ScenarioError {
        let problem = Problem { line: None, column: None, path: String::new(), message };
        ScenarioError { file, problems: vec![problem], more: 0 }
    }

    /// Every problem found, shown or not.
    pub fn count(&self) -> usize {
        self.problems.len().saturating_add(self.more)
    }
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{file}")?;
            match (p.line, p.column) {
                (Some(l), Some(c)) => write!(f, ":{l}:{c}")?,
                (Some(l), None) => write!(f, ":{l}")?,
                _ => {}
            }
            if p.path.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": {}: {}", p.path, p.message)?;
            }
        }
        if self.more > 0 {
            write!(f, "\n{file}: … and {} more problem{}", thousands(self.more as u64), plural(self.more))?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioError {}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Problems found by the checks of meaning: the first [`SHOWN`] kept with their JSON path, the
/// rest only counted, so a file with 200,000 mistakes is checked in linear time and memory.
#[derive(Debug, Default)]
pub struct Problems {
    pub kept: Vec<(String, String)>,
    pub total: usize,
}

impl Problems {
    /// Records a problem at `path`; `message` is only built when the problem is shown.
    pub fn add(&mut self, path: impl Into<String>, message: impl FnOnce() -> String) {
        self.total = self.total.saturating_add(1);
        if self.kept.len() < SHOWN {
            self.kept.push((path.into(), message()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `a, b, c`, or the first [`SHOWN`] and `… and 499,990 more`; `none` for no names.
pub fn listing<'n>(names: impl ExactSizeIterator<Item = &'n str>) -> String {
    let total = names.len();
    if total == 0 {
        return "none".into();
    }
    let shown: Vec<&str> = names.take(SHOWN).collect();
    let mut out = shown.join(", ");
    if total > SHOWN {
        out.push_str(&format!(" … and {} more", thousands((total - SHOWN) as u64)));
    }
    out
}

/// The candidate closest to `got`, when it is close enough to be a typo and there are few
/// enough candidates to look.
pub fn nearest<'c>(got: &str, candidates: impl ExactSizeIterator<Item = &'c str>) -> Option<&'c str> {
    if candidates.len() > SUGGEST_AMONG {
        return None;
    }
    let (best, distance) = candidates.map(|c| (c, edit_distance(got, c))).min_by_key(|(_, d)| *d)?;
    (distance <= 2.max(got.chars().count() / 3) && distance > 0).then_some(best)
}

/// For serde's "unknown field `x`, expected one of `a`, `b`": the expected field closest to `x`,
/// when it is close enough to be a typo.
pub fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (got, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    nearest(got, candidates.into_iter()).map(str::to_string)
}

/// Levenshtein distance: enough for typo suggestions on short names (at most 63 characters,
/// longer ones are cut there so that one comparison stays cheap).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().take(64).collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().take(64).enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_get_the_nearest_known_one() {
        let serde = "unknown field `duraton`, expected one of `version`, `name`, `duration`, `seed`";
        assert_eq!(did_you_mean(serde).as_deref(), Some("duration"));
        let far = "unknown field `colour`, expected one of `version`, `name`";
        assert_eq!(did_you_mean(far), None);
        assert_eq!(did_you_mean("invalid type: string"), None);
    }

    #[test]
    fn long_lists_are_capped_and_counted() {
        let names: Vec<String> = (0..200_000).map(|i| format!("a{i}")).collect();
        let text = listing(names.iter().map(String::as_str));
        assert!(text.starts_with("a0, a1, ") && text.ends_with("a9 … and 199,990 more"), "{text}");
        assert_eq!(listing(["web", "api"].into_iter()), "web, api");
        assert_eq!(listing(std::iter::empty()), "none");
        assert_eq!(nearest("wbe", names.iter().map(String::as_str)), None, "too many to search");
        assert_eq!(nearest("wbe", ["web", "api"].into_iter()), Some("web"));
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn only_the_first_problems_are_kept_and_the_rest_counted() {
        let mut p = Problems::default();
        let mut built = 0;
        for i in 0..100_000 {
            p.add(format!("alerts[{i}]"), || {
                built += 1;
                "bad".into()
            });
        }
        assert_eq!((p.kept.len(), p.total, built), (SHOWN, 100_000, SHOWN));
    }
}
