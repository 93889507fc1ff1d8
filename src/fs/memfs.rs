//! An in-memory [`Filesystem`] for unit tests of inspection and conversion
//! logic, so they need no disk image.

use super::{DirEntry, FileType, Filesystem, FsKind, Metadata};
use std::collections::BTreeMap;
use v2x_formats::{Error, Result};

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// A tree of directories, files and symlinks held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemFs {
    nodes: BTreeMap<String, Node>,
    label: Option<String>,
    uuid: Option<String>,
    kind: Option<FsKind>,
}

impl MemFs {
    /// An empty tree with only `/`.
    pub fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_string(), Node::Dir);
        Self {
            nodes,
            label: None,
            uuid: None,
            kind: None,
        }
    }

    /// Sets the kind `kind()` reports (ext by default).
    pub fn with_kind(mut self, kind: FsKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Sets the label and UUID that `label()`/`uuid()` report.
    pub fn with_ids(mut self, label: Option<&str>, uuid: Option<&str>) -> Self {
        self.label = label.map(str::to_string);
        self.uuid = uuid.map(str::to_string);
        self
    }

    fn parents(&mut self, path: &str) {
        let mut cur = String::new();
        let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for p in &parts[..parts.len().saturating_sub(1)] {
            cur.push('/');
            cur.push_str(p);
            self.nodes.entry(cur.clone()).or_insert(Node::Dir);
        }
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.parents(path);
        self.nodes.insert(path.to_string(), Node::Dir);
        self
    }

    /// Adds a file (and its parent directories).
    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.parents(path);
        self.nodes.insert(path.to_string(), Node::File(data.to_vec()));
        self
    }

    /// Adds a symlink (and its parent directories).
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.parents(path);
        self.nodes
            .insert(path.to_string(), Node::Symlink(target.to_string()));
        self
    }

    fn get(&self, path: &str) -> Result<&Node> {
        self.nodes
            .get(path)
            .ok_or_else(|| Error::not_found(path.to_string()))
    }
}

fn type_of(n: &Node) -> FileType {
    match n {
        Node::Dir => FileType::Dir,
        Node::File(_) => FileType::File,
        Node::Symlink(_) => FileType::Symlink,
    }
}

impl Filesystem for MemFs {
    fn kind(&self) -> FsKind {
        self.kind.unwrap_or(FsKind::Ext)
    }
    fn kind_name(&self) -> &'static str {
        "memfs"
    }
    fn label(&self) -> Option<String> {
        self.label.clone()
    }
    fn uuid(&self) -> Option<String> {
        self.uuid.clone()
    }
    fn lstat(&self, path: &str) -> Result<Metadata> {
        let n = self.get(path)?;
        let size = match n {
            Node::Dir => 0,
            Node::File(d) => d.len() as u64,
            Node::Symlink(t) => t.len() as u64,
        };
        Ok(Metadata {
            file_type: type_of(n),
            size,
            mode: None,
            uid: None,
            gid: None,
            ino: None,
        })
    }
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        if !matches!(self.get(path)?, Node::Dir) {
            return Err(Error::invalid(format!("{path} is not a directory")));
        }
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        Ok(self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| k.len() > prefix.len() && !k[prefix.len()..].contains('/'))
            .map(|(k, n)| DirEntry {
                name: k[prefix.len()..].to_string(),
                file_type: type_of(n),
            })
            .collect())
    }
    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        match self.get(path)? {
            Node::File(d) => {
                let start = (offset.min(d.len() as u64)) as usize;
                let end = (offset.saturating_add(len).min(d.len() as u64)) as usize;
                Ok(d[start..end].to_vec())
            }
            _ => Err(Error::invalid(format!("{path} is not a regular file"))),
        }
    }
    fn read_link(&self, path: &str) -> Result<String> {
        match self.get(path)? {
            Node::Symlink(t) => Ok(t.clone()),
            _ => Err(Error::invalid(format!("{path} is not a symlink"))),
        }
    }
}
