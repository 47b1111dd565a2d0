//! The wire format of Docker's graph-driver plugin protocol, as dockerd
//! 20.10's `graphdriver/proxy.go` speaks it (the code, not the docs): the
//! endpoints, the request and response bodies with their exact field
//! names, and the `ApplyDiff` query string. Everything here is pure (bytes
//! in, values out) so it is tested without a socket.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_driver::{Change, LayerId};

use crate::PluginError;

/// Largest JSON request body accepted. dockerd's bodies are a few hundred
/// bytes; the limit only stops a client from making the plugin buffer an
/// unbounded body.
pub const MAX_JSON_BODY: usize = 1 << 20;

/// Content type of JSON replies, as Docker's own plugin helpers send it
/// (dockerd does not check it).
pub const JSON_CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.1+json";

/// The calls a graph-driver plugin answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/Plugin.Activate`: the handshake.
    Activate,
    /// `/GraphDriver.Init`.
    Init,
    /// `/GraphDriver.Capabilities`.
    Capabilities,
    /// `/GraphDriver.Create`: an empty read-only layer.
    Create,
    /// `/GraphDriver.CreateReadWrite`: an empty read-write layer.
    CreateReadWrite,
    /// `/GraphDriver.Remove`.
    Remove,
    /// `/GraphDriver.Get`: mount and return the path.
    Get,
    /// `/GraphDriver.Put`: release a `Get`.
    Put,
    /// `/GraphDriver.Exists`.
    Exists,
    /// `/GraphDriver.Status`.
    Status,
    /// `/GraphDriver.GetMetadata`.
    GetMetadata,
    /// `/GraphDriver.Cleanup`.
    Cleanup,
    /// `/GraphDriver.Diff`: the reply body is a raw tar.
    Diff,
    /// `/GraphDriver.Changes`.
    Changes,
    /// `/GraphDriver.ApplyDiff?id=&parent=`: the request body is a raw tar.
    ApplyDiff,
    /// `/GraphDriver.DiffSize`.
    DiffSize,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 16] = [
        Endpoint::Activate,
        Endpoint::Init,
        Endpoint::Capabilities,
        Endpoint::Create,
        Endpoint::CreateReadWrite,
        Endpoint::Remove,
        Endpoint::Get,
        Endpoint::Put,
        Endpoint::Exists,
        Endpoint::Status,
        Endpoint::GetMetadata,
        Endpoint::Cleanup,
        Endpoint::Diff,
        Endpoint::Changes,
        Endpoint::ApplyDiff,
        Endpoint::DiffSize,
    ];

    /// The endpoint's name as dockerd spells it (the URL path without `/`).
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Activate => "Plugin.Activate",
            Endpoint::Init => "GraphDriver.Init",
            Endpoint::Capabilities => "GraphDriver.Capabilities",
            Endpoint::Create => "GraphDriver.Create",
            Endpoint::CreateReadWrite => "GraphDriver.CreateReadWrite",
            Endpoint::Remove => "GraphDriver.Remove",
            Endpoint::Get => "GraphDriver.Get",
            Endpoint::Put => "GraphDriver.Put",
            Endpoint::Exists => "GraphDriver.Exists",
            Endpoint::Status => "GraphDriver.Status",
            Endpoint::GetMetadata => "GraphDriver.GetMetadata",
            Endpoint::Cleanup => "GraphDriver.Cleanup",
            Endpoint::Diff => "GraphDriver.Diff",
            Endpoint::Changes => "GraphDriver.Changes",
            Endpoint::ApplyDiff => "GraphDriver.ApplyDiff",
            Endpoint::DiffSize => "GraphDriver.DiffSize",
        }
    }

    /// The endpoint a request path names, if any.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let name = path.strip_prefix('/')?;
        Endpoint::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// `/GraphDriver.Init`'s body. The id maps are only checked for presence:
/// Strata does not remap owners, so a daemon running with user namespaces
/// is refused at Init rather than getting layers with the wrong owners.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct InitRequest {
    /// The daemon's directory for this driver (`<data-root>/<name>`).
    #[serde(rename = "Home")]
    pub home: Option<String>,
    /// Driver options (`dockerd --storage-opt`).
    #[serde(rename = "Opts")]
    pub opts: Option<Vec<String>>,
    /// User-namespace uid maps (`null` without userns-remap).
    #[serde(rename = "UIDMaps")]
    pub uid_maps: Option<Vec<serde_json::Value>>,
    /// User-namespace gid maps.
    #[serde(rename = "GIDMaps")]
    pub gid_maps: Option<Vec<serde_json::Value>>,
}

