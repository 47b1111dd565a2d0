//! The `containerd.services.snapshots.v1.Snapshots` gRPC service: decodes
//! each request, runs the [`Snapshotter`] call on tokio's blocking pool
//! (it does filesystem and database work) and encodes the answer or the
//! error's gRPC code. The `snapshotter` field of requests is not checked:
//! containerd sends the name the proxy plugin was given in its config.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use strata_snapshots_api as api;
use strata_snapshots_api::prost::Message;
use strata_snapshots_api::prost_types::Timestamp;
use strata_snapshots_api::tonic::{self, Request, Response, Status};
use tokio_stream::Stream;

use crate::error::SnapshotError;
use crate::model::{Info, Kind, Mount};
use crate::snapshotter::Snapshotter;

/// Most infos in one `List` message (containerd's own batch size).
const LIST_BATCH: usize = 100;
/// Encoded bytes after which a `List` message is sent early, far below
/// gRPC's default 4 MiB message limit even with large labels.
const LIST_BATCH_BYTES: usize = 1 << 20;

/// The gRPC service over a [`Snapshotter`].
#[derive(Clone, Debug)]
pub struct Service {
    snap: Arc<Snapshotter>,
}

impl Service {
    /// A service answering from `snap`.
    pub fn new(snap: Arc<Snapshotter>) -> Self {
        Service { snap }
    }

    /// Runs `f` on the blocking pool; logs failures with the call's name.
    async fn run<T: Send + 'static>(
        &self,
        call: &'static str,
        key: String,
        f: impl FnOnce(&Snapshotter) -> Result<T, SnapshotError> + Send + 'static,
    ) -> Result<T, Status> {
        let snap = Arc::clone(&self.snap);
        let start = Instant::now();
        let r = tokio::task::spawn_blocking(move || f(&snap))
            .await
            .map_err(|e| Status::internal(format!("{call} {key:?}: worker failed: {e}")))?;
        finish(call, &key, start, r)
    }

    /// Runs `f` on the calling task: for lookups that only read the
    /// database's read connection (microseconds, never waiting for a
    /// writer), where handing over to the blocking pool would cost more
    /// than the call.
    fn now<T>(
        &self,
        call: &'static str,
        key: &str,
        f: impl FnOnce(&Snapshotter) -> Result<T, SnapshotError>,
    ) -> Result<T, Status> {
        let start = Instant::now();
        finish(call, key, start, f(&self.snap))
    }
}

/// Logs the outcome of a call (debug; internal failures as warnings) and
/// turns its error into the gRPC status.
fn finish<T>(
    call: &'static str,
    key: &str,
    start: Instant,
    r: Result<T, SnapshotError>,
) -> Result<T, Status> {
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    match r {
        Ok(v) => {
            tracing::debug!(call, key, ms, "ok");
            Ok(v)
        }
        Err(e) => {
            let status = Status::from(e);
            if status.code() == tonic::Code::Internal {
                tracing::warn!(call, key, ms, error = status.message(), "failed");
            } else {
                tracing::debug!(call, key, ms, code = ?status.code(), error = status.message(), "refused");
            }
            Err(status)
        }
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        },
        Err(e) => {
            // Before the epoch: seconds down, nanos up, as protobuf wants.
            let d = e.duration();
            let mut t = Timestamp {
                seconds: -(d.as_secs() as i64),
                nanos: -(d.subsec_nanos() as i32),
            };
            t.normalize();
            t
        }
    }
}

fn to_proto_info(i: Info) -> api::Info {
    api::Info {
        name: i.name,
        parent: i.parent,
        kind: i.kind.number(),
        created_at: Some(timestamp(i.created)),
        updated_at: Some(timestamp(i.updated)),
        labels: i.labels.into_iter().collect(),
    }
}

fn to_proto_mounts(m: Vec<Mount>) -> Vec<api::Mount> {
    m.into_iter()
        .map(|m| api::Mount {
            r#type: m.fstype,
            source: m.source,
            target: String::new(),
            options: m.options,
        })
        .collect()
}

