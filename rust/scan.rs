//! Reading a registry's layout for garbage collection: every repository's links, every blob.
//!
//! A store of 100,000 blobs holds several hundred thousand directories; garbage collection must
//! know all of them. This reads directories only (`getdents`, whose entries say whether they
//! are directories without a stat), a few at once, and stats links only when their times are
//! asked for. Names are checked as the Python layer checks digests (algorithm known, lowercase
//! hex of the algorithm's length); anything else is skipped, as distribution skips it.
//!
//! A directory counts as its link (`_layers/<alg>/<hex>/` as that layer's link): one whose
//! `link` file is missing (being written or deleted) marks a little more, never less.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rayon::prelude::*;

/// A link found in a repository: its digest (`<algorithm>:<hex>`), its time when asked for
/// (seconds since the epoch) and, for a link whose content matters, that content.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub digest: String,
    pub time: Option<f64>,
    pub content: Option<String>,
}

/// One tag: its name, its `current/link` content (`None`: missing) and its index's digests.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub name: String,
    pub current: Option<String>,
    pub index: Vec<String>,
}

/// What one repository links.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Repository {
    pub name: String,
    pub layers: Vec<Link>,
    pub revisions: Vec<Link>,
    pub tags: Vec<Tag>,
}

/// The algorithms digests may name, with their hex lengths.
pub type Algorithms = [(String, usize)];

fn hex_length(algorithms: &Algorithms, name: &str) -> Option<usize> {
    algorithms.iter().find(|(a, _)| a == name).map(|(_, n)| *n)
}

fn is_hex(name: &str, length: usize) -> bool {
    name.len() == length
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The subdirectories of `path` (names), without a stat each; none if it is missing.
fn dirs(path: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(path) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            if !entry.file_type().ok()?.is_dir() {
                return None;
            }
            entry.file_name().into_string().ok()
        })
        .collect()
}

fn mtime(path: &Path) -> Option<f64> {
    let meta = fs::metadata(path).ok()?;
    Some(meta.mtime() as f64 + meta.mtime_nsec() as f64 / 1e9)
}

