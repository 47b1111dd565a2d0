//! Times driver calls inside one process, for `bench/overlay.py`: the CLI
//! pays a process start and a driver open (with its overlay probe mounts)
//! on every call, which hides what the operations themselves cost an
//! engine that keeps the driver open. Prints one line per repetition:
//! nanoseconds (for `getput`, get and put separately).
//!
//! usage: driver_timer HOME getput|changes|diff-size ID PARENT|- REPS warm|cold [DRIVER_OPT...]

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use strata_driver::LayerId;

fn drop_caches() -> Result<()> {
    std::process::Command::new("sync")
        .status()
        .context("sync")?;
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").context("drop caches (needs root)")
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 7 {
        bail!(
            "usage: driver_timer HOME getput|changes|diff-size ID PARENT|- REPS warm|cold [DRIVER_OPT...]"
        );
    }
    let id = LayerId::new(&a[3])?;
    let parent = if a[4] == "-" {
        None
    } else {
        Some(LayerId::new(&a[4])?)
    };
    let reps: usize = a[5].parse().context("REPS")?;
    let cold = a[6] == "cold";
    let d = strata_driver::open(Some("overlay"), Path::new(&a[1]), &a[7..])?;
    for _ in 0..reps {
        if cold {
            drop_caches()?;
        }
        let t = Instant::now();
        match a[2].as_str() {
            "getput" => {
                d.get(&id, "")?;
                let g = t.elapsed().as_nanos();
                let t = Instant::now();
                d.put(&id)?;
                println!("{g} {}", t.elapsed().as_nanos());
                continue;
            }
            "changes" => {
                if d.changes(&id, parent.as_ref())?.is_empty() {
                    bail!("no changes: the benchmark setup is wrong");
                }
            }
            "diff-size" => {
                if d.diff_size(&id, parent.as_ref())? == 0 {
                    bail!("diff size 0: the benchmark setup is wrong");
                }
            }
            op => bail!("unknown op {op}"),
        }
        println!("{}", t.elapsed().as_nanos());
    }
    Ok(())
}
