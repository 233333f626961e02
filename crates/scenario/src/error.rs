use std::fmt;

/// A problem with a scenario file or an injected action.
///
/// Every message names where (file, line, field path), the bad value in
/// single quotes, and what was expected, e.g.
/// `scenarios/x.toml:12: event[3].at: '90s' is after the scenario end '60s'`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: {reason}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// Not valid TOML, or not the shape of a scenario (unknown field, wrong
    /// type, missing section): stage one.
    #[error("{file}:{line}: {path}{message}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// Field path with a trailing `": "`, or empty when unknown.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A command-line flag that overrides or replaces a scenario file.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag, e.g. `--nodes`.
        flag: String,
        /// The bad value in quotes and what was expected.
        message: String,
    },
    /// Valid shape, invalid meaning: stage two.
    #[error("{file}:{line}: {path}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// Field path, e.g. `event[3].at`.
        path: String,
        /// The bad value in quotes and what was expected.
        message: String,
    },
}

/// All problems found in one file (validation does not stop at the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioErrors(pub Vec<ScenarioError>);

impl fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioErrors {}

impl From<ScenarioError> for ScenarioErrors {
    fn from(e: ScenarioError) -> Self {
        Self(vec![e])
    }
}

/// A text being validated: its name and where lines start.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) file: String,
    line_starts: Vec<usize>,
}

impl Source {
    pub(crate) fn new(file: &str, text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            file: file.to_owned(),
            line_starts,
        }
    }

    /// 1-based line of a byte offset.
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }

    pub(crate) fn invalid(
        &self,
        offset: usize,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> ScenarioError {
        ScenarioError::Invalid {
            file: self.file.clone(),
            line: self.line(offset),
            path: path.into(),
            message: message.into(),
        }
    }
}
