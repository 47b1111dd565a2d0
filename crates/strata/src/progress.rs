//! Progress display for long transfers: a bar on a terminal (stderr), and
//! nothing at all when stderr is piped, so scripts see clean output.

use std::io::{self, IsTerminal, Read, Write};

use indicatif::{ProgressBar, ProgressStyle};

fn bar(len: Option<u64>, what: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (pb, template) = match len {
        Some(n) => (
            ProgressBar::new(n),
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{msg} {spinner} {bytes} {bytes_per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// Wraps a reader of `len` bytes (if known) with a progress bar.
pub fn reader<R: Read>(r: R, len: Option<u64>, what: &str) -> Progress<R> {
    Progress {
        inner: r,
        bar: bar(len, what),
    }
}

/// Wraps a writer with a byte-counting progress spinner.
pub fn writer<W: Write>(w: W, what: &str) -> Progress<W> {
    Progress {
        inner: w,
        bar: bar(None, what),
    }
}

/// A reader or writer that advances a progress bar.
pub struct Progress<T> {
    inner: T,
    bar: ProgressBar,
}

impl<T> Drop for Progress<T> {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

impl<W: Write> Write for Progress<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
