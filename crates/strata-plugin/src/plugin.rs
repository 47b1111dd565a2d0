//! The plugin's state: which driver serves which home, opened at
//! `GraphDriver.Init` (or at start when the home is fixed or remembered),
//! and the synchronous driver calls behind each endpoint. The HTTP side
//! (`server`) runs these on blocking threads.
//!
//! A restarted plugin gets no second `Init`: dockerd activates a plugin
//! once and, when the socket comes back, simply calls it again. So the
//! plugin remembers the last `Init` in a small state file and reopens the
//! same home at start; mounts left in place by the earlier process are
//! adopted by the driver on first touch, so running containers keep their
//! root filesystems.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use strata_driver::{CreateOpts, Driver, LayerId};

use crate::PluginError;
use crate::protocol::{InitOpts, InitRequest, LayerRequest, parse_init_opts};

/// How the plugin is set up before dockerd says anything.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Serve this home whatever `Init` says (`strata serve --home`).
    pub home: Option<PathBuf>,
    /// Driver to use unless `Init`'s options name one (`None`: the home's
    /// owner, else the best the filesystem supports).
    pub driver: Option<String>,
    /// Driver options, before those `Init` adds.
    pub driver_opts: Vec<String>,
    /// Where the last `Init` is remembered, so that a restarted plugin can
    /// serve without one. `None`: not remembered.
    pub state_file: Option<PathBuf>,
}

/// What `Init` asked for, as remembered in the state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct InitState {
    #[serde(rename = "Home")]
    home: Option<PathBuf>,
    #[serde(rename = "Opts")]
    opts: Vec<String>,
}

/// An open driver and what it was opened with.
pub(crate) struct Active {
    /// The driver.
    pub(crate) driver: Box<dyn Driver>,
    /// Home it was opened on (as asked, before canonicalizing).
    home: PathBuf,
    /// `Init` options it was opened with.
    opts: Vec<String>,
    /// Parsed options.
    init: InitOpts,
}

impl Active {
    /// Whether dockerd may rely on `Diff` to give back imported bytes.
    pub(crate) fn exact_diffs(&self) -> bool {
        self.init.exact_diffs.unwrap_or(true) && self.driver.capabilities().reproduces_exact_diffs
    }
}

/// The plugin: its configuration and the driver it serves.
pub struct Plugin {
    config: Config,
    active: RwLock<Option<Arc<Active>>>,
}

