use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use plugin_abi::{
    ConfigKey, Driver, Feed, Health, ObjectEntry, ObjectInfo, ObjectRead, ObjectStoreBasic, ObjectUpload,
    PluginError, PluginResult,
};

use crate::config::Config;
use crate::names::{encoded, file_name, key_file, named, Named, TEMPORARY};

/// Bytes read from a file per chunk handed to the host.
const READ_CHUNK: usize = 256 * 1024;
/// A temporary file this old belongs to no upload still running (a crash left it).
const STALE_UPLOAD: Duration = Duration::from_secs(24 * 3600);

pub struct Files {
    dir: PathBuf,
    fsync: bool,
}

fn io_error(what: &str, path: &std::path::Path, error: std::io::Error) -> PluginError {
    let message = format!("files: {what} {}: {error}", path.display());
    match error.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            PluginError::resource_exhausted(message)
        }
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            PluginError::failed_precondition(message)
        }
        _ => PluginError::unavailable(message),
    }
}

fn info(metadata: &std::fs::Metadata) -> ObjectInfo {
    let modified = metadata.modified().ok().and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok());
    ObjectInfo { size: metadata.len(), modified_unix_ms: modified.map_or(0, |at| at.as_millis() as i64) }
}

impl Files {
    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(file_name(key))
    }

    /// Removes what crashed uploads left behind; recent ones may belong to another
    /// instance (a reload runs two) and are left alone.
    async fn remove_stale_uploads(&self) {
        let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await else { return };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let stale = entry.file_name().to_string_lossy().starts_with(TEMPORARY)
                && entry
                    .metadata()
                    .await
                    .ok()
                    .and_then(|metadata| metadata.modified().ok())
                    .and_then(|modified| modified.elapsed().ok())
                    .is_some_and(|age| age > STALE_UPLOAD);
            if stale {
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
    }
}

impl Driver for Files {
    type Config = Config;

    fn check(config: &Config) -> PluginResult<()> {
        config.check()
    }

    async fn create(config: Config) -> PluginResult<Self> {
        let dir = PathBuf::from(&config.path);
        tokio::fs::create_dir_all(&dir).await.map_err(|error| io_error("cannot create", &dir, error))?;
        let files = Files { dir, fsync: config.fsync };
        files.remove_stale_uploads().await;
        Ok(files)
    }

    fn config_keys() -> Vec<ConfigKey> {
        plugin_abi::config_keys_of::<Config>()
    }

    async fn health(&self) -> Health {
        match tokio::fs::metadata(&self.dir).await {
            Ok(metadata) if metadata.is_dir() => Health::serving(),
            Ok(_) => Health::unhealthy(format!("{} is not a directory", self.dir.display())),
            Err(error) => Health::unhealthy(format!("{}: {error}", self.dir.display())),
        }
    }
}

impl ObjectStoreBasic for Files {
    type Upload = Upload;

    async fn put(&self, key: &str) -> PluginResult<Upload> {
        let temporary = self.dir.join(format!("{TEMPORARY}{:032x}", fastrand::u128(..)));
        let file = tokio::fs::File::create(&temporary)
            .await
            .map_err(|error| io_error("cannot create", &temporary, error))?;
        Ok(Upload {
            file,
            temporary,
            target: self.path(key),
            key_file: key_file(key).map(|name| (self.dir.join(name), key.to_owned())),
            dir: self.dir.clone(),
            fsync: self.fsync,
            written: 0,
        })
    }

    async fn get(&self, key: &str) -> PluginResult<Option<ObjectRead>> {
        let path = self.path(key);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error("cannot open", &path, error)),
        };
        let metadata = file.metadata().await.map_err(|error| io_error("cannot read", &path, error))?;
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            loop {
                let mut chunk = vec![0u8; READ_CHUNK];
                let item = match file.read(&mut chunk).await {
                    Ok(0) => return,
                    Ok(read) => {
                        chunk.truncate(read);
                        Ok(chunk)
                    }
                    Err(error) => Err(io_error("cannot read", &path, error)),
                };
                let failed = item.is_err();
                if sender.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Some(ObjectRead { info: info(&metadata), chunks: Feed::from_receiver(receiver) }))
    }

    async fn head(&self, key: &str) -> PluginResult<Option<ObjectInfo>> {
        let path = self.path(key);
        match tokio::fs::metadata(&path).await {
            Ok(metadata) => Ok(Some(info(&metadata))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error("cannot read", &path, error)),
        }
    }

    async fn delete(&self, key: &str) -> PluginResult<bool> {
        let path = self.path(key);
        let deleted = match tokio::fs::remove_file(&path).await {
            Ok(()) => true,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
            Err(error) => return Err(io_error("cannot delete", &path, error)),
        };
        if let Some(name) = key_file(key) {
            let _ = tokio::fs::remove_file(self.dir.join(name)).await;
        }
        Ok(deleted)
    }

    /// Reads the whole directory for each page, in key order: a sweep's cost, not a
    /// request's, and files keep no index that could go stale.
    async fn list(&self, prefix: &str, after: &str, limit: u32) -> PluginResult<Vec<ObjectEntry>> {
        let dir_error = |error| io_error("cannot list", &self.dir, error);
        let mut entries = tokio::fs::read_dir(&self.dir).await.map_err(dir_error)?;
        let readable_prefix = encoded(prefix);
        let mut found = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(dir_error)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = match named(&name) {
                Named::Key(key) if name.starts_with(&readable_prefix) => key,
                Named::InKeyFile(key_file) => {
                    match tokio::fs::read_to_string(self.dir.join(key_file)).await {
                        Ok(key) => key,
                        Err(_) => continue, // written before 1.3, or its upload is finishing
                    }
                }
                _ => continue,
            };
            if !key.starts_with(prefix) || key.as_str() <= after {
                continue;
            }
            // Gone between the listing and now: deleted during the listing.
            if let Ok(metadata) = entry.metadata().await {
                found.push(ObjectEntry { key, info: info(&metadata) });
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        found.truncate(limit as usize);
        Ok(found)
    }
}

