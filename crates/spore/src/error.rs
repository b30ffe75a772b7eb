//! Errors of starting a context.

use std::borrow::Cow;
use std::time::Duration;

/// Why a context could not be started. Every variant names the context and
/// quotes what the target printed, so the cause can be acted on.
///
/// It serializes: an intermediate reports its own failure to start a context
/// as it is, and the caller gets it inside [`ConnectError::Via`].
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ConnectError {
    /// The program could not be started at all.
    #[error("failed to start {program} for {context}: {detail}")]
    Spawn {
        /// The context being started.
        context: String,
        /// The program that failed to start.
        program: String,
        /// The OS error.
        detail: String,
    },
    /// The target closed the stream before the handshake finished.
    #[error("{context}: EOF on stream during {stage}; last lines: {}", quote_lines(.last_lines))]
    Eof {
        /// The context being started.
        context: String,
        /// Which handshake step was waiting.
        stage: Cow<'static, str>,
        /// The last lines the target wrote to stdout/stderr.
        last_lines: Vec<String>,
    },
    /// The first stage ran but could not start the image; `reason` names
    /// every place it tried and why each failed.
    #[error("{context}: first stage failed: {reason}")]
    FirstStage {
        /// The context being started.
        context: String,
        /// The first stage's own report.
        reason: String,
    },
    /// No handshake within the connect timeout; the process was killed and reaped.
    #[error("{context}: timed out after {after:?} during {stage}; last lines: {}", quote_lines(.last_lines))]
    Timeout {
        /// The context being started.
        context: String,
        /// Which handshake step was waiting.
        stage: Cow<'static, str>,
        /// The configured connect timeout.
        after: Duration,
        /// The last lines the target wrote.
        last_lines: Vec<String>,
    },
    /// The target answered something that is not the spore handshake.
    #[error("{context}: protocol error during {stage}: {detail}")]
    Protocol {
        /// The context being started.
        context: String,
        /// Which handshake step.
        stage: Cow<'static, str>,
        /// What was received instead.
        detail: String,
    },
    /// The image cannot be shipped (unreadable, or dynamically linked for a
    /// target that needs a static image).
    #[error("{context}: {detail}")]
    Image {
        /// The context being started.
        context: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// The target's first stage reported another platform than the image's,
    /// and no image for its platform is registered; no image byte was sent.
    #[error(
        "{context}: the target runs {target} but the image is for {image}; nothing was sent. {detail}"
    )]
    PlatformMismatch {
        /// The context being started.
        context: String,
        /// The target's platform, `<os>-<arch>` as `uname -s`/`-m` print it.
        target: String,
        /// The image's platform.
        image: String,
        /// How to supply an image for the target.
        detail: String,
    },
    /// I/O with the new process failed.
    #[error("{context}: I/O error during {stage}: {detail}")]
    Io {
        /// The context being started.
        context: String,
        /// Which handshake step.
        stage: Cow<'static, str>,
        /// The OS error.
        detail: String,
    },
    /// The method needs a password (sudo's "a password is required") and
    /// none was given.
    #[error("{context}: {method} needs a password and none was given; last lines: {}", quote_lines(.last_lines))]
    PasswordRequired {
        /// The context being started.
        context: String,
        /// The method that asked (`sudo`).
        method: Cow<'static, str>,
        /// What the target printed.
        last_lines: Vec<String>,
    },
    /// The password given was refused: the method asked for it again.
    #[error("{context}: {method} refused the password given (it asked again); last lines: {}", quote_lines(.last_lines))]
    PasswordIncorrect {
        /// The context being started.
        context: String,
        /// The method that asked (`sudo`).
        method: Cow<'static, str>,
        /// What the target printed.
        last_lines: Vec<String>,
    },
    /// The method refused outright (sudo: unknown user, not in sudoers,
    /// not allowed to run the command).
    #[error("{context}: {reason}; last lines: {}", quote_lines(.last_lines))]
    Refused {
        /// The context being started.
        context: String,
        /// The method that refused.
        method: Cow<'static, str>,
        /// What was refused.
        reason: String,
        /// What the target printed.
        last_lines: Vec<String>,
    },
    /// ssh could not reach the target; `failure` says why, `last_lines`
    /// quote ssh.
    #[error("{context}: ssh: {failure}; last lines: {}", quote_lines(.last_lines))]
    Ssh {
        /// The context being started.
        context: String,
        /// What went wrong.
        failure: crate::SshFailure,
        /// What ssh printed.
        last_lines: Vec<String>,
    },
    /// The router was shut down while connecting.
    #[error("connect cancelled: {0}")]
    Aborted(String),
    /// No ID could be had for the new context (a child asks the master for
    /// blocks of IDs).
    #[error("no context ID for a new context of {context}: {detail}")]
    NoId {
        /// The context starting the new one.
        context: String,
        /// Why.
        detail: String,
    },
    /// Starting the context through `via` failed there: `cause` is the
    /// error `via` met (itself a `Via` for a deeper chain).
    #[error("through {via}: {cause}")]
    Via {
        /// The intermediate context.
        via: String,
        /// What went wrong there.
        cause: Box<ConnectError>,
    },
    /// An intermediate could not be asked to start a context (it was lost,
    /// or refused the request).
    #[error("could not ask {via} to start a context: {detail}")]
    Unreachable {
        /// The intermediate context.
        via: String,
        /// What went wrong.
        detail: String,
    },
}

fn quote_lines(lines: &[String]) -> String {
    if lines.is_empty() {
        "(none)".to_owned()
    } else {
        lines
            .iter()
            .map(|l| format!("{l:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