/// The body of every per-layer call (`graphDriverRequest`): all fields are
/// optional on the wire (Go's `omitempty`), so a missing `Parent` means
/// "no parent".
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct LayerRequest {
    /// The layer.
    #[serde(rename = "ID")]
    pub id: Option<String>,
    /// Its parent (Create*) or the layer to compare with (Diff, Changes,
    /// DiffSize).
    #[serde(rename = "Parent")]
    pub parent: Option<String>,
    /// SELinux mount label.
    #[serde(rename = "MountLabel")]
    pub mount_label: Option<String>,
    /// Storage options (`docker run --storage-opt`).
    #[serde(rename = "StorageOpt")]
    pub storage_opt: Option<BTreeMap<String, String>>,
}

impl LayerRequest {
    /// The validated `ID`; missing or invalid is a bad request.
    pub fn layer_id(&self) -> Result<LayerId, PluginError> {
        match &self.id {
            None => Err(PluginError::MissingField { field: "ID" }),
            Some(id) => Ok(LayerId::new(id)?),
        }
    }

    /// The validated `Parent`, `None` when absent or empty.
    pub fn parent_id(&self) -> Result<Option<LayerId>, PluginError> {
        opt_layer_id(self.parent.as_deref())
    }
}

/// Validates an optional id where the empty string means "none", as
/// dockerd sends it for base layers.
fn opt_layer_id(s: Option<&str>) -> Result<Option<LayerId>, PluginError> {
    match s {
        None | Some("") => Ok(None),
        Some(s) => Ok(Some(LayerId::new(s)?)),
    }
}

/// Parses a JSON request body whatever its Content-Type (dockerd sends
/// none). An empty body counts as `{}`: dockerd sends nothing at all to
/// `Plugin.Activate`, and a call with no arguments means the defaults.
pub fn parse_json<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, PluginError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| PluginError::BadRequest {
        reason: format!("malformed JSON body: {e}"),
    })
}

/// The `id` and `parent` of `/GraphDriver.ApplyDiff?id=<id>&parent=<parent>`.
/// dockerd builds the query with `Sprintf`, unescaped, and ids never need
/// escaping; percent escapes are still decoded so that an escaped `/` or
/// `..` is seen, and refused, for what it is.
pub fn parse_apply_query(query: Option<&str>) -> Result<(LayerId, Option<LayerId>), PluginError> {
    let mut id = None;
    let mut parent = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or_else(|| PluginError::BadRequest {
            reason: format!("query parameter {k:?}: malformed percent escape in {v:?}"),
        })?;
        match k {
            "id" => id = Some(v),
            "parent" => parent = Some(v),
            _ => {}
        }
    }
    let id = id.ok_or(PluginError::MissingField {
        field: "id (query)",
    })?;
    Ok((LayerId::new(&id)?, opt_layer_id(parent.as_deref())?))
}

/// Decodes `%XX` escapes (and `+` as a space, as Go's query parser does);
/// `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// What `GraphDriver.Init`'s `Opts` ask for. Keys may carry a `strata.`
/// prefix (as dockerd's own drivers take `overlay2.size`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitOpts {
    /// `driver=overlay|vfs`: which Strata driver serves the home.
    pub driver: Option<String>,
    /// `size=20G`: the size limit of read-write layers created without
    /// their own `size` storage option.
    pub size: Option<String>,
    /// `exact_diffs=false`: tell dockerd not to rely on `Diff` giving back
    /// an imported layer's exact bytes, so it keeps its own tar-split
    /// record (for stores with layers Strata can only regenerate).
    pub exact_diffs: Option<bool>,
    /// Every other option, passed to the driver (e.g. `native_diff=false`).
    pub driver_opts: Vec<String>,
}

/// Parses `Opts` (`key=value` strings), refusing malformed ones by name.
pub fn parse_init_opts(opts: &[String]) -> Result<InitOpts, PluginError> {
    let mut out = InitOpts::default();
    for o in opts {
        let bad = |reason: String| PluginError::BadOption {
            option: o.clone(),
            reason,
        };
        let Some((key, value)) = o.split_once('=') else {
            return Err(bad("expected KEY=VALUE".into()));
        };
        let key = key.trim();
        let key = key.strip_prefix("strata.").unwrap_or(key);
        match key.to_ascii_lowercase().as_str() {
            "driver" => out.driver = Some(value.trim().to_string()),
            "size" => {
                strata_driver::parse_size(value).map_err(bad)?;
                out.size = Some(value.trim().to_string());
            }
            "exact_diffs" => {
                out.exact_diffs = Some(match value.trim() {
                    "true" => true,
                    "false" => false,
                    v => return Err(bad(format!("{v:?} is not true or false"))),
                })
            }
            _ => out.driver_opts.push(format!("{key}={value}")),
        }
    }
    Ok(out)
}

