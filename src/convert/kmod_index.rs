//! Writing kmod's binary module indexes (`modules.dep.bin`,
//! `modules.alias.bin`), so an appended initramfs can carry a small index
//! covering just the modules it holds instead of the guest's full one.
//!
//! Format (kmod index version 2.1, big-endian): a 12-byte header (magic
//! `0xB007F457`, version `0x00020001`, root node offset), then trie nodes.
//! A node reference is a file offset whose top bits say what the node holds:
//! a NUL-terminated prefix, a child table (first and last byte, then one
//! reference per byte in between, 0 for none), and values (count, then
//! priority + NUL-terminated string each), in that order.

use std::collections::BTreeMap;
use v2x_formats::{Error, Result};

const MAGIC: u32 = 0xB007_F457;
const VERSION: u32 = 0x0002_0001;
const NODE_PREFIX: u32 = 0x8000_0000;
const NODE_VALUES: u32 = 0x4000_0000;
const NODE_CHILDS: u32 = 0x2000_0000;
const NODE_MASK: u32 = 0x0FFF_FFFF;

/// Largest index we write (node offsets have 28 bits).
pub const MAX_INDEX_BYTES: usize = NODE_MASK as usize;

#[derive(Default)]
struct Trie {
    children: BTreeMap<u8, Trie>,
    values: Vec<(u32, String)>,
}

/// A kmod index under construction.
#[derive(Default)]
pub struct IndexBuilder {
    root: Trie,
}

impl IndexBuilder {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` under `key` with a priority (lower sorts first, as depmod's line order).
    pub fn insert(&mut self, key: &str, value: &str, priority: u32) -> Result<()> {
        if key.bytes().any(|b| b == 0) || value.bytes().any(|b| b == 0) {
            return Err(Error::invalid("kmod index keys and values cannot contain NUL"));
        }
        let mut node = &mut self.root;
        for b in key.bytes() {
            node = node.children.entry(b).or_default();
        }
        if !node.values.iter().any(|(_, v)| v == value) {
            node.values.push((priority, value.to_string()));
            node.values.sort();
        }
        Ok(())
    }

    /// Serialises the index.
    pub fn finish(self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; 12];
        let root = write_node(&self.root, &mut out)?;
        out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&VERSION.to_be_bytes());
        out[8..12].copy_from_slice(&root.to_be_bytes());
        Ok(out)
    }
}

/// Writes `node` (children first) and returns its flagged offset.
fn write_node(node: &Trie, out: &mut Vec<u8>) -> Result<u32> {
    // Collapse a chain of single-child, value-less nodes into a prefix.
    let mut prefix = Vec::new();
    let mut cur = node;
    while cur.values.is_empty() && cur.children.len() == 1 {
        let (b, child) = cur.children.iter().next().expect("one child");
        prefix.push(*b);
        cur = child;
    }
    let mut child_refs = Vec::new();
    for (b, child) in &cur.children {
        child_refs.push((*b, write_node(child, out)?));
    }
    let offset = out.len();
    if offset > MAX_INDEX_BYTES {
        return Err(Error::LimitExceeded {
            what: "kmod index size",
            value: offset as u64,
            max: MAX_INDEX_BYTES as u64,
        });
    }
    let mut flags = 0;
    if !prefix.is_empty() {
        flags |= NODE_PREFIX;
        out.extend_from_slice(&prefix);
        out.push(0);
    }
    if let (Some(first), Some(last)) = (child_refs.first(), child_refs.last()) {
        flags |= NODE_CHILDS;
        let (first, last) = (first.0, last.0);
        out.push(first);
        out.push(last);
        for b in first..=last {
            let r = child_refs.iter().find(|(c, _)| *c == b).map_or(0, |(_, r)| *r);
            out.extend_from_slice(&r.to_be_bytes());
        }
    }
    if !cur.values.is_empty() {
        flags |= NODE_VALUES;
        out.extend_from_slice(&(cur.values.len() as u32).to_be_bytes());
        for (prio, v) in &cur.values {
            out.extend_from_slice(&prio.to_be_bytes());
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
    }
    Ok(offset as u32 | flags)
}

/// `modules.dep.bin` from `modules.dep` text, keeping only modules `keep` accepts.
pub fn dep_index(dep_text: &str, keep: &dyn Fn(&str) -> bool) -> Result<Vec<u8>> {
    let mut b = IndexBuilder::new();
    for (i, line) in dep_text.lines().enumerate() {
        let Some((path, _)) = line.split_once(':') else {
            continue;
        };
        let name = super::virtio_initramfs::module_name(path.trim());
        if keep(&name) {
            b.insert(&name, line.trim_end(), i as u32)?;
        }
    }
    b.finish()
}

/// `modules.alias.bin` from `modules.alias` text ("alias PATTERN MODULE").
///
/// The text keeps an alias as the module declared it, but the binary index
/// holds it normalised the way modprobe normalises a name it looks up:
/// `-` becomes `_` outside `[...]` classes. Without that, `fs-ext4` (what
/// the kernel asks for when mounting ext4) is never found. A pattern with an
/// unbalanced class is left out, as depmod leaves it out.
pub fn alias_index(alias_text: &str, keep: &dyn Fn(&str) -> bool) -> Result<Vec<u8>> {
    let mut b = IndexBuilder::new();
    for (i, line) in alias_text.lines().enumerate() {
        let mut f = line.split_whitespace();
        if let (Some("alias"), Some(pattern), Some(module)) = (f.next(), f.next(), f.next()) {
            if keep(module) {
                if let Some(pattern) = normalize_alias(pattern) {
                    b.insert(&pattern, module, i as u32)?;
                }
            }
        }
    }
    b.finish()
}

/// An alias pattern with `-` turned into `_` except inside `[...]`; `None`
/// when a class is not closed or a `]` has no `[`.
fn normalize_alias(pattern: &str) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut in_class = false;
    for c in pattern.chars() {
        match c {
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            ']' => return None,
            '-' if !in_class => {
                out.push('_');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    (!in_class).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_normalised_like_modprobe_names() {
        assert_eq!(normalize_alias("fs-ext4").as_deref(), Some("fs_ext4"));
        assert_eq!(
            normalize_alias("scsi:t-0x0[0-9a-f]*").as_deref(),
            Some("scsi:t_0x0[0-9a-f]*")
        );
        assert_eq!(normalize_alias("a[0-9"), None);
        assert_eq!(normalize_alias("a]-"), None);
    }

    #[test]
    fn header_and_prefix_compression() {
        let mut b = IndexBuilder::new();
        b.insert("virtio_blk", "kernel/virtio_blk.ko:", 0).unwrap();
        let out = b.finish().unwrap();
        assert_eq!(&out[0..8], &[0xB0, 0x07, 0xF4, 0x57, 0, 2, 0, 1]);
        let root = u32::from_be_bytes(out[8..12].try_into().unwrap());
        assert_eq!(root & (NODE_PREFIX | NODE_VALUES), NODE_PREFIX | NODE_VALUES);
        let at = (root & NODE_MASK) as usize;
        assert_eq!(&out[at..at + 11], b"virtio_blk\0");
    }
}
