//! Watches `plugins.toml` and every configured plugin file, and reloads when one changes.
//!
//! The directories are watched rather than the files, so a file renamed into place (the
//! safe way to publish a build) counts as well as one rewritten in place. Changes are
//! debounced: a reload starts once the files have been quiet for `debounce`, so a
//! library being written is not loaded half-way (the loader also hashes what it copies).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::reload::Reloader;

/// A watched file: its directory (canonical) and its name.
type Watched = BTreeSet<(PathBuf, std::ffi::OsString)>;

fn watched(files: &[PathBuf]) -> Watched {
    files
        .iter()
        .filter_map(|file| {
            let directory = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            Some((directory.canonicalize().ok()?, file.file_name()?.to_owned()))
        })
        .collect()
}

fn concerns(watched: &Watched, path: &Path) -> bool {
    let (Some(directory), Some(name)) = (path.parent(), path.file_name()) else { return false };
    let directory = directory.canonicalize().unwrap_or_else(|_| directory.to_path_buf());
    watched.contains(&(directory, name.to_owned()))
}

/// Starts watching; the task runs until the process ends.
pub fn spawn(reloader: Arc<Reloader>, debounce: Duration) -> Result<tokio::task::JoinHandle<()>, String> {
    let (events, mut changes) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher: RecommendedWatcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                if !event.kind.is_access() {
                    for path in event.paths {
                        let _ = events.send(path);
                    }
                }
            }
        })
        .map_err(|e| format!("cannot watch files: {e}"))?;
    let mut files = watched(&reloader.watched_files());
    let mut directories = watch_directories(&mut watcher, &files, &BTreeSet::new());
    Ok(tokio::spawn(async move {
        while let Some(path) = changes.recv().await {
            if !concerns(&files, &path) {
                continue;
            }
            // Wait for quiet: a further change to a watched file restarts the wait (other
            // files in the same directories do not), for at most 20 debounce periods.
            let mut changed = vec![path];
            let give_up = tokio::time::Instant::now() + debounce * 20;
            let mut quiet_until = tokio::time::Instant::now() + debounce;
            while let Ok(Some(more)) = tokio::time::timeout_at(quiet_until.min(give_up), changes.recv()).await
            {
                if concerns(&files, &more) {
                    quiet_until = tokio::time::Instant::now() + debounce;
                    if !changed.contains(&more) {
                        changed.push(more);
                    }
                }
            }
            let names: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
            reloader.reload(&format!("changed: {}", names.join(", "))).await;
            files = watched(&reloader.watched_files());
            directories = watch_directories(&mut watcher, &files, &directories);
        }
    }))
}

/// Watches the directories of `files` not watched yet; returns the set now watched.
fn watch_directories(
    watcher: &mut RecommendedWatcher,
    files: &Watched,
    already: &BTreeSet<PathBuf>,
) -> BTreeSet<PathBuf> {
    let mut now = already.clone();
    for (directory, _) in files {
        if now.contains(directory) {
            continue;
        }
        match watcher.watch(directory, RecursiveMode::NonRecursive) {
            Ok(()) => {
                now.insert(directory.clone());
            }
            Err(error) => {
                tracing::warn!(directory = %directory.display(), %error, "cannot watch for changes")
            }
        }
    }
    now
}