/// One entry of `Changes` (`archive.Change`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireChange {
    /// Absolute path in the layer. JSON strings carry UTF-8 only (Go
    /// replaces anything else with U+FFFD when it decodes), so a non-UTF-8
    /// name is sent the same way.
    #[serde(rename = "Path")]
    pub path: String,
    /// 0 modify, 1 add, 2 delete.
    #[serde(rename = "Kind")]
    pub kind: u8,
}

impl From<&Change> for WireChange {
    fn from(c: &Change) -> Self {
        WireChange {
            path: String::from_utf8_lossy(&c.path).into_owned(),
            kind: c.kind as u8,
        }
    }
}

/// `Capabilities`' payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCapabilities {
    /// `Diff` of an imported layer gives back its exact bytes.
    #[serde(rename = "ReproducesExactDiffs")]
    pub reproduces_exact_diffs: bool,
}

/// Every JSON reply (`graphDriverResponse`, plus `Implements` for the
/// handshake); fields that do not apply are left out, as Go's `omitempty`
/// does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// What failed; absent on success.
    #[serde(rename = "Err", default, skip_serializing_if = "String::is_empty")]
    pub err: String,
    /// Handshake: the plugin kinds implemented.
    #[serde(rename = "Implements", skip_serializing_if = "Option::is_none")]
    pub implements: Option<Vec<String>>,
    /// `Get`: the mounted layer's absolute path.
    #[serde(rename = "Dir", skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// `Exists`.
    #[serde(rename = "Exists", skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// `Status`: ordered key/value pairs.
    #[serde(rename = "Status", skip_serializing_if = "Option::is_none")]
    pub status: Option<Vec<[String; 2]>>,
    /// `Changes`.
    #[serde(rename = "Changes", skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<WireChange>>,
    /// `ApplyDiff`, `DiffSize`: bytes.
    #[serde(rename = "Size", skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `GetMetadata`.
    #[serde(rename = "Metadata", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// `Capabilities`.
    #[serde(rename = "Capabilities", skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<WireCapabilities>,
}

impl Reply {
    /// An error reply.
    pub fn error(err: &PluginError) -> Reply {
        Reply {
            err: err.to_string(),
            ..Reply::default()
        }
    }