fn read_text(path: &Path) -> Option<String> {
    fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `<algorithm>/<hex>/` directories below `path`, as links: `read` says, per algorithm,
/// whether each link's content is wanted.
fn links(
    path: &Path,
    algorithms: &Algorithms,
    times: bool,
    read: impl Fn(&str) -> bool,
) -> Vec<Link> {
    let mut found = Vec::new();
    for algorithm in dirs(path) {
        let Some(length) = hex_length(algorithms, &algorithm) else {
            continue;
        };
        let base = path.join(&algorithm);
        for hex in dirs(&base) {
            if !is_hex(&hex, length) {
                continue;
            }
            let link = base.join(&hex).join("link");
            found.push(Link {
                digest: format!("{algorithm}:{hex}"),
                time: if times { mtime(&link) } else { None },
                content: if read(&algorithm) {
                    read_text(&link)
                } else {
                    None
                },
            });
        }
    }
    found
}

fn scan_repository(
    path: &Path,
    name: String,
    algorithms: &Algorithms,
    canonical: &str,
    times: bool,
) -> Repository {
    let layers = links(&path.join("_layers"), algorithms, times, |a| a != canonical);
    let manifests = path.join("_manifests");
    let revisions = links(&manifests.join("revisions"), algorithms, times, |_| false);
    let tags_dir = manifests.join("tags");
    let tags = dirs(&tags_dir)
        .into_iter()
        .map(|tag| {
            let base = tags_dir.join(&tag);
            Tag {
                current: read_text(&base.join("current").join("link")),
                index: links(&base.join("index"), algorithms, false, |_| false)
                    .into_iter()
                    .map(|link| link.digest)
                    .collect(),
                name: tag,
            }
        })
        .collect();
    Repository {
        name,
        layers,
        revisions,
        tags,
    }
}

/// The repository at `path` (named `name`), if it is one, and every repository below it.
fn scan_tree(
    path: &Path,
    name: &str,
    algorithms: &Algorithms,
    canonical: &str,
    times: bool,
    found: &mut Vec<Repository>,
) {
    let children = dirs(path);
    if children
        .iter()
        .any(|c| c == "_layers" || c == "_manifests" || c == "_uploads")
    {
        found.push(scan_repository(
            path,
            name.to_owned(),
            algorithms,
            canonical,
            times,
        ));
    }
    for child in children.iter().filter(|c| !c.starts_with('_')) {
        scan_tree(
            &path.join(child),
            &format!("{name}/{child}"),
            algorithms,
            canonical,
            times,
            found,
        );
    }
}

/// Every repository under the `repositories` directory `root`, read in parallel.
/// Links under `canonical` are not read (they name their own digest); others are.
pub fn scan_repositories(
    root: &Path,
    algorithms: &Algorithms,
    canonical: &str,
    times: bool,
) -> Vec<Repository> {
    let top = dirs(root);
    let mut found: Vec<Repository> = top
        .par_iter()
        .flat_map_iter(|name| {
            let mut found = Vec::new();
            scan_tree(
                &root.join(name),
                name,
                algorithms,
                canonical,
                times,
                &mut found,
            );
            found
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// Every blob under the `blobs` directory `root` (`<algorithm>/<hh>/<hex>/`), as
/// `(algorithm, hex)`, read in parallel.
pub fn scan_blobs(root: &Path, algorithms: &Algorithms) -> Vec<(String, String)> {
    let shards: Vec<(String, usize, String)> = dirs(root)
        .into_iter()
        .filter_map(|a| hex_length(algorithms, &a).map(|n| (a, n)))
        .flat_map(|(a, n)| {
            dirs(&root.join(&a))
                .into_iter()
                .map(move |s| (a.clone(), n, s))
        })
        .collect();
    shards
        .par_iter()
        .flat_map_iter(|(algorithm, length, shard)| {
            dirs(&root.join(algorithm).join(shard))
                .into_iter()
                .filter(|hex| is_hex(hex, *length))
                .map(|hex| (algorithm.clone(), hex))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What a manifest references, as garbage collection marks it: the digests of its `config`,
/// `layers`, `manifests` (an index's children) and `blobs`, those that are digests of
/// `algorithms`; `Err` with the reason for a manifest that cannot be read or parsed.
pub fn references(path: &Path, algorithms: &Algorithms) -> Result<Vec<String>, String> {
    let raw = fs::read(path).map_err(|e| format!("cannot read the manifest: {e}"))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| format!("cannot read the manifest: {e}"))?;
    let mut found = Vec::new();
    let Some(object) = doc.as_object() else {
        return Ok(found);
    };
    let mut descriptors: Vec<&serde_json::Value> = Vec::new();
    if let Some(config) = object.get("config").filter(|c| c.is_object()) {
        descriptors.push(config);
    }
    for key in ["layers", "manifests", "blobs"] {
        if let Some(list) = object.get(key).and_then(|v| v.as_array()) {
            descriptors.extend(list.iter());
        }
    }
    for descriptor in descriptors {
        let Some(digest) = descriptor.get("digest").and_then(|d| d.as_str()) else {
            continue;
        };
        let Some((algorithm, hex)) = digest.split_once(':') else {
            continue;
        };
        if hex_length(algorithms, algorithm).is_some_and(|n| is_hex(hex, n)) {
            found.push(digest.to_owned());
        }
    }
    Ok(found)
}

/// [`references`] of many manifests at once, in parallel, in the order given.
pub fn read_references(
    paths: &[String],
    algorithms: &Algorithms,
) -> Vec<Result<Vec<String>, String>> {
    paths
        .par_iter()
        .map(|p| references(Path::new(p), algorithms))
        .collect()
}

/// Removes each file and then its directory if that is left empty, in parallel: garbage
/// collection's bulk delete on a local filesystem. Missing files are skipped; returns how many
/// files were removed.
pub fn delete_files(paths: &[String]) -> usize {
    paths
        .par_iter()
        .filter(|path| {
            let path = Path::new(path.as_str());
            if fs::remove_file(path).is_err() {
                return false;
            }
            if let Some(parent) = path.parent() {
                let _ = fs::remove_dir(parent); // not empty (written meanwhile), or gone
            }
            true
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn algorithms() -> Vec<(String, usize)> {
        vec![("sha256".into(), 64), ("sha512".into(), 128)]
    }

    fn touch(path: &Path, content: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    #[test]
    fn repositories_nested_with_links_tags_and_junk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let a = "a".repeat(64);
        let b = "b".repeat(128);
        touch(
            &root.join(format!("x/y/_layers/sha256/{a}/link")),
            &format!("sha256:{a}"),
        );
        touch(
            &root.join(format!("x/y/_layers/sha512/{b}/link")),
            &format!("sha256:{a}"),
        );
        touch(&root.join("x/y/_layers/sha256/NOTHEX/link"), "junk");
        touch(&root.join("x/y/_layers/md5/00/link"), "junk");
        touch(
            &root.join(format!("x/y/_manifests/revisions/sha256/{a}/link")),
            "",
        );
        touch(
            &root.join("x/y/_manifests/tags/v1/current/link"),
            &format!("sha256:{a}"),
        );
        touch(
            &root.join(format!("x/y/_manifests/tags/v1/index/sha256/{a}/link")),
            "",
        );
        touch(&root.join("x/y/z/_uploads/u/startedat"), "");
        touch(&root.join("plain/file"), "");
        let found = scan_repositories(root, &algorithms(), "sha256", true);
        let names: Vec<_> = found.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["x/y", "x/y/z"]);
        let repo = &found[0];
        assert_eq!(repo.layers.len(), 2);
        let alias = repo
            .layers
            .iter()
            .find(|l| l.digest.starts_with("sha512"))
            .unwrap();
        assert_eq!(
            alias.content.as_deref(),
            Some(format!("sha256:{a}").as_str())
        );
        let own = repo
            .layers
            .iter()
            .find(|l| l.digest.starts_with("sha256"))
            .unwrap();
        assert_eq!(own.content, None);
        assert!(own.time.is_some());
        assert_eq!(repo.revisions.len(), 1);
        assert_eq!(
            repo.tags[0].current.as_deref(),
            Some(format!("sha256:{a}").as_str())
        );
        assert_eq!(repo.tags[0].index, [format!("sha256:{a}")]);
        assert!(found[1].layers.is_empty() && found[1].tags.is_empty());
        assert!(
            scan_repositories(&root.join("missing"), &algorithms(), "sha256", false).is_empty()
        );
    }

    #[test]
    fn references_of_images_indexes_and_bad_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let image = dir.path().join("image");
        let doc = format!(
            r#"{{"config":{{"digest":"{a}"}},"layers":[{{"digest":"{b}"}},{{"digest":"sha256:BAD"}},{{"nodigest":1}},7],"blobs":[{{"digest":"md5:00"}}]}}"#
        );
        fs::write(&image, doc).unwrap();
        let index = dir.path().join("index");
        fs::write(
            &index,
            format!(r#"{{"manifests":[{{"digest":"{a}"}}],"config":"x"}}"#),
        )
        .unwrap();
        let bad = dir.path().join("bad");
        fs::write(&bad, "{not json").unwrap();
        let list = dir.path().join("list");
        fs::write(&list, "[1,2]").unwrap();
        let paths: Vec<String> = [&image, &index, &bad, &list, &dir.path().join("missing")]
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let found = read_references(&paths, &algorithms());
        assert_eq!(found[0], Ok(vec![a.clone(), b]));
        assert_eq!(found[1], Ok(vec![a]));
        assert!(found[2]
            .as_ref()
            .unwrap_err()
            .starts_with("cannot read the manifest"));
        assert_eq!(found[3], Ok(vec![]));
        assert!(found[4].is_err());
    }

    #[test]
    fn delete_files_removes_files_and_emptied_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("a/data"), "x");
        touch(&root.join("b/data"), "x");
        touch(&root.join("b/other"), "x");
        let paths: Vec<String> = ["a/data", "b/data", "c/data"]
            .iter()
            .map(|p| root.join(p).to_string_lossy().into_owned())
            .collect();
        assert_eq!(delete_files(&paths), 2);
        assert!(!root.join("a").exists());
        assert!(root.join("b/other").exists() && !root.join("b/data").exists());
    }

    #[test]
    fn blobs_by_shard_valid_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let a = "a".repeat(64);
        let c = "c".repeat(64);
        touch(&root.join(format!("sha256/aa/{a}/data")), "x");
        touch(&root.join(format!("sha256/cc/{c}/data")), "x");
        touch(&root.join("sha256/cc/SHORT/data"), "x");
        touch(&root.join("other/aa/x/data"), "x");
        let mut found = scan_blobs(root, &algorithms());
        found.sort();
        assert_eq!(
            found,
            [("sha256".to_string(), a), ("sha256".to_string(), c)]
        );
    }
}
