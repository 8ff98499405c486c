//! [`Error`]: what activities and orchestrators return when they fail, and what an
//! orchestrator receives when a task it awaits failed.
//!
//! Like `anyhow::Error`, it converts from any error type with `?`, which is why it does
//! not implement `std::error::Error` itself. It is stored in history as a
//! [`Failure`](durable_types::Failure): a kind, a message, optional JSON details and the
//! cause beneath it.

use durable_types::{Failure, FailureKind, Json};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

/// The kind of an [`Error`].
pub use durable_types::FailureKind as ErrorKind;

/// The error of an activity or orchestrator.
///
/// ```
/// use durable::Error;
/// fn parse(text: &str) -> Result<u64, Error> {
///     let n: u64 = text.parse()?; // any std error converts
///     if n == 0 {
///         return Err(Error::msg("zero is not allowed"));
///     }
///     Ok(n)
/// }
/// assert_eq!(parse("0").unwrap_err().message(), "zero is not allowed");
/// assert!(parse("x").is_err());
/// ```
#[derive(Clone)]
pub struct Error {
    failure: Box<Failure>,
}

impl Error {
    /// An application error with `message`.
    pub fn msg(message: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Application, message.to_string())
    }

    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            failure: Box::new(Failure::new(kind, message)),
        }
    }

    /// Attaches structured details, readable with [`Error::details`] after the error has
    /// crossed the history (for example, in the orchestrator that called the activity).
    ///
    /// If `details` cannot be serialized to JSON, the error keeps no details and its
    /// message says why, so the loss shows wherever the error is read.
    #[must_use]
    pub fn with_details(mut self, details: impl Serialize) -> Error {
        match Json::encode(&details) {
            Ok(details) => self.failure.details = Some(details),
            Err(error) => {
                self.failure.details = None;
                self.failure.message = format!(
                    "{} (its details were dropped: they cannot be serialized to JSON: {error})",
                    self.failure.message
                );
            }
        }
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.failure.kind
    }

    /// The error's message (without its causes).
    pub fn message(&self) -> &str {
        &self.failure.message
    }

    /// The structured details, decoded as `T`, if there are any and they decode.
    pub fn details<T: DeserializeOwned>(&self) -> Option<T> {
        self.failure.details.as_ref()?.decode().ok()
    }

    /// The error beneath this one: for an activity failure seen by an orchestrator, the
    /// activity's own error.
    pub fn cause(&self) -> Option<Error> {
        self.failure
            .cause
            .as_ref()
            .map(|cause| Error::from_failure((**cause).clone()))
    }

    /// The innermost cause (this error if it has none).
    pub fn root_cause(&self) -> Error {
        let mut failure = &*self.failure;
        while let Some(cause) = &failure.cause {
            failure = cause;
        }
        Error::from_failure(failure.clone())
    }

    /// Wraps a stored failure.
    pub fn from_failure(failure: Failure) -> Error {
        Error {
            failure: Box::new(failure),
        }
    }

    /// The stored form of this error.
    pub fn into_failure(self) -> Failure {
        *self.failure
    }

    /// The stored form of this error, by reference.
    pub fn as_failure(&self) -> &Failure {
        &self.failure
    }

    /// An error of `kind` whose cause is `cause`.
    pub(crate) fn caused_by(kind: ErrorKind, message: String, cause: Failure) -> Error {
        Error {
            failure: Box::new(Failure {
                kind,
                message,
                details: None,
                cause: Some(Box::new(cause)),
            }),
        }
    }
}

impl<E> From<E> for Error
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn from(error: E) -> Error {
        let error: Box<dyn std::error::Error + Send + Sync> = error.into();
        // Keep the source chain as causes, so the history shows the whole story.
        let mut chain = Vec::new();
        let mut source = error.source();
        while let Some(next) = source {
            chain.push(next.to_string());
            source = next.source();
        }
        let cause = chain.into_iter().rev().fold(None, |cause, message| {
            Some(Box::new(Failure {
                kind: FailureKind::Application,
                message,
                details: None,
                cause,
            }))
        });
        Error {
            failure: Box::new(Failure {
                kind: FailureKind::Application,
                message: error.to_string(),
                details: None,
                cause,
            }),
        }
    }
}

impl fmt::Display for Error {
    /// Shows the message followed by each cause's message, separated by `: `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.failure, f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.failure.kind, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("could not load config")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn source_chain_becomes_causes() {
        let error = Error::from(Outer(std::io::Error::other("disk on fire")));
        assert_eq!(error.message(), "could not load config");
        assert_eq!(error.cause().unwrap().message(), "disk on fire");
        assert_eq!(error.to_string(), "could not load config: disk on fire");
        assert_eq!(error.root_cause().message(), "disk on fire");
    }

    #[test]
    fn details_that_do_not_serialize_are_reported_in_the_message() {
        // A map with non-string keys has no JSON form.
        let details: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let error = Error::msg("declined").with_details(details);
        assert!(error.details::<serde_json::Value>().is_none());
        assert!(
            error
                .message()
                .starts_with("declined (its details were dropped"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn strings_and_details() {
        let error = Error::from("plain").with_details(vec![1, 2]);
        assert_eq!(error.kind(), ErrorKind::Application);
        assert_eq!(error.details::<Vec<u8>>(), Some(vec![1, 2]));
        assert_eq!(Error::from(String::from("owned")).message(), "owned");
    }
}
