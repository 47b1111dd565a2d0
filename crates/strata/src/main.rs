//! The `strata` command: a thin shell over `strata-driver`. It parses
//! arguments, sets up logging and progress display, runs one driver
//! operation, prints its result (text, or JSON with `--json`) and maps
//! failure to a one-line error and a non-zero exit status.
#![forbid(unsafe_code)]

mod progress;
mod serve;
mod windows;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use strata_driver::{ChangeKind, CreateOpts, Driver, LayerId};

/// The home when neither `--home` nor `STRATA_HOME` names one.
const DEFAULT_HOME: &str = "/var/lib/strata";

/// Strata: a container-layer store.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about, propagate_version = true)]
struct Cli {
    /// The driver's home directory.
    #[arg(
        long,
        global = true,
        default_value = DEFAULT_HOME,
        env = "STRATA_HOME"
    )]
    home: PathBuf,
    /// Driver to use (default: the best one the home's filesystem supports).
    #[arg(long, global = true, env = "STRATA_DRIVER")]
    driver: Option<String>,
    /// Driver option (repeatable).
    #[arg(long = "driver-opt", global = true)]
    driver_opts: Vec<String>,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create an empty read-only layer.
    Create {
        /// New layer id.
        id: String,
        /// Parent layer.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Create an empty read-write (container) layer.
    CreateRw {
        /// New layer id.
        id: String,
        /// Parent layer.
        #[arg(long)]
        parent: Option<String>,
        /// Storage option KEY=VALUE (e.g. size=10G), repeatable.
        #[arg(long = "storage-opt")]
        storage_opt: Vec<String>,
    },
    /// Create a layer from a tar stream, atomically (file, or - for stdin).
    Import {
        /// New layer id.
        id: String,
        /// Parent layer.
        #[arg(long)]
        parent: Option<String>,
        /// Layer tar, plain or gzip/zstd-compressed (detected by its magic
        /// bytes); `-` or absent reads stdin.
        file: Option<PathBuf>,
        /// Fail, creating nothing, unless the stream has this digest
        /// (sha256:<hex>): the uncompressed tar's (diffID) or, for a
        /// compressed blob, the blob's own.
        #[arg(long, value_name = "sha256:HEX")]
        expect_digest: Option<String>,
    },
    /// Write a layer's changes as a tar.
    Export {
        /// Layer id.
        id: String,
        /// Compare with this layer instead of exporting the whole layer.
        #[arg(long)]
        parent: Option<String>,
        /// Output file (default: stdout).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// List a layer's changes (A added, C modified, D deleted).
    Changes {
        /// Layer id.
        id: String,
        /// Compare with this layer (default: everything is added).
        #[arg(long)]
        parent: Option<String>,
    },
    /// Bytes of a layer's changes.
    DiffSize {
        /// Layer id.
        id: String,
        /// Compare with this layer.
        #[arg(long)]
        parent: Option<String>,
    },
    /// Take a reference on a layer's merged view and print its path.
    Mount {
        /// Layer id.
        id: String,
    },
    /// Drop a reference taken by mount.
    Unmount {
        /// Layer id.
        id: String,
    },
    /// Remove a layer.
    Rm {
        /// Layer id.
        id: String,
    },
    /// List layers.
    Ls,
    /// Show a layer's metadata.
    Info {
        /// Layer id.
        id: String,
    },
    /// Show the driver's status.
    Status,
    /// Finish interrupted work and sweep leftovers.
    Cleanup,
    /// Serve the store to container engines (Docker's graph-driver plugin
    /// protocol) until SIGTERM.
    Serve(serve::ServeArgs),
    /// Build and inspect Windows container layers.
    #[command(subcommand)]
    WindowsLayer(windows::WindowsCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sets up its own logging (a line per call, text or JSON).
    if !matches!(cli.command, Command::Serve(_)) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(io::stderr)
            .init();
    }
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`strata export x | head`) is not a failure.
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            // Library errors already carry their causes in their own text;
            // add a cause from the chain only where it is not there yet.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg = format!("{msg}: {c}");
                }
            }
            let msg = msg.replace('\n', " ");
            if json {
                println!("{}", json!({ "error": msg }));
            }
            eprintln!("strata: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn id(s: &str) -> Result<LayerId> {
    Ok(LayerId::new(s)?)
}

fn opt_id(s: &Option<String>) -> Result<Option<LayerId>> {
    s.as_deref().map(id).transpose()
}

