//! The plugin's error type and how each error travels back to dockerd: an
//! HTTP status and `{"Err": "..."}`. dockerd puts the endpoint's name in
//! front of the text itself, so messages start with the layer or the
//! request part that was wrong, never with the endpoint.

use std::io;
use std::path::PathBuf;

use strata_driver::DriverError;

/// An error from serving the plugin protocol.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The request could not be understood (malformed JSON, a body that is
    /// too large, a bad query string).
    #[error("bad request: {reason}")]
    BadRequest {
        /// What was wrong with it.
        reason: String,
    },
    /// A field the call needs was absent.
    #[error("bad request: missing field {field}")]
    MissingField {
        /// The field, as dockerd names it.
        field: &'static str,
    },
    /// The path names no endpoint of this plugin.
    #[error("unknown endpoint {path} (this plugin implements GraphDriver)")]
    UnknownEndpoint {
        /// The request path.
        path: String,
    },
    /// Every call of the protocol is a POST.
    #[error("method {method} not allowed (every plugin call is a POST)")]
    MethodNotAllowed {
        /// The method used.
        method: String,
    },
    /// A call that needs the driver came before `GraphDriver.Init`.
    #[error(
        "the plugin is not initialized: dockerd has not called GraphDriver.Init \
         (or start the plugin with --home)"
    )]
    NotInitialized,
    /// An `Init` option was malformed.
    #[error("init option {option:?}: {reason}")]
    BadOption {
        /// The option as given.
        option: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `Init` asked for something Strata cannot do.
    #[error("init: {reason}")]
    Unsupported {
        /// What and why.
        reason: String,
    },
    /// The `ApplyDiff` request body ended before the tar did, or could not
    /// be read.
    #[error("layer {id}: request body: {source}")]
    Body {
        /// The layer being applied.
        id: String,
        /// The transport error.
        #[source]
        source: io::Error,
    },
    /// The driver refused or failed the operation (the text names the
    /// layer and the cause).
    #[error(transparent)]
    Driver(Box<DriverError>),
    /// The socket or spec file could not be set up.
    #[error("{what} {path}: {source}")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// The socket or spec file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another process already serves the socket.
    #[error("{path}: another process is serving this socket")]
    SocketInUse {
        /// The socket.
        path: PathBuf,
    },
    /// The remembered `Init` could not be read or written.
    #[error("init state {path}: {reason}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A worker thread running a driver call died.
    #[error("internal error: {0}")]
    Internal(String),
}

impl PluginError {
    /// The HTTP status this error is sent with. dockerd only branches on
    /// 404 (for `Capabilities`), but a distinct status makes logs and other
    /// clients clearer.
    pub fn status(&self) -> u16 {
        match self {
            PluginError::BadRequest { .. }
            | PluginError::MissingField { .. }
            | PluginError::BadOption { .. }
            | PluginError::Body { .. } => 400,
            PluginError::UnknownEndpoint { .. } => 404,
            PluginError::MethodNotAllowed { .. } => 405,
            PluginError::NotInitialized => 503,
            PluginError::Unsupported { .. } => 501,
            PluginError::Driver(e) => match e.as_ref() {
                DriverError::InvalidId { .. }
                | DriverError::InvalidOption { .. }
                | DriverError::InvalidDigest { .. } => 400,
                DriverError::NotFound { .. } | DriverError::MissingParent { .. } => 404,
                DriverError::AlreadyExists { .. }
                | DriverError::HasChildren { .. }
                | DriverError::Busy { .. } => 409,
                DriverError::NotSupported { .. } => 501,
                _ => 500,
            },
            PluginError::Socket { .. }
            | PluginError::SocketInUse { .. }
            | PluginError::State { .. }
            | PluginError::Internal(_) => 500,
        }
    }
}

impl From<DriverError> for PluginError {
    fn from(e: DriverError) -> Self {
        // Boxed: a driver error is large, and every result here carries
        // this type.
        PluginError::Driver(Box::new(e))
    }
}
