//! `strata serve`: runs the store as a daemon for container engines. Each
//! protocol is a listener (Docker's graph-driver plugin socket,
//! containerd's snapshotter socket); all of them run in one tokio runtime
//! and stop on one signal (SIGTERM or SIGINT).

use std::future::Future;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde_json::json;
use strata_plugin::socket::{self, DEFAULT_SOCKET, DEFAULT_SPEC_FILE, PLUGIN_SOCKET_DIR};
use strata_plugin::{Config, Plugin};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// How long calls in flight may run on after the stop signal.
const GRACE: Duration = Duration::from_secs(10);

/// How long blocking driver work abandoned after the grace period gets to
/// notice (its reader fails) and clean up before the process exits.
const ABANDON: Duration = Duration::from_secs(5);

/// `strata serve` options.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Serve Docker's graph-driver plugin protocol on this unix socket
    /// (mode 0600). dockerd then stores images and containers in Strata
    /// with `--experimental --storage-driver=NAME`, NAME being the socket's
    /// file name without `.sock` (or the spec file's without `.spec`).
    /// The store's home is the one dockerd names at Init
    /// (`<data-root>/NAME`) unless `--home` is given. This is also what
    /// `strata serve` alone does.
    #[arg(long, value_name = "SOCKET", num_args = 0..=1, default_missing_value = DEFAULT_SOCKET)]
    docker: Option<PathBuf>,
    /// Serve containerd's snapshotter API (gRPC) on this unix socket (mode
    /// 0600), for `[proxy_plugins.NAME] type = "snapshot"` in containerd's
    /// config. Snapshots are overlay layers of the store at `--home`
    /// (default /var/lib/strata), which the Docker plugin may share. Given
    /// alone, Docker's plugin is not served.
    #[arg(long, value_name = "SOCKET")]
    containerd: Option<PathBuf>,
    /// Write a spec file naming the socket (default
    /// /etc/docker/plugins/strata.spec), so dockerd finds a socket outside
    /// /run/docker/plugins. Written by default for such a socket; removed
    /// on stop.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = DEFAULT_SPEC_FILE)]
    spec_file: Option<PathBuf>,
    /// Log format: one line per call (endpoint, layer, status, duration,
    /// bytes) on stderr. `STRATA_LOG` sets the level (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable `key=value` lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The global options `serve` uses.
pub struct Globals {
    /// `--home` if it was given (otherwise dockerd's Init names the home).
    pub home: Option<PathBuf>,
    /// `--driver`.
    pub driver: Option<String>,
    /// `--driver-opt`.
    pub driver_opts: Vec<String>,
    /// `--json`: the startup line as JSON.
    pub json: bool,
}

/// Whether `--home` (or `STRATA_HOME`) was given rather than defaulted:
/// only then does it override the home dockerd names at Init. The parsed
/// `Cli` cannot tell (the default fills the field), so the arguments are
/// matched once more for the value's source.
pub fn home_given() -> bool {
    use clap::CommandFactory;
    let Ok(m) = crate::Cli::command().try_get_matches_from(std::env::args_os()) else {
        return false;
    };
    let given = |m: &clap::ArgMatches| {
        m.value_source("home")
            .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue)
    };
    given(&m) || m.subcommand().is_some_and(|(_, m)| given(m))
}

/// Runs `strata serve` until SIGTERM or SIGINT.
pub fn run(args: ServeArgs, globals: Globals) -> Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-serve")
        .build()
        .context("start the async runtime")?;
    let result = runtime.block_on(serve(args, globals));
    // Abandoned imports fail their reads once their connections are gone;
    // give them a moment to remove their staging dirs.
    runtime.shutdown_timeout(ABANDON);
    result
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// A listener's server, run until the shared stop signal (each protocol
/// crate has its own error type).
type Server = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