fn run(cli: Cli) -> Result<()> {
    let command = match cli.command {
        Command::Serve(args) => {
            let home = serve::home_given().then_some(cli.home);
            let (driver, driver_opts, json) = (cli.driver, cli.driver_opts, cli.json);
            return serve::run(
                args,
                serve::Globals {
                    home,
                    driver,
                    driver_opts,
                    json,
                },
            );
        }
        Command::WindowsLayer(cmd) => {
            let (d, opts) = (cli.driver.as_deref(), &cli.driver_opts);
            return windows::run(cmd, &cli.home, d, opts, cli.json);
        }
        command => command,
    };
    let driver = strata_driver::open(cli.driver.as_deref(), &cli.home, &cli.driver_opts)?;
    let d: &dyn Driver = driver.as_ref();
    let out = Output { json: cli.json };
    match command {
        Command::Create { id: i, parent } => {
            let i = id(&i)?;
            d.create(&i, opt_id(&parent)?.as_ref(), &CreateOpts::default())?;
            out.done(&i, "created")
        }
        Command::CreateRw {
            id: i,
            parent,
            storage_opt,
        } => {
            let i = id(&i)?;
            let mut opts = CreateOpts::default();
            for kv in storage_opt {
                let Some((k, v)) = kv.split_once('=') else {
                    bail!("storage option {kv:?}: expected KEY=VALUE");
                };
                opts.storage_opt.insert(k.to_string(), v.to_string());
            }
            d.create_read_write(&i, opt_id(&parent)?.as_ref(), &opts)?;
            out.done(&i, "created")
        }
        Command::Import {
            id: i,
            parent,
            file,
            expect_digest,
        } => {
            let i = id(&i)?;
            // Refused before any input is read.
            if let Some(d) = &expect_digest {
                strata_driver::check_digest(d)
                    .map_err(|reason| anyhow::anyhow!("--expect-digest {d:?}: {reason}"))?;
            }
            let opts = strata_driver::ImportOptions { expect_digest };
            let (input, len): (Box<dyn Read + Send>, Option<u64>) = match file.as_deref() {
                None => (Box::new(io::stdin()), None),
                Some(p) if p.as_os_str() == "-" => (Box::new(io::stdin()), None),
                Some(p) => {
                    let f = File::open(p).with_context(|| format!("open {}", p.display()))?;
                    let len = f.metadata().ok().map(|m| m.len());
                    // A larger readahead window: the whole file is read once,
                    // in order. Only a hint; a pipe or odd file just says no.
                    let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::Sequential);
                    (Box::new(f), len)
                }
            };
            let mut input = progress::reader(input, len, "import");
            let r = d.import_with(&i, opt_id(&parent)?.as_ref(), &mut input, &opts)?;
            drop(input);
            if out.json {
                out.print(json!({
                    "id": i.as_str(),
                    "size": r.size,
                    "entries": r.entries,
                    "tar_bytes": r.tar_bytes,
                    "digest": r.digest,
                    "compression": r.compression,
                    "compressed_digest": r.compressed_digest,
                }));
            } else {
                let compressed = match (&r.compression, &r.compressed_digest) {
                    (Some(c), Some(cd)) => format!(" compression={c} compressed_digest={cd}"),
                    _ => String::new(),
                };
                println!(
                    "{i} size={} entries={} digest={}{compressed}",
                    r.size, r.entries, r.digest
                );
            }
            Ok(())
        }
        Command::Export {
            id: i,
            parent,
            output,
        } => {
            let i = id(&i)?;
            let parent = opt_id(&parent)?;
            let sink: Box<dyn Write> = match &output {
                Some(p) => {
                    Box::new(File::create(p).with_context(|| format!("create {}", p.display()))?)
                }
                None => {
                    if io::stdout().is_terminal() {
                        bail!("refusing to write a tar to a terminal; use -o FILE or a pipe");
                    }
                    // A pipe's default 64 KiB makes writer and reader take
                    // turns thousands of times per layer; 1 MiB matches our
                    // write size. Only a hint: a non-pipe or a capped
                    // system keeps what it has.
                    let _ = rustix::pipe::fcntl_setpipe_size(io::stdout(), 1 << 20);
                    Box::new(io::stdout().lock())
                }
            };
            let mut sink = progress::writer(io::BufWriter::with_capacity(1 << 20, sink), "export");
            let bytes = d.diff(&i, parent.as_ref(), &mut sink)?;
            sink.flush().context("flush output")?;
            drop(sink);
            if out.json && output.is_some() {
                out.print(json!({ "id": i.as_str(), "bytes": bytes }));
            }
            Ok(())
        }
        Command::Changes { id: i, parent } => {
            let i = id(&i)?;
            let changes = d.changes(&i, opt_id(&parent)?.as_ref())?;
            if out.json {
                let v: Vec<_> = changes
                    .iter()
                    .map(|c| json!({ "Path": strata_fs::display_path(&c.path), "Kind": c.kind as u8 }))
                    .collect();
                out.print(json!(v));
            } else {
                let mut o = io::stdout().lock();
                for c in &changes {
                    let k = match c.kind {
                        ChangeKind::Add => 'A',
                        ChangeKind::Modify => 'C',
                        ChangeKind::Delete => 'D',
                    };
                    writeln!(o, "{k} {}", strata_fs::display_path(&c.path))?;
                }
            }
            Ok(())
        }
        Command::DiffSize { id: i, parent } => {
            let i = id(&i)?;
            let size = d.diff_size(&i, opt_id(&parent)?.as_ref())?;
            if out.json {
                out.print(json!({ "id": i.as_str(), "size": size }));
            } else {
                println!("{size}");
            }
            Ok(())
        }
        Command::Mount { id: i } => {
            let i = id(&i)?;
            let path = d.get(&i, "")?;
            if out.json {
                out.print(json!({ "id": i.as_str(), "path": path }));
            } else {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Unmount { id: i } => {
            let i = id(&i)?;
            d.put(&i)?;
            out.done(&i, "unmounted")
        }
        Command::Rm { id: i } => {
            let i = id(&i)?;
            d.remove(&i)?;
            out.done(&i, "removed")
        }
        Command::Ls => {
            let layers = d.list()?;
            // Layers that are containerd snapshots show their names.
            let names = strata_snapshotter::names(d.home())?;
            if out.json {
                let mut rows = serde_json::to_value(&layers)?;
                for row in rows.as_array_mut().into_iter().flatten() {
                    let n = row["id"].as_str().and_then(|i| names.get(i));
                    if let (Some(n), Some(o)) = (n, row.as_object_mut()) {
                        o.insert(
                            "containerd".into(),
                            serde_json::json!({
                                "key": n.key,
                                "kind": n.kind.as_str(),
                                "parent": n.parent,
                            }),
                        );
                    }
                }
                out.print(rows);
            } else {
                println!(
                    "{:<24} {:<24} {:<4} {:>12}  {:<71}  CONTAINERD",
                    "ID", "PARENT", "KIND", "SIZE", "DIGEST"
                );
                for m in &layers {
                    let (size, digest) = match &m.import {
                        Some(i) => (i.size.to_string(), i.digest.as_str()),
                        None => ("-".into(), "-"),
                    };
                    let kind = serde_json::to_value(m.kind)?;
                    println!(
                        "{:<24} {:<24} {:<4} {:>12}  {:<71}  {}",
                        m.id,
                        m.parent.as_deref().unwrap_or("-"),
                        kind.as_str().unwrap_or("?"),
                        size,
                        digest,
                        names.get(&m.id).map_or("-", |n| n.key.as_str())
                    );
                }
            }
            Ok(())
        }
        Command::Info { id: i } => {
            let i = id(&i)?;
            let meta = d.info(&i)?;
            let metadata = d.metadata(&i)?;
            let chain: Vec<String> = d
                .store()
                .chain(&LayerId::new(&meta.id)?)?
                .iter()
                .map(|c| c.to_string())
                .collect();
            let mut v = serde_json::to_value(&meta)?;
            v["chain"] = json!(chain);
            v["metadata"] = json!(metadata);
            if out.json {
                out.print(v);
            } else {
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Ok(())
        }
        Command::Status => {
            let status = d.status();
            if out.json {
                let m: BTreeMap<_, _> = status.into_iter().collect();
                out.print(json!(m));
            } else {
                for (k, v) in status {
                    println!("{k}: {v}");
                }
            }
            Ok(())
        }
        Command::Serve(_) => unreachable!("serve returns above, before a driver is opened"),
        Command::WindowsLayer(_) => unreachable!("windows-layer returns above"),
        Command::Cleanup => {
            let r = d.cleanup()?;
            if out.json {
                out.print(serde_json::to_value(&r)?);
            } else {
                println!(
                    "staging removed: {}, removals finished: {}, errors: {}",
                    r.staging_removed.len(),
                    r.removals_finished.len(),
                    r.errors.len()
                );
                for e in &r.errors {
                    println!("  {e}");
                }
            }
            Ok(())
        }
    }
}

/// Prints results as text or JSON.
struct Output {
    json: bool,
}

impl Output {
    fn print(&self, v: serde_json::Value) {
        println!("{v}");
    }

    fn done(&self, id: &LayerId, what: &str) -> Result<()> {
        if self.json {
            self.print(json!({ "id": id.as_str(), "result": what }));
        } else {
            println!("{id} {what}");
        }
        Ok(())
    }
}
