use crate::envelope::Principal;

/// Everything that can go wrong turning bytes into a message or back.
///
/// Every variant is an expected outcome for bytes from an untrusted peer; none
/// of them is a bug in the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input is longer than any valid message.
    #[error("message is {len} bytes; the limit is {max}")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// Largest accepted length ([`crate::envelope::MAX_MESSAGE_BYTES`]).
        max: usize,
    },
    /// The input ended before a complete message.
    #[error("message is truncated ({len} bytes)")]
    Truncated {
        /// Length of the input.
        len: usize,
    },
    /// The first byte names a wire version this build does not speak.
    #[error("unsupported wire version {found}; this build speaks version {supported}")]
    UnsupportedVersion {
        /// Version byte found.
        found: u8,
        /// Version this build speaks ([`crate::WIRE_VERSION`]).
        supported: u8,
    },
    /// The body is not a valid postcard encoding of a [`crate::Body`].
    #[error("malformed message body: {0}")]
    Malformed(postcard::Error),
    /// Bytes were left over between the body and the authentication tag.
    #[error("{len} unexpected bytes after the message body")]
    TrailingBytes {
        /// Number of left-over bytes.
        len: usize,
    },
    /// The body decoded but breaks a rule of the protocol.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Field path, e.g. `batch.samples[3].seq`.
        field: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// Nobody holds a key for the claimed sender.
    #[error("no key is known for {0}")]
    UnknownSender(Principal),
    /// The message does not open: forged, altered, sealed with another
    /// key, or sent on a topic it was not sealed for.
    #[error(
        "a message claiming to be from {0} does not authenticate: forged, altered, or moved to another topic"
    )]
    BadTag(Principal),
    /// The sealed body names another sender than its header: a key holder
    /// speaking for someone else.
    #[error("a message sealed by {header} speaks for {body}")]
    Misattributed {
        /// The sender in the header (whose key sealed it).
        header: Principal,
        /// The sender the body names.
        body: Principal,
    },
}

impl WireError {
    /// Every name [`WireError::kind`] gives, so a count read back from a
    /// file (a shard's part) finds its kind again.
    pub const KINDS: [&'static str; 9] = [
        "too_large",
        "truncated",
        "unsupported_version",
        "malformed",
        "trailing_bytes",
        "invalid",
        "unknown_sender",
        "bad_tag",
        "misattributed",
    ];

    /// A short, stable name for the kind of error, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Truncated { .. } => "truncated",
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::Malformed(_) => "malformed",
            Self::TrailingBytes { .. } => "trailing_bytes",
            Self::Invalid { .. } => "invalid",
            Self::UnknownSender(_) => "unknown_sender",
            Self::BadTag(_) => "bad_tag",
            Self::Misattributed { .. } => "misattributed",
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
