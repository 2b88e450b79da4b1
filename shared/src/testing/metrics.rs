//! The metrics the README documents, read from its Metrics table, so the tests can hold a fresh
//! process's `/metrics` to them.

/// A row of the README's Metrics table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentedMetric {
    /// Its name, e.g. `comet_jobs_total`.
    pub name: String,
    /// `counter`, `histogram` or `gauge`.
    pub kind: String,
    /// The processes that export it, as the table's "From" column says (`API`, `worker`).
    pub from: String,
}

/// Every row of the Metrics table of `readme` (a row starts with ``| `comet_``).
pub fn documented_metrics(readme: &str) -> Vec<DocumentedMetric> {
    readme
        .lines()
        .filter(|l| l.starts_with("| `comet_"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // ["", name, type, labels, from, meaning, ""]
            Some(DocumentedMetric {
                name: cells.get(1)?.trim_matches('`').to_owned(),
                kind: (*cells.get(2)?).to_owned(),
                from: (*cells.get(4)?).to_owned(),
            })
        })
        .collect()
}

/// Whether a Prometheus text exposition has a series of `name` (its `# TYPE` line).
pub fn exports(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| l.strip_prefix("# TYPE ").and_then(|r| r.split(' ').next()) == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_row_is_read_and_other_lines_are_not() {
        let readme = "text `comet_x_total`\n| Metric | Type |\n\
                      | `comet_jobs_total` | counter | `queue` | worker | Attempts. |\n";
        assert_eq!(
            documented_metrics(readme),
            [DocumentedMetric {
                name: "comet_jobs_total".into(),
                kind: "counter".into(),
                from: "worker".into(),
            }]
        );
        assert!(exports("# TYPE comet_a counter\ncomet_a 0\n", "comet_a"));
        assert!(!exports("# TYPE comet_ab counter\n", "comet_a"));
    }
}
