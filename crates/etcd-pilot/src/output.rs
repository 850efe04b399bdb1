//! What the CLI prints for people: the only module allowed to write to stdout and stderr
//! directly (logs go through tracing).
#![allow(clippy::print_stdout, clippy::print_stderr)]

/// Prints `text` on stdout, with a newline unless it ends with one.
pub(crate) fn print(text: &str) {
    if text.ends_with('\n') {
        print!("{text}");
    } else {
        println!("{text}");
    }
}

/// Prints an error for a person on stderr.
pub(crate) fn error(text: &str) {
    eprintln!("etcd-pilot: {text}");
}
