//! Where dockerd finds the plugin: the unix socket (mode 0600, made under a
//! temporary name and renamed into place, so it is never reachable with a
//! looser mode and a stale socket is replaced in one step) and, when the
//! socket is not in `/run/docker/plugins`, a spec file naming it. Both are
//! removed when the plugin stops, unless a newer process has replaced
//! them in the meantime.

use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::PluginError;

/// Where dockerd looks for plugin sockets first.
pub const PLUGIN_SOCKET_DIR: &str = "/run/docker/plugins";

/// The socket `strata serve --docker` listens on by default.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/strata.sock";

/// The spec file written when the socket lives elsewhere.
pub const DEFAULT_SPEC_FILE: &str = "/etc/docker/plugins/strata.spec";

/// The plugin's name as dockerd will know it (`--storage-driver=NAME`):
/// the spec file's name without `.spec`, else the socket's without
/// `.sock`.
pub fn plugin_name(socket: &Path, spec_file: Option<&Path>) -> String {
    let from = spec_file.unwrap_or(socket);
    from.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "strata".into())
}

/// A bound plugin socket; dropping it removes the socket file if it is
/// still the one this process made.
#[derive(Debug)]
pub struct BoundSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
    ino: (u64, u64),
}

impl BoundSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the listener (for `serve`); the file stays until drop.
    pub fn take_listener(&mut self) -> Option<UnixListener> {
        self.listener.take()
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if same_inode(&self.path, self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn same_inode(path: &Path, ino: (u64, u64)) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == ino)
}

/// Binds the plugin socket at `path` with mode 0600, creating its
/// directory if needed. A socket already there that nobody answers on
/// (left by a process that was killed) is replaced; one that answers is
/// another plugin and is left alone; anything else is refused.
pub fn bind(path: &Path) -> Result<BoundSocket, PluginError> {
    let err = |what: &'static str| {
        move |source: io::Error| PluginError::Socket {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    let path = std::path::absolute(path).map_err(err("resolve"))?;
    let path = path.as_path();
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(err("create the directory of"))?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(PluginError::SocketInUse {
                    path: path.to_path_buf(),
                });
            }
        }
        Ok(_) => {
            return Err(err("refusing to replace")(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("inspect")(e)),
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(err("bind"))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(err("bind")(e));
    }
    let m = std::fs::symlink_metadata(path).map_err(err("inspect"))?;
    listener.set_nonblocking(true).map_err(err("configure"))?;
    Ok(BoundSocket {
        listener: Some(listener),
        path: path.to_path_buf(),
        ino: (m.dev(), m.ino()),
    })
}

/// A spec file naming the socket; dropping it removes the file if it
/// still names this socket.
#[derive(Debug)]
pub struct SpecFile {
    path: PathBuf,
    content: String,
}

impl SpecFile {
    /// The spec file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpecFile {
    fn drop(&mut self) {
        if std::fs::read_to_string(&self.path).is_ok_and(|c| c == self.content) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes the spec file `path` (`unix:///abs/socket`, the form dockerd's
/// plugin discovery reads from `/etc/docker/plugins/NAME.spec`).
pub fn write_spec_file(path: &Path, socket: &Path) -> Result<SpecFile, PluginError> {
    let err = |what: &'static str| {
        move |source: io::Error| PluginError::Socket {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    if path.extension().is_none_or(|e| e != "spec") {
        return Err(err("spec file")(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the name must end in .spec (dockerd looks for NAME.spec)",
        )));
    }
    let socket = std::path::absolute(socket).map_err(err("resolve the socket for"))?;
    let content = format!("unix://{}\n", socket.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err("create the directory of"))?;
    }
    write_atomic(path, content.as_bytes(), 0o644).map_err(err("write"))?;
    Ok(SpecFile {
        path: path.to_path_buf(),
        content,
    })
}

/// Writes `path` atomically with `mode`: a temporary file beside it,
/// synced, then renamed over it.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(plugin_name(Path::new(DEFAULT_SOCKET), None), "strata");
        assert_eq!(
            plugin_name(
                Path::new("/tmp/x/p.sock"),
                Some(Path::new("/etc/docker/plugins/dev.spec"))
            ),
            "dev"
        );
    }

    #[test]
    fn bind_replaces_only_stale_sockets() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sub/p.sock");
        let mut a = bind(&p).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        // a live socket is not taken over
        let e = bind(&p).unwrap_err().to_string();
        assert!(e.contains("another process"), "{e}");
        // a dead one is
        drop(a.take_listener());
        let b = bind(&p).unwrap();
        // the first owner's drop leaves the second's socket alone
        drop(a);
        assert!(p.exists());
        drop(b);
        assert!(!p.exists());
        // not a socket: refused, untouched
        std::fs::write(&p, b"x").unwrap();
        assert!(bind(&p).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
    }

    #[test]
    fn spec_files() {
        let t = tempfile::tempdir().unwrap();
        let spec = t.path().join("plugins/s.spec");
        let f = write_spec_file(&spec, Path::new("/run/x.sock")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&spec).unwrap(),
            "unix:///run/x.sock\n"
        );
        drop(f);
        assert!(!spec.exists());
        assert!(write_spec_file(&t.path().join("s.json"), Path::new("/x")).is_err());
    }
}
