// Why a command (or a static fault) was refused, with the HTTP status the control API answers.
// Messages are short, lower-case and name the field or cap involved.

/// A refused command. Nothing changes when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Malformed or meaningless input (400).
    #[error("{}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
    Invalid { field: String, message: String },
    /// Well-formed, but over a configured blast-radius cap (422).
    #[error("over cap: {0}")]
    OverCap(String),
    /// A fault with this id already exists (409).
    #[error("fault {0:?} already exists")]
    Conflict(String),
    /// No such fault, pool or route (404).
    #[error("{0}")]
    NotFound(String),
    /// Bad or missing signature, stale timestamp, or replayed request (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Method not allowed on this route (405).
    #[error("method {0} not allowed here")]
    Method(String),
    /// A transient failure on the proxy's side, such as contended shared data (503: retry).
    #[error("busy: {0}")]
    Busy(String),
    /// The control API is configured but out of service, such as with a refused key (503).
    #[error("control API off: {0}")]
    Off(String),
}

impl CommandError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        CommandError::Invalid { field: field.into(), message: message.into() }
    }

    pub fn over_cap(message: impl Into<String>) -> Self {
        CommandError::OverCap(message.into())
    }

    /// The control API's HTTP status for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            CommandError::Invalid { .. } => 400,
            CommandError::Unauthorized(_) => 401,
            CommandError::NotFound(_) => 404,
            CommandError::Method(_) => 405,
            CommandError::Conflict(_) => 409,
            CommandError::OverCap(_) => 422,
            CommandError::Busy(_) | CommandError::Off(_) => 503,
        }
    }
}
