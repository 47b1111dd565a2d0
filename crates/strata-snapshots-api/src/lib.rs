//! containerd's snapshots gRPC API (`containerd.services.snapshots.v1`),
//! generated at build time from the `.proto` files of containerd v1.6.20
//! vendored under `proto/` (see `proto/README.md` for their origin and
//! licences). The module tree mirrors the protobuf packages, as the
//! generated code refers to `containerd.types.Mount` by relative path.
//!
//! Nothing here is hand-written beyond the re-exports: the snapshotter
//! implements [`SnapshotsServer`]'s trait, tests use [`SnapshotsClient`].
#![forbid(unsafe_code)]

/// The `containerd.*` protobuf packages.
pub mod containerd {
    /// `containerd.types`: the `Mount` message every snapshot call returns.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod types {
        tonic::include_proto!("containerd.types");
    }

    /// `containerd.services.*`.
    pub mod services {
        /// `containerd.services.snapshots`.
        pub mod snapshots {
            /// `containerd.services.snapshots.v1`: the `Snapshots` service.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v1 {
                tonic::include_proto!("containerd.services.snapshots.v1");
            }
        }
    }
}

pub use containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
pub use containerd::services::snapshots::v1::snapshots_server::{Snapshots, SnapshotsServer};
pub use containerd::services::snapshots::v1::*;
pub use containerd::types::Mount;
pub use {prost, prost_types, tonic};
