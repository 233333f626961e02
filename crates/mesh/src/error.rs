use std::io;

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A socket or process operation failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// The broker sent bytes that are not valid MQTT for a client.
    #[error("MQTT protocol violation: {0}")]
    Protocol(String),
    /// A packet larger than allowed.
    #[error("MQTT packet of {size} bytes exceeds the limit of {max}")]
    PacketTooLarge {
        /// Announced size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// The broker refused the connection.
    #[error("broker refused the connection (CONNACK code {code})")]
    ConnectRefused {
        /// CONNACK return code.
        code: u8,
    },
    /// TLS failed: a handshake, a certificate, or a record.
    #[error("TLS: {0}")]
    Tls(String),
    /// The connection closed.
    #[error("connection closed by the broker")]
    ConnectionClosed,
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The broker (the embedded one, or an external one) could not be
    /// started, reached or kept running.
    #[error("broker: {0}")]
    Broker(String),
    /// A mosquitto for comparison could not be started.
    #[error("mosquitto: {0}")]
    Mosquitto(String),
    /// A configuration value is unusable.
    #[error("{field}: {reason}")]
    Config {
        /// The setting, e.g. `nodes`.
        field: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// Writing the report failed.
    #[error("report '{path}': {reason}")]
    Report {
        /// Where it was to be written.
        path: String,
        /// Why it failed.
        reason: String,
    },
}

impl MeshError {
    pub(crate) fn protocol(what: impl Into<String>) -> Self {
        Self::Protocol(what.into())
    }

    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