async fn serve(args: ServeArgs, globals: Globals) -> Result<()> {
    // Installed before anything is served, so a stop signal that arrives
    // during start-up does not kill the process half-way.
    let mut signals = StopSignals::new().context("install signal handlers")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut servers: Vec<(&'static str, Server)> = Vec::new();
    // Files that must outlive the servers (removed on drop).
    let mut guards: Vec<Box<dyn Send>> = Vec::new();

    let mut started = serde_json::Map::new();
    if let Some(sock) = &args.containerd {
        let (server, line) = containerd(sock, &globals, stopped()).await?;
        servers.push(("containerd", server));
        started.insert("containerd".into(), line);
    }
    if args.docker.is_some() || args.containerd.is_none() {
        let (server, line, files) = docker(&args, &globals, stopped()).await?;
        servers.push(("docker", server));
        guards.extend(files);
        started.insert("docker".into(), line);
    }
    // One startup line: JSON facts by listener, or each listener's message.
    let mut messages = Vec::new();
    for facts in started.values_mut() {
        if let Some(serde_json::Value::String(m)) =
            facts.as_object_mut().and_then(|o| o.remove("message"))
        {
            messages.push(m);
        }
    }
    if globals.json {
        println!("{}", serde_json::Value::Object(started));
    } else {
        println!("{}", messages.join("\n"));
    }

    let stop = Arc::clone(&stop_tx);
    tokio::spawn(async move {
        let sig = signals.recv().await;
        tracing::info!(signal = sig, "stopping");
        let _ = stop.send(true);
    });
    let mut set = tokio::task::JoinSet::new();
    for (what, server) in servers {
        set.spawn(async move { (what, server.await) });
    }
    let mut first_err = None;
    while let Some(joined) = set.join_next().await {
        let (what, result) = joined.context("a server task failed")?;
        if let Err(e) = result {
            tracing::error!(listener = what, error = %e, "server failed; stopping the others");
            let _ = stop_tx.send(true);
            first_err.get_or_insert(e.context(format!("{what} listener")));
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Starts Docker's graph-driver plugin listener: its server, its startup
/// line, and the files (socket, spec file) to remove when it stops.
async fn docker(
    args: &ServeArgs,
    globals: &Globals,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(Server, serde_json::Value, Vec<Box<dyn Send>>)> {
    let docker = args
        .docker
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let mut bound = socket::bind(&docker)?;
    let spec_path = args
        .spec_file
        .clone()
        .or_else(|| (!in_plugin_dir(bound.path())).then(|| PathBuf::from(DEFAULT_SPEC_FILE)));
    let spec = spec_path
        .map(|p| socket::write_spec_file(&p, bound.path()))
        .transpose()?;
    let name = socket::plugin_name(bound.path(), spec.as_ref().map(|s| s.path()));
    let config = Config {
        home: globals.home.clone(),
        driver: globals.driver.clone(),
        driver_opts: globals.driver_opts.clone(),
        state_file: Some(state_file(bound.path())),
    };
    let plugin = tokio::task::spawn_blocking(move || Plugin::new(config))
        .await
        .context("open the driver")??;
    let listener = bound
        .take_listener()
        .context("the plugin socket has no listener")?;
    let listener = tokio::net::UnixListener::from_std(listener)
        .with_context(|| format!("listen on {}", bound.path().display()))?;
    let socket_path = bound.path().to_path_buf();
    let spec_shown = spec.as_ref().map(|s| s.path().to_path_buf());
    let server: Server = Box::pin({
        let plugin = Arc::new(plugin);
        async move { Ok(strata_plugin::serve(listener, plugin, stop, GRACE).await?) }
    });
    let mut files: Vec<Box<dyn Send>> = vec![Box::new(bound)];
    if let Some(s) = spec {
        files.push(Box::new(s));
    }
    let shown = spec_shown
        .as_ref()
        .map(|s| format!(" (spec file {})", s.display()))
        .unwrap_or_default();
    let line = json!({
        "socket": socket_path,
        "spec_file": spec_shown,
        "storage_driver": name,
        "message": format!(
            "serving the Docker graph-driver plugin {name:?} on {}{shown}; \
             start dockerd with --experimental --storage-driver={name}",
            socket_path.display()
        ),
    });
    Ok((server, line, files))
}

/// Starts containerd's snapshotter listener over the overlay driver of
/// the store at `--home`: its server and its startup line.
async fn containerd(
    sock: &Path,
    globals: &Globals,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(Server, serde_json::Value)> {
    if let Some(d) = globals
        .driver
        .as_deref()
        .filter(|d| *d != strata_driver::overlay::NAME)
    {
        anyhow::bail!(
            "--containerd: containerd's snapshots are overlay layers; --driver {d} cannot serve them"
        );
    }
    let home = globals
        .home
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::DEFAULT_HOME));
    let opts = globals.driver_opts.clone();
    let shown_home = home.clone();
    let snap = tokio::task::spawn_blocking(move || -> Result<_> {
        let driver = strata_driver::overlay::OverlayDriver::open_shared(&home, &opts)?;
        Ok(strata_snapshotter::Snapshotter::open(driver)?)
    })
    .await
    .context("open the snapshotter")??;
    let listener = strata_snapshotter::bind(sock)?;
    let server: Server = Box::pin({
        let snap = Arc::new(snap);
        async move { Ok(strata_snapshotter::serve(listener, snap, stop).await?) }
    });
    let line = json!({
        "socket": sock,
        "home": shown_home,
        "message": format!(
            "serving containerd's snapshotter API on {} (store {}); add \
             [proxy_plugins.strata] type = \"snapshot\" address = \"{}\" to containerd's config",
            sock.display(),
            shown_home.display(),
            sock.display()
        ),
    });
    Ok((server, line))
}

/// True for a socket where dockerd finds it without a spec file:
/// `/run/docker/plugins/NAME.sock` or `/run/docker/plugins/NAME/NAME.sock`.
fn in_plugin_dir(socket: &Path) -> bool {
    let dir = Path::new(PLUGIN_SOCKET_DIR);
    let Some(parent) = socket.parent() else {
        return false;
    };
    parent == dir
        || (parent.parent() == Some(dir)
            && parent.file_name() == socket.file_stem()
            && socket.extension().is_some_and(|e| e == "sock"))
}

/// Where the last Init is remembered: beside the socket, so each plugin
/// instance has its own and it lives as long as the mounts do (both go
/// with /run at reboot).
fn state_file(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".init.json");
    PathBuf::from(name)
}

/// The signals that stop the daemon.
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    fn new() -> io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for SIGTERM or SIGINT; returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
