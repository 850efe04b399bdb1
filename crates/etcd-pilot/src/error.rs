//! Error helpers every module may use; it imports nothing of the crate.

/// An error and its causes on one line, as `{:#}` prints an `anyhow::Error`; a cause whose
/// text an earlier part already holds (the AWS SDK repeats them) is left out.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(next) = source {
        let text = next.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = next.source();
    }
    parts.join(": ")
}