/// An object being written to its temporary file.
pub struct Upload {
    file: tokio::fs::File,
    temporary: PathBuf,
    target: PathBuf,
    /// For a key whose file name is its hash: where its key is kept, and the key.
    key_file: Option<(PathBuf, String)>,
    dir: PathBuf,
    fsync: bool,
    written: u64,
}

impl ObjectUpload for Upload {
    async fn write(&mut self, chunk: Vec<u8>) -> PluginResult<()> {
        self.file
            .write_all(&chunk)
            .await
            .map_err(|error| io_error("cannot write", &self.temporary, error))?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    async fn finish(mut self) -> PluginResult<ObjectInfo> {
        let failed = |what: &str, error| io_error(what, &self.temporary, error);
        self.file.flush().await.map_err(|error| failed("cannot write", error))?;
        if self.fsync {
            self.file.sync_all().await.map_err(|error| failed("cannot sync", error))?;
        }
        if let Some((path, key)) = &self.key_file {
            tokio::fs::write(path, key).await.map_err(|error| io_error("cannot write", path, error))?;
        }
        tokio::fs::rename(&self.temporary, &self.target)
            .await
            .map_err(|error| io_error("cannot rename into", &self.target, error))?;
        if self.fsync {
            // The rename itself is durable once the directory is synced.
            if let Ok(dir) = tokio::fs::File::open(&self.dir).await {
                let _ = dir.sync_all().await;
            }
        }
        let modified = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        Ok(ObjectInfo { size: self.written, modified_unix_ms: modified.as_millis() as i64 })
    }

    async fn abort(self) {
        // Drop removes the temporary file.
    }
}

impl Drop for Upload {
    /// Whatever ends an upload — abort, a failed or cancelled finish, the instance going
    /// away — its temporary file goes too (after a rename there is none: a no-op).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.temporary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploads_in(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(TEMPORARY))
            .collect()
    }

    #[tokio::test]
    async fn an_upload_dropped_unfinished_leaves_no_temporary_file_and_a_finished_one_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { path: dir.path().display().to_string(), fsync: false };
        let files = Files::create(config).await.unwrap();
        let mut dropped = files.put("a").await.unwrap();
        dropped.write(vec![1; 1000]).await.unwrap();
        assert_eq!(uploads_in(dir.path()).len(), 1, "the upload writes a temporary file");
        // Dropped without abort (a cancelled finish, an instance going away).
        drop(dropped);
        assert!(uploads_in(dir.path()).is_empty(), "{:?}", uploads_in(dir.path()));
        assert_eq!(files.head("a").await.unwrap(), None);

        let mut finished = files.put("b").await.unwrap();
        finished.write(vec![2; 10]).await.unwrap();
        assert_eq!(finished.finish().await.unwrap().size, 10);
        assert!(uploads_in(dir.path()).is_empty());
        assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), vec![2; 10]);
    }

    #[tokio::test]
    async fn a_key_whose_file_name_is_its_hash_is_listed_by_its_key_and_deleted_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { path: dir.path().display().to_string(), fsync: false };
        let files = Files::create(config).await.unwrap();
        let long = format!("ns/{}", "k".repeat(300));
        let mut upload = files.put(&long).await.unwrap();
        upload.write(vec![1; 10]).await.unwrap();
        upload.finish().await.unwrap();
        let listed = files.list("ns/", "", 10).await.unwrap();
        assert_eq!(listed.iter().map(|entry| entry.key.as_str()).collect::<Vec<_>>(), [long.as_str()]);
        assert_eq!(listed[0].info.size, 10);
        assert!(files.delete(&long).await.unwrap());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "the object and its key file are gone: {left:?}");
    }
}
