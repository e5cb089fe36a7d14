//! Consumer groups' committed offsets: one JSON file per group in `<dir>/groups/`,
//! replaced atomically (temp file, fsync, rename, fsync directory) on each commit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weir_core::{Error, TopicPartition};

use crate::fsutil::{create_dir_durable, write_atomic};
use crate::Result;

/// The format version written to, and accepted from, group offsets files.
const GROUP_FILE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct GroupFile {
    version: u32,
    group: String,
    offsets: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    topic: String,
    partition: i32,
    offset: i64,
}

/// Committed offsets of every group, cached in memory.
#[derive(Debug)]
pub(crate) struct GroupStore {
    dir: PathBuf,
    cache: Mutex<HashMap<String, BTreeMap<TopicPartition, i64>>>,
}

/// The file name of a group: hex of its UTF-8 bytes, so that any group id is a safe
/// file name.
fn file_name(group: &str) -> String {
    let mut s = String::with_capacity(group.len() * 2 + 5);
    for b in group.bytes() {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s.push_str(".json");
    s
}

impl GroupStore {
    pub(crate) fn new(log_dir: &Path) -> Self {
        Self {
            dir: log_dir.join("groups"),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, group: &str) -> PathBuf {
        self.dir.join(file_name(group))
    }

    fn load(&self, group: &str) -> Result<BTreeMap<TopicPartition, i64>> {
        let path = self.path(group);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let file: GroupFile = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: path.clone(),
            position: 0,
            reason: format!("unreadable group offsets file: {e}"),
        })?;
        if file.version != GROUP_FILE_VERSION {
            return Err(Error::Corrupt {
                path,
                position: 0,
                reason: format!(
                    "group offsets file version {} (this weir reads version {GROUP_FILE_VERSION})",
                    file.version
                ),
            });
        }
        if file.group != group {
            return Err(Error::Corrupt {
                path,
                position: 0,
                reason: format!("file is for group `{}`, expected `{group}`", file.group),
            });
        }
        Ok(file
            .offsets
            .into_iter()
            .map(|e| (TopicPartition::new(e.topic, e.partition), e.offset))
            .collect())
    }

    /// The group's committed offsets (empty for an unknown group).
    pub(crate) fn get(&self, group: &str) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut cache = self.cache.lock();
        if let Some(o) = cache.get(group) {
            return Ok(o.clone());
        }
        let loaded = self.load(group)?;
        cache.insert(group.to_owned(), loaded.clone());
        Ok(loaded)
    }

    /// Merges `offsets` into the group's stored offsets and writes them durably.
    pub(crate) fn commit(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let mut cache = self.cache.lock();
        let mut merged = match cache.get(group) {
            Some(o) => o.clone(),
            None => self.load(group)?,
        };
        for (tp, &o) in offsets {
            merged.insert(tp.clone(), o);
        }
        let file = GroupFile {
            version: GROUP_FILE_VERSION,
            group: group.to_owned(),
            offsets: merged
                .iter()
                .map(|(tp, &offset)| Entry {
                    topic: tp.topic().to_owned(),
                    partition: tp.partition(),
                    offset,
                })
                .collect(),
        };
        let path = self.path(group);
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
        create_dir_durable(&self.dir)?;
        write_atomic(&path, &bytes)?;
        cache.insert(group.to_owned(), merged);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_file_names_are_safe() {
        assert_eq!(file_name("a/b"), "612f62.json");
        assert_eq!(file_name(""), ".json");
    }
}
