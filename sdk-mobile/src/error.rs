//! The one error type Kotlin and Swift see.

use tidings::ClientError;

/// Every failure of a Tidings call, grouped by what the app does about it. Each variant
/// carries the stable `code` of the core (`tidings::ClientError::code()`, e.g.
/// `invalid_channel`, `outbox_full`, `unauthorized`, `connection_failed`, `closed`) and a
/// human-readable `detail`.
///
/// Kotlin: `TidingsException.Connection(code, detail)` etc. (all subclasses of
/// `TidingsException`, with `.code`); Swift: `TidingsError.connection(code:detail:)`, with
/// `.code` from `Tidings+Async.swift`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum TidingsError {
    /// The call's arguments are wrong (`invalid_channel`, `publish_to_pattern`,
    /// `invalid_event`, `frame_too_large`, `too_many_channels`, `invalid_json`,
    /// `invalid_config`): fix the call, retrying will not help.
    #[error("{code}: {detail}")]
    InvalidArgument {
        /// Stable code.
        code: String,
        /// What is wrong.
        detail: String,
    },
    /// About a queued message (`outbox_full`, `unknown_message`, `not_cancellable`,
    /// `expired`, `cancelled`, `overflow`, `user_mismatch`).
    #[error("{code}: {detail}")]
    Outbox {
        /// Stable code.
        code: String,
        /// What happened.
        detail: String,
    },
    /// Authentication (`unauthorized`, `token_expired`, `forbidden`, `token_provider`):
    /// get the user a new token (or sign them in again).
    #[error("{code}: {detail}")]
    Auth {
        /// Stable code.
        code: String,
        /// What happened.
        detail: String,
    },
    /// The connection failed for good (`connection_failed`, `unsupported_version`) or the
    /// client is closed (`closed`).
    #[error("{code}: {detail}")]
    Connection {
        /// Stable code.
        code: String,
        /// What happened.
        detail: String,
    },
    /// The server refused or failed (`rate_limited`, `internal`, `shutting_down`, ...).
    #[error("{code}: {detail}")]
    Server {
        /// Stable protocol code.
        code: String,
        /// The server's message.
        detail: String,
        /// Whether the same request may succeed later.
        temporary: bool,
        /// Advised wait before retrying (for `rate_limited`).
        retry_after_ms: Option<u64>,
    },
    /// The SQLite store could not be opened or written (`store`).
    #[error("{code}: {detail}")]
    Store {
        /// Stable code.
        code: String,
        /// What failed.
        detail: String,
    },
}

impl TidingsError {
    /// The stable code of any variant.
    pub fn code(&self) -> &str {
        match self {
            Self::InvalidArgument { code, .. }
            | Self::Outbox { code, .. }
            | Self::Auth { code, .. }
            | Self::Connection { code, .. }
            | Self::Server { code, .. }
            | Self::Store { code, .. } => code,
        }
    }

    /// The human-readable detail of any variant.
    pub fn detail(&self) -> &str {
        match self {
            Self::InvalidArgument { detail, .. }
            | Self::Outbox { detail, .. }
            | Self::Auth { detail, .. }
            | Self::Connection { detail, .. }
            | Self::Server { detail, .. }
            | Self::Store { detail, .. } => detail,
        }
    }

    pub(crate) fn invalid_json(what: &str, e: serde_json::Error) -> Self {
        Self::InvalidArgument {
            code: "invalid_json".into(),
            detail: format!("{what} is not valid JSON: {e}"),
        }
    }

    pub(crate) fn store(detail: impl Into<String>) -> Self {
        Self::Store {
            code: "store".into(),
            detail: detail.into(),
        }
    }
}

impl From<ClientError> for TidingsError {
    fn from(error: ClientError) -> Self {
        let code = error.code().to_owned();
        let detail = error.to_string();
        match &error {
            ClientError::InvalidChannel { .. }
            | ClientError::PublishToPattern(_)
            | ClientError::InvalidEvent
            | ClientError::InvalidMessageId(_)
            | ClientError::FrameTooLarge { .. }
            | ClientError::TooManyChannels(_) => Self::InvalidArgument { code, detail },
            ClientError::OutboxFull(_)
            | ClientError::UnknownMessage(_)
            | ClientError::NotCancellable(_)
            | ClientError::Expired { .. }
            | ClientError::Cancelled
            | ClientError::Overflow
            | ClientError::UserMismatch => Self::Outbox { code, detail },
            ClientError::TokenProvider(_) => Self::Auth { code, detail },
            ClientError::ConnectionFailed { .. } | ClientError::Closed => {
                Self::Connection { code, detail }
            }
            ClientError::Server {
                code: server_code,
                message,
                temporary,
                retry_after_ms,
            } => {
                use tidings::ErrorCode;
                match server_code {
                    ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::Forbidden => {
                        Self::Auth {
                            code,
                            detail: message.clone(),
                        }
                    }
                    ErrorCode::BadRequest
                    | ErrorCode::FrameTooLarge
                    | ErrorCode::TooManyChannels => Self::InvalidArgument {
                        code,
                        detail: message.clone(),
                    },
                    ErrorCode::UnsupportedVersion => Self::Connection {
                        code,
                        detail: message.clone(),
                    },
                    _ => Self::Server {
                        code,
                        detail: message.clone(),
                        temporary: *temporary,
                        retry_after_ms: *retry_after_ms,
                    },
                }
            }
        }
    }
}

/// A foreign callback (token provider) threw something that is not a `TidingsError`.
impl From<uniffi::UnexpectedUniFFICallbackError> for TidingsError {
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Auth {
            code: "token_provider".into(),
            detail: error.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_survive_the_mapping() {
        let cases = [
            (ClientError::InvalidEvent, "invalid_event"),
            (ClientError::OutboxFull(3), "outbox_full"),
            (ClientError::Closed, "closed"),
            (ClientError::TokenProvider("x".into()), "token_provider"),
            (
                ClientError::ConnectionFailed {
                    reason: "gave_up".into(),
                    message: "m".into(),
                },
                "connection_failed",
            ),
            (
                ClientError::Server {
                    code: tidings::ErrorCode::RateLimited,
                    message: "slow down".into(),
                    temporary: true,
                    retry_after_ms: Some(250),
                },
                "rate_limited",
            ),
            (
                ClientError::Server {
                    code: tidings::ErrorCode::Forbidden,
                    message: "no".into(),
                    temporary: false,
                    retry_after_ms: None,
                },
                "forbidden",
            ),
        ];
        for (error, code) in cases {
            let mapped = TidingsError::from(error.clone());
            assert_eq!(mapped.code(), code, "{error:?}");
            assert_eq!(mapped.code(), error.code());
        }
        assert!(matches!(
            TidingsError::from(ClientError::Server {
                code: tidings::ErrorCode::RateLimited,
                message: "slow down".into(),
                temporary: true,
                retry_after_ms: Some(250),
            }),
            TidingsError::Server {
                temporary: true,
                retry_after_ms: Some(250),
                ..
            }
        ));
        assert!(matches!(
            TidingsError::from(ClientError::Cancelled),
            TidingsError::Outbox { .. }
        ));
    }
}
