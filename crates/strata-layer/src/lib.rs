//! Layer content operations for Strata: applying a layer tar onto a layer
//! root ([`Applier`], [`apply_tar`]), with every path resolved inside the
//! root so that nothing a hostile archive says can reach outside it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod apply;
mod changes;
mod error;
mod export;
mod export_error;

pub use apply::{
    Applier, ApplyOptions, ApplyStats, WhiteoutMode, apply_entries, apply_recorded, apply_tar,
};
pub use changes::{Change, ChangeKind, CompareOptions, changes, changes_size};
pub use error::{ApplyError, Problem};
pub use export::{ExportItem, ExportStats, export_diff, export_items, header_for};
pub use export_error::ExportError;