impl Plugin {
    /// A plugin for `config`. When the home is known already, the driver
    /// is opened now, which also sweeps what an interrupted earlier
    /// process left in staging. A home given in `config` that cannot be
    /// opened is an error; one remembered from an earlier `Init` that is
    /// gone or cannot be opened only leaves the plugin waiting for the
    /// next `Init` (a restarted dockerd sends one).
    pub fn new(config: Config) -> Result<Plugin, PluginError> {
        let plugin = Plugin {
            config,
            active: RwLock::new(None),
        };
        let remembered = plugin.read_state().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring the remembered Init");
            InitState::default()
        });
        if let Some(home) = plugin.config.home.clone() {
            let active = plugin.open(&home, &remembered.opts)?;
            plugin.set(active);
            return Ok(plugin);
        }
        match remembered.home {
            Some(home) if home.is_dir() => match plugin.open(&home, &remembered.opts) {
                Ok(active) => plugin.set(active),
                Err(e) => tracing::warn!(
                    home = %home.display(),
                    error = %e,
                    "cannot reopen the home of the last Init; waiting for a new Init"
                ),
            },
            Some(home) => tracing::info!(
                home = %home.display(),
                "the home of the last Init is gone; waiting for a new Init"
            ),
            None => {}
        }
        Ok(plugin)
    }

    fn set(&self, active: Active) {
        *self.active.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(active));
    }

    /// The open driver, or the error a call before `Init` gets.
    pub(crate) fn active(&self) -> Result<Arc<Active>, PluginError> {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(PluginError::NotInitialized)
    }

    fn open(&self, home: &Path, opts: &[String]) -> Result<Active, PluginError> {
        let init = parse_init_opts(opts)?;
        let driver_name = init.driver.clone().or_else(|| self.config.driver.clone());
        let mut driver_opts = self.config.driver_opts.clone();
        driver_opts.extend(init.driver_opts.iter().cloned());
        let driver = strata_driver::open(driver_name.as_deref(), home, &driver_opts)?;
        tracing::info!(
            home = %driver.home().display(),
            driver = driver.name(),
            opts = ?opts,
            "driver opened"
        );
        Ok(Active {
            driver,
            home: home.to_path_buf(),
            opts: opts.to_vec(),
            init,
        })
    }

    /// `GraphDriver.Init`: opens the driver on the daemon's home (or the
    /// configured one) with the daemon's options. A second `Init` with the
    /// same home and options (dockerd restarted, the plugin did not) keeps
    /// the open driver and its mount references.
    pub(crate) fn init(&self, req: InitRequest) -> Result<(), PluginError> {
        let has_maps =
            |m: &Option<Vec<serde_json::Value>>| m.as_ref().is_some_and(|m| !m.is_empty());
        if has_maps(&req.uid_maps) || has_maps(&req.gid_maps) {
            return Err(PluginError::Unsupported {
                reason: "user namespace remapping (userns-remap) is not supported by Strata".into(),
            });
        }
        let opts = req.opts.unwrap_or_default();
        let home = match (&self.config.home, &req.home) {
            (Some(h), _) => h.clone(),
            (None, Some(h)) if !h.is_empty() => {
                let h = PathBuf::from(h);
                if !h.is_absolute() {
                    return Err(PluginError::BadRequest {
                        reason: format!("Home {} is not an absolute path", h.display()),
                    });
                }
                h
            }
            (None, _) => return Err(PluginError::MissingField { field: "Home" }),
        };
        let mut slot = self.active.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(a) = slot.as_ref()
            && a.home == home
            && a.opts == opts
        {
            return Ok(());
        }
        *slot = Some(Arc::new(self.open(&home, &opts)?));
        drop(slot);
        self.write_state(&InitState {
            home: req.home.filter(|h| !h.is_empty()).map(PathBuf::from),
            opts,
        })
    }

    fn read_state(&self) -> Result<InitState, PluginError> {
        let Some(path) = &self.config.state_file else {
            return Ok(InitState::default());
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(InitState::default()),
            Err(e) => {
                return Err(PluginError::State {
                    path: path.clone(),
                    reason: e.to_string(),
                });
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| PluginError::State {
            path: path.clone(),
            reason: format!("unreadable: {e}"),
        })
    }

    fn write_state(&self, state: &InitState) -> Result<(), PluginError> {
        let Some(path) = &self.config.state_file else {
            return Ok(());
        };
        let err = |e: std::io::Error| PluginError::State {
            path: path.clone(),
            reason: e.to_string(),
        };
        let bytes = serde_json::to_vec(state).map_err(|e| PluginError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        crate::socket::write_atomic(path, &bytes, 0o600).map_err(err)
    }
}

/// Builds the options of a new layer: the request's own, plus the `Init`
/// default size for a read-write layer that names none.
pub(crate) fn create_opts(active: &Active, req: &LayerRequest, read_write: bool) -> CreateOpts {
    let mut storage_opt = req.storage_opt.clone().unwrap_or_default();
    if read_write
        && let Some(size) = &active.init.size
        && !storage_opt.keys().any(|k| k.eq_ignore_ascii_case("size"))
    {
        storage_opt.insert("size".into(), size.clone());
    }
    CreateOpts {
        mount_label: req.mount_label.clone().unwrap_or_default(),
        storage_opt,
    }
}

/// The id a call names, validated.
pub(crate) fn ids(req: &LayerRequest) -> Result<(LayerId, Option<LayerId>), PluginError> {
    Ok((req.layer_id()?, req.parent_id()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(t: &Path) -> Config {
        Config {
            home: None,
            driver: Some("vfs".into()),
            driver_opts: Vec::new(),
            state_file: Some(t.join("p.sock.init.json")),
        }
    }

    fn init(home: &Path) -> InitRequest {
        InitRequest {
            home: Some(home.display().to_string()),
            ..InitRequest::default()
        }
    }

    fn home_of(p: &Plugin) -> PathBuf {
        p.active().unwrap().driver.home().to_path_buf()
    }

    #[test]
    fn init_is_remembered_for_a_restart() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("data/strata");
        let p = Plugin::new(config(t.path())).unwrap();
        assert!(matches!(p.active(), Err(PluginError::NotInitialized)));
        p.init(init(&home)).unwrap();
        let before = Arc::as_ptr(&p.active().unwrap());
        // The same Init again (dockerd restarted) keeps the open driver.
        p.init(init(&home)).unwrap();
        assert_eq!(Arc::as_ptr(&p.active().unwrap()), before);
        drop(p);
        let again = Plugin::new(config(t.path())).unwrap();
        assert_eq!(home_of(&again), home.canonicalize().unwrap());
    }

    #[test]
    fn a_remembered_home_that_is_gone_waits_for_init() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("gone");
        let p = Plugin::new(config(t.path())).unwrap();
        p.init(init(&home)).unwrap();
        drop(p);
        std::fs::remove_dir_all(&home).unwrap();
        let p = Plugin::new(config(t.path())).unwrap();
        assert!(matches!(p.active(), Err(PluginError::NotInitialized)));
        assert!(!home.exists(), "a stale home was recreated");
        // A corrupt state file is ignored the same way.
        std::fs::write(t.path().join("p.sock.init.json"), b"{nope").unwrap();
        let p = Plugin::new(config(t.path())).unwrap();
        assert!(matches!(p.active(), Err(PluginError::NotInitialized)));
    }

    #[test]
    fn a_given_home_wins_over_the_daemons() {
        let t = tempfile::tempdir().unwrap();
        let fixed = t.path().join("fixed");
        let mut c = config(t.path());
        c.home = Some(fixed.clone());
        let p = Plugin::new(c).unwrap();
        assert_eq!(home_of(&p), fixed.canonicalize().unwrap());
        p.init(init(&t.path().join("daemons"))).unwrap();
        assert_eq!(home_of(&p), fixed.canonicalize().unwrap());
        assert!(!t.path().join("daemons").exists());
    }

    #[test]
    fn init_refusals() {
        let t = tempfile::tempdir().unwrap();
        let p = Plugin::new(config(t.path())).unwrap();
        let mut r = init(&t.path().join("h"));
        r.uid_maps = Some(vec![
            serde_json::json!({"container_id": 0, "host_id": 1, "size": 1}),
        ]);
        assert!(matches!(p.init(r), Err(PluginError::Unsupported { .. })));
        let e = p.init(InitRequest::default()).unwrap_err();
        assert!(
            matches!(e, PluginError::MissingField { field: "Home" }),
            "{e}"
        );
        let e = p.init(init(Path::new("rel/home"))).unwrap_err();
        assert!(e.to_string().contains("not an absolute path"), "{e}");
        let mut r = init(&t.path().join("h"));
        r.opts = Some(vec!["strata.driver=nope".into()]);
        assert!(p.init(r).unwrap_err().to_string().contains("nope"));
        // Nothing was opened or remembered.
        assert!(matches!(p.active(), Err(PluginError::NotInitialized)));
        assert!(!t.path().join("p.sock.init.json").exists());
    }
}