    /// The reply as bytes (serializing these types cannot fail: every key
    /// is a string and every value plain data).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|e| {
            format!("{{\"Err\":\"plugin: cannot encode reply: {e}\"}}").into_bytes()
        });
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_round_trip() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_path(&format!("/{}", e.name())), Some(e));
        }
        for bad in [
            "",
            "/",
            "GraphDriver.Get",
            "/GraphDriver.get",
            "/GraphDriver.Nope",
        ] {
            assert_eq!(Endpoint::from_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn layer_requests() {
        let r: LayerRequest = parse_json(
            br#"{"ID":"abc","Parent":"def","MountLabel":"","StorageOpt":{"size":"1G"}}"#,
        )
        .unwrap();
        assert_eq!(r.layer_id().unwrap().as_str(), "abc");
        assert_eq!(r.parent_id().unwrap().unwrap().as_str(), "def");
        assert_eq!(r.storage_opt.unwrap()["size"], "1G");
        // dockerd leaves empty fields out; an empty parent is no parent
        let r: LayerRequest = parse_json(b"{\"ID\":\"abc\"}\n").unwrap();
        assert_eq!(r.parent_id().unwrap(), None);
        let r: LayerRequest = parse_json(br#"{"ID":"abc","Parent":""}"#).unwrap();
        assert_eq!(r.parent_id().unwrap(), None);
        // no ID at all, a bad ID, a bad parent
        let r: LayerRequest = parse_json(b"{}").unwrap();
        assert!(
            r.layer_id()
                .unwrap_err()
                .to_string()
                .contains("missing field ID")
        );
        for bad in ["../x", "a/b", "", "..", "x-removing"] {
            let r: LayerRequest = parse_json(format!("{{\"ID\":{bad:?}}}").as_bytes()).unwrap();
            let e = r.layer_id().unwrap_err().to_string();
            assert!(e.contains("invalid layer id"), "{bad}: {e}");
            let r: LayerRequest =
                parse_json(format!("{{\"ID\":\"a\",\"Parent\":{bad:?}}}").as_bytes()).unwrap();
            if !bad.is_empty() {
                assert!(r.parent_id().is_err(), "{bad}");
            }
        }
        // unknown fields are tolerated (newer daemons may add some)
        let r: LayerRequest = parse_json(br#"{"ID":"a","Future":1}"#).unwrap();
        assert_eq!(r.id.as_deref(), Some("a"));
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        for bad in [&b"{"[..], b"[1,2]", b"{\"ID\":5}", b"\xff", b"null x"] {
            let e = parse_json::<LayerRequest>(bad).unwrap_err();
            assert!(matches!(e, PluginError::BadRequest { .. }), "{e}");
            assert!(e.to_string().contains("malformed JSON"), "{e}");
        }
        // empty bodies are the defaults
        assert!(parse_json::<LayerRequest>(b"").unwrap().id.is_none());
        assert!(parse_json::<LayerRequest>(b" \n").unwrap().id.is_none());
    }

    #[test]
    fn init_request() {
        let r: InitRequest = parse_json(
            br#"{"Home":"/var/lib/docker/strata","Opts":null,"UIDMaps":null,"GIDMaps":null}"#,
        )
        .unwrap();
        assert_eq!(r.home.as_deref(), Some("/var/lib/docker/strata"));
        assert!(r.opts.is_none() && r.uid_maps.is_none() && r.gid_maps.is_none());
        let r: InitRequest = parse_json(
            br#"{"Home":"/h","Opts":["size=1G"],"UIDMaps":[{"container_id":0,"host_id":100000,"size":65536}]}"#,
        )
        .unwrap();
        assert_eq!(r.opts.unwrap(), ["size=1G"]);
        assert_eq!(r.uid_maps.unwrap().len(), 1);
    }

    #[test]
    fn apply_query() {
        let hex = "a".repeat(64);
        let (id, parent) = parse_apply_query(Some(&format!("id={hex}&parent="))).unwrap();
        assert_eq!((id.as_str(), parent), (hex.as_str(), None));
        let (id, parent) = parse_apply_query(Some(&format!("id={hex}-init&parent={hex}"))).unwrap();
        assert_eq!(id.as_str(), format!("{hex}-init"));
        assert_eq!(parent.unwrap().as_str(), hex);
        let (id, _) = parse_apply_query(Some("parent=&id=x")).unwrap();
        assert_eq!(id.as_str(), "x");
        for bad in [
            None,
            Some(""),
            Some("parent=x"),
            Some("id="),
            Some("id=..&parent="),
            Some("id=a%2Fb"),
            Some("id=%2E%2E"),
            Some("id=a/b"),
            Some("id=x&parent=../y"),
            Some("id=%zz"),
            Some("id=%c3"),
        ] {
            assert!(parse_apply_query(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%41%62").as_deref(), Some("Ab"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn init_opts() {
        let o = parse_init_opts(&[
            "size=10G".into(),
            "strata.driver=vfs".into(),
            "overlay.native_diff=false".into(),
            "exact_diffs=false".into(),
        ])
        .unwrap();
        assert_eq!(o.size.as_deref(), Some("10G"));
        assert_eq!(o.driver.as_deref(), Some("vfs"));
        assert_eq!(o.exact_diffs, Some(false));
        assert_eq!(o.driver_opts, ["overlay.native_diff=false"]);
        for bad in ["size", "size=ten", "strata.size=-1", "exact_diffs=maybe"] {
            let e = parse_init_opts(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn replies_use_docker_field_names() {
        let r = Reply {
            implements: Some(vec!["GraphDriver".into()]),
            ..Reply::default()
        };
        assert_eq!(r.to_bytes(), b"{\"Implements\":[\"GraphDriver\"]}\n");
        let r = Reply {
            capabilities: Some(WireCapabilities {
                reproduces_exact_diffs: true,
            }),
            ..Reply::default()
        };
        assert_eq!(
            r.to_bytes(),
            b"{\"Capabilities\":{\"ReproducesExactDiffs\":true}}\n"
        );
        // zero and false are values, not absences
        let r = Reply {
            exists: Some(false),
            size: Some(0),
            ..Reply::default()
        };
        assert_eq!(r.to_bytes(), b"{\"Exists\":false,\"Size\":0}\n");
        let r = Reply {
            status: Some(vec![["a".into(), "b".into()]]),
            changes: Some(vec![WireChange {
                path: "/x".into(),
                kind: 2,
            }]),
            ..Reply::default()
        };
        assert_eq!(
            r.to_bytes(),
            b"{\"Status\":[[\"a\",\"b\"]],\"Changes\":[{\"Path\":\"/x\",\"Kind\":2}]}\n"
        );
        assert_eq!(Reply::default().to_bytes(), b"{}\n");
    }

    #[test]
    fn non_utf8_change_paths_are_lossy() {
        let c = Change {
            path: b"/a\xffb".to_vec(),
            kind: strata_driver::ChangeKind::Add,
        };
        let w = WireChange::from(&c);
        assert_eq!((w.path.as_str(), w.kind), ("/a\u{fffd}b", 1));
    }
}
