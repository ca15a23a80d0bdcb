//! Bindings for `crate::scan`: garbage collection's reading of a local layout.

use std::path::Path;

use pyo3::prelude::*;

use crate::scan;

/// A layer or revision link: `(digest, time, content)`.
type LinkRow = (String, Option<f64>, Option<String>);
/// A tag: `(name, current link content, index digests)`.
type TagRow = (String, Option<String>, Vec<String>);
/// A repository: `(name, layers, revisions, tags)`.
type RepositoryRow = (String, Vec<LinkRow>, Vec<LinkRow>, Vec<TagRow>);

fn link_row(link: scan::Link) -> LinkRow {
    (link.digest, link.time, link.content)
}

/// Every repository under the local `repositories` directory `root` (see `crate::scan`).
#[pyfunction]
#[pyo3(signature = (root, algorithms, canonical, times))]
pub fn scan_repositories(
    py: Python<'_>,
    root: &str,
    algorithms: Vec<(String, usize)>,
    canonical: &str,
    times: bool,
) -> Vec<RepositoryRow> {
    let found =
        py.detach(|| scan::scan_repositories(Path::new(root), &algorithms, canonical, times));
    found
        .into_iter()
        .map(|repo| {
            (
                repo.name,
                repo.layers.into_iter().map(link_row).collect(),
                repo.revisions.into_iter().map(link_row).collect(),
                repo.tags
                    .into_iter()
                    .map(|t| (t.name, t.current, t.index))
                    .collect(),
            )
        })
        .collect()
}

/// Every blob under the local `blobs` directory `root`, as `(algorithm, hex)`.
#[pyfunction]
pub fn scan_blobs(
    py: Python<'_>,
    root: &str,
    algorithms: Vec<(String, usize)>,
) -> Vec<(String, String)> {
    py.detach(|| scan::scan_blobs(Path::new(root), &algorithms))
}

/// What each manifest file references (see `crate::scan::references`), in parallel: the
/// digests, or `None` and the reason it cannot be read.
#[pyfunction]
pub fn read_references(
    py: Python<'_>,
    paths: Vec<String>,
    algorithms: Vec<(String, usize)>,
) -> Vec<(Option<Vec<String>>, Option<String>)> {
    py.detach(|| scan::read_references(&paths, &algorithms))
        .into_iter()
        .map(|found| match found {
            Ok(digests) => (Some(digests), None),
            Err(why) => (None, Some(why)),
        })
        .collect()
}

/// Removes each file and its emptied directory, in parallel; how many files were removed.
#[pyfunction]
pub fn delete_files(py: Python<'_>, paths: Vec<String>) -> usize {
    py.detach(|| scan::delete_files(&paths))
}