/// Splits `infos` into `List` messages.
fn batches(infos: Vec<Info>) -> Vec<api::ListSnapshotsResponse> {
    let mut out = Vec::new();
    let mut cur = api::ListSnapshotsResponse::default();
    let mut bytes = 0;
    for i in infos {
        let i = to_proto_info(i);
        let len = i.encoded_len();
        if !cur.info.is_empty() && (cur.info.len() == LIST_BATCH || bytes + len > LIST_BATCH_BYTES)
        {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += len;
        cur.info.push(i);
    }
    if !cur.info.is_empty() {
        out.push(cur);
    }
    out
}

/// The stream `List` answers with.
pub type ListStream =
    Pin<Box<dyn Stream<Item = Result<api::ListSnapshotsResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl api::Snapshots for Service {
    async fn prepare(
        &self,
        request: Request<api::PrepareSnapshotRequest>,
    ) -> Result<Response<api::PrepareSnapshotResponse>, Status> {
        let r = request.into_inner();
        let mounts = self
            .run("Prepare", r.key.clone(), move |s| {
                s.prepare(&r.key, &r.parent, r.labels.into_iter().collect())
            })
            .await?;
        Ok(Response::new(api::PrepareSnapshotResponse {
            mounts: to_proto_mounts(mounts),
        }))
    }

    async fn view(
        &self,
        request: Request<api::ViewSnapshotRequest>,
    ) -> Result<Response<api::ViewSnapshotResponse>, Status> {
        let r = request.into_inner();
        let mounts = self
            .run("View", r.key.clone(), move |s| {
                s.view(&r.key, &r.parent, r.labels.into_iter().collect())
            })
            .await?;
        Ok(Response::new(api::ViewSnapshotResponse {
            mounts: to_proto_mounts(mounts),
        }))
    }

    async fn mounts(
        &self,
        request: Request<api::MountsRequest>,
    ) -> Result<Response<api::MountsResponse>, Status> {
        let r = request.into_inner();
        let mounts = self
            .run("Mounts", r.key.clone(), move |s| s.mounts(&r.key))
            .await?;
        Ok(Response::new(api::MountsResponse {
            mounts: to_proto_mounts(mounts),
        }))
    }

    async fn commit(
        &self,
        request: Request<api::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        self.run("Commit", r.key.clone(), move |s| {
            s.commit(&r.name, &r.key, r.labels.into_iter().collect())
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        request: Request<api::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let pending = self
            .run("Remove", r.key.clone(), move |s| s.remove_later(&r.key))
            .await?;
        // Answered first: containerd's collector waits on each Remove with
        // its snapshotter locked. Cleanup, which it calls next, finishes
        // any removal still under way (the layer's lock orders the two).
        tokio::task::spawn_blocking(move || pending.run());
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        request: Request<api::StatSnapshotRequest>,
    ) -> Result<Response<api::StatSnapshotResponse>, Status> {
        let r = request.into_inner();
        let info = self.now("Stat", &r.key, |s| s.stat(&r.key))?;
        Ok(Response::new(api::StatSnapshotResponse {
            info: Some(to_proto_info(info)),
        }))
    }

    async fn update(
        &self,
        request: Request<api::UpdateSnapshotRequest>,
    ) -> Result<Response<api::UpdateSnapshotResponse>, Status> {
        let r = request.into_inner();
        let Some(info) = r.info else {
            return Err(Status::invalid_argument("Update: the request has no info"));
        };
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let given = Info {
            name: info.name,
            parent: info.parent,
            kind: Kind::from_number(info.kind.into()).unwrap_or(Kind::View),
            created: UNIX_EPOCH,
            updated: UNIX_EPOCH,
            labels: info.labels.into_iter().collect(),
        };
        let info = self
            .run("Update", given.name.clone(), move |s| {
                s.update(given, &paths)
            })
            .await?;
        Ok(Response::new(api::UpdateSnapshotResponse {
            info: Some(to_proto_info(info)),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        request: Request<api::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let r = request.into_inner();
        let shown = r.filters.join(" | ");
        let infos = self.run("List", shown, move |s| s.list(&r.filters)).await?;
        let stream = tokio_stream::iter(batches(infos).into_iter().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn usage(
        &self,
        request: Request<api::UsageRequest>,
    ) -> Result<Response<api::UsageResponse>, Status> {
        let r = request.into_inner();
        let u = self
            .run("Usage", r.key.clone(), move |s| s.usage(&r.key))
            .await?;
        Ok(Response::new(api::UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(
        &self,
        _request: Request<api::CleanupRequest>,
    ) -> Result<Response<()>, Status> {
        let report = self.run("Cleanup", String::new(), |s| s.cleanup()).await?;
        for e in &report.errors {
            tracing::warn!(error = %e, "cleanup");
        }
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn info(n: usize, label_bytes: usize) -> Info {
        Info {
            name: format!("s{n}"),
            parent: String::new(),
            kind: Kind::Committed,
            created: UNIX_EPOCH,
            updated: UNIX_EPOCH,
            labels: [("l".to_string(), "x".repeat(label_bytes))].into(),
        }
    }

    #[test]
    fn list_batches_by_count_and_size() {
        let b = batches((0..250).map(|n| info(n, 1)).collect());
        assert_eq!(
            b.iter().map(|m| m.info.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        let b = batches((0..10).map(|n| info(n, 4000)).collect());
        assert_eq!(b.len(), 1);
        let b = batches((0..600).map(|n| info(n, 4000)).collect());
        assert!(b.iter().all(|m| m.encoded_len() <= LIST_BATCH_BYTES + 4200));
        assert_eq!(b.iter().map(|m| m.info.len()).sum::<usize>(), 600);
        assert!(batches(Vec::new()).is_empty());
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(
            timestamp(t),
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_789
            }
        );
        let t = UNIX_EPOCH - Duration::new(1, 250_000_000);
        assert_eq!(
            timestamp(t),
            Timestamp {
                seconds: -2,
                nanos: 750_000_000
            }
        );
    }
}
