//! What the CLI prints for people: the only module allowed to write to stdout and stderr
//! directly (logs go through tracing).
//!
//! A closed stdout or stderr (`etcd-pilot local up | head`, a terminal gone) never panics and
//! never stops the program: what cannot be printed is dropped, so `local up` still stops its
//! cluster on Ctrl-C.

use std::io::Write as _;

/// Prints `text` on stdout, with a newline unless it ends with one.
pub(crate) fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = write_line(&mut out, text);
}

/// Prints an error for a person on stderr.
pub(crate) fn error(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write_line(&mut err, &format!("etcd-pilot: {text}"));
}

/// Asks a person `question` on stderr (no newline) and reads one line of the answer from
/// stdin, trimmed.
pub(crate) fn ask(question: &str) -> std::io::Result<String> {
    {
        let mut err = std::io::stderr().lock();
        err.write_all(question.as_bytes())?;
        err.flush()?;
    }
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)?;
    Ok(line.trim().to_owned())
}

fn write_line(out: &mut impl std::io::Write, text: &str) -> std::io::Result<()> {
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()
}
