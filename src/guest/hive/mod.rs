//! A read-only reader for Windows registry hive files (the "regf" format:
//! `SOFTWARE`, `SYSTEM`, `NTUSER.DAT`...), written for hostile input.
//!
//! The whole hive is held in memory (hives are tens of megabytes at most).
//! Keys and values are decoded on demand; every count and size read from the
//! hive is capped, and every cell reference is checked to lie inside one
//! hive bin. Transaction logs (`.LOG1`/`.LOG2`) are not replayed: a dirty
//! hive is read as it is on disk and [`Hive::notes`] says so.

mod header;
#[cfg(test)]
mod tests;
mod value;

pub use header::BaseBlock;
pub use value::{Value, ValueType};

use header::{KeyNode, BASE_BLOCK_SIZE, HBIN_HEADER_SIZE, NO_CELL};
use std::collections::HashSet;
use v2x_formats::error::check_limit;
use v2x_formats::{Error, Result};

/// Largest hive file we parse (real SOFTWARE hives are well under this).
pub const MAX_HIVE_SIZE: u64 = 512 << 20;

/// Most subkeys one key may have.
pub const MAX_SUBKEYS: u64 = 1 << 20;

/// Most values one key may have.
pub const MAX_VALUES: u64 = 1 << 16;

/// Largest value data we return.
pub const MAX_VALUE_SIZE: u64 = 16 << 20;

/// Deepest nesting of index-root (`ri`) subkey lists.
pub const MAX_LIST_DEPTH: u32 = 4;

/// Most list cells visited while listing the subkeys of one key.
pub const MAX_LIST_CELLS: u64 = 1 << 16;

/// Most keys [`Hive::walk`] visits.
pub const MAX_KEYS: u64 = 1 << 22;

/// Deepest key path [`Hive::walk`] follows (Windows allows 512 levels).
pub const MAX_KEY_DEPTH: usize = 512;

/// Bytes of data held by one segment of a big-data (`db`) value.
const BIG_DATA_SEGMENT: usize = 16344;

/// A parsed hive file.
pub struct Hive {
    data: Vec<u8>,
    base: BaseBlock,
    bins: Vec<(usize, usize)>,
    notes: Vec<String>,
}

impl Hive {
    /// Checks the base block and the hive bins of a whole hive file.
    pub fn parse(data: Vec<u8>) -> Result<Hive> {
        check_limit("hive file size", data.len() as u64, MAX_HIVE_SIZE)?;
        let base = header::parse_base_block(&data)?;
        let mut notes = Vec::new();
        if !base.checksum_ok {
            notes.push("hive base block checksum does not match".to_string());
        }
        if base.is_dirty() {
            notes.push(format!(
                "hive is dirty (sequence numbers {} and {} differ); its transaction logs were not replayed",
                base.primary_seq, base.secondary_seq
            ));
        }
        let declared_end = BASE_BLOCK_SIZE as u64 + u64::from(base.hbins_size);
        if declared_end > data.len() as u64 {
            notes.push(format!(
                "hive is truncated: the header says {declared_end} bytes, the file has {}",
                data.len()
            ));
        }
        let end = declared_end.min(data.len() as u64) as usize;
        let max_bins = (MAX_HIVE_SIZE / 4096) as usize;
        let bins = header::scan_bins(&data, end, max_bins)?;
        let hive = Hive {
            data,
            base,
            bins,
            notes,
        };
        hive.root()?;
        Ok(hive)
    }

    /// The base block's facts (versions, sequence numbers).
    pub fn base_block(&self) -> &BaseBlock {
        &self.base
    }

    /// Things worth reporting about this hive (dirty, bad checksum, truncated).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The root key.
    pub fn root(&self) -> Result<Key<'_>> {
        self.key(self.base.root_cell)
    }

    /// The key at a `\`-separated path below the root (case-insensitive);
    /// `Ok(None)` when some component does not exist. "" is the root.
    pub fn open(&self, path: &str) -> Result<Option<Key<'_>>> {
        let mut key = self.root()?;
        for comp in path.split('\\').filter(|c| !c.is_empty()) {
            match key.subkey(comp)? {
                Some(k) => key = k,
                None => return Ok(None),
            }
        }
        Ok(Some(key))
    }

    /// Visits every key depth-first with its `\`-separated path from the
    /// root ("" for the root). A key reachable twice (a subkey cycle) is
    /// corruption; the walk is capped by [`MAX_KEYS`] and [`MAX_KEY_DEPTH`].
    pub fn walk(&self, mut visit: impl FnMut(&str, &Key<'_>) -> Result<()>) -> Result<()> {
        let mut seen = HashSet::new();
        let mut stack = vec![(String::new(), 0usize, self.root()?)];
        while let Some((path, depth, key)) = stack.pop() {
            if !seen.insert(key.cell) {
                return Err(Error::corrupt(
                    format!("key {path:?} is reachable twice (subkey cycle)"),
                    key.file_offset(),
                ));
            }
            check_limit("keys walked in one hive", seen.len() as u64, MAX_KEYS)?;
            visit(&path, &key)?;
            let children = key.subkeys()?;
            if !children.is_empty() && depth >= MAX_KEY_DEPTH {
                return Err(Error::LimitExceeded {
                    what: "hive key depth",
                    value: depth as u64 + 1,
                    max: MAX_KEY_DEPTH as u64,
                });
            }
            for child in children.into_iter().rev() {
                let p = if path.is_empty() {
                    child.name().to_string()
                } else {
                    format!("{path}\\{}", child.name())
                };
                stack.push((p, depth + 1, child));
            }
        }
        Ok(())
    }

    /// The file offset of cell `cell` (a hive-bin-relative offset).
    fn file_offset(cell: u32) -> u64 {
        BASE_BLOCK_SIZE as u64 + u64::from(cell)
    }

    /// The body (after the size field) of the allocated cell at `cell`,
    /// checked to lie inside one hive bin.
    fn cell(&self, cell: u32, what: &str) -> Result<&[u8]> {
        let at = Self::file_offset(cell);
        let pos = usize::try_from(at).map_err(|_| Error::corrupt(format!("{what} offset"), at))?;
        let idx = self.bins.partition_point(|&(start, _)| start <= pos);
        let end = match idx.checked_sub(1).map(|i| self.bins[i]) {
            Some((s, e)) if pos >= s + HBIN_HEADER_SIZE && pos < e => e,
            _ => {
                return Err(Error::corrupt(
                    format!("{what} cell offset {cell:#x} is not inside a hive bin"),
                    at,
                ))
            }
        };
        let raw = header::u32_at(&self.data, pos)
            .ok_or_else(|| Error::corrupt(format!("{what} cell header"), at))? as i32;
        if raw >= 0 {
            return Err(Error::corrupt(format!("{what} cell at {cell:#x} is free"), at));
        }
        let size = raw.unsigned_abs() as usize;
        if size < 8 || size > end - pos {
            return Err(Error::corrupt(
                format!("{what} cell of {size} bytes runs past its hive bin (which ends at {end:#x})"),
                at,
            ));
        }
        Ok(&self.data[pos + 4..pos + size])
    }

    fn key(&self, cell: u32) -> Result<Key<'_>> {
        let body = self.cell(cell, "key")?;
        let node = header::parse_key_node(body, Self::file_offset(cell))?;
        Ok(Key {
            hive: self,
            cell,
            node,
        })
    }

    /// Collects the key cells of subkey list `list` into `out`.
    fn subkey_cells(&self, list: u32, depth: u32, visits: &mut u64, out: &mut Vec<u32>) -> Result<()> {
        *visits += 1;
        check_limit("subkey list cells of one key", *visits, MAX_LIST_CELLS)?;
        let at = Self::file_offset(list);
        let body = self.cell(list, "subkey list")?;
        let sig = body.get(0..2).unwrap_or_default();
        let count = u64::from(header::u16_at(body, 2).unwrap_or(0));
        let stride = match sig {
            b"lf" | b"lh" => 8,
            b"li" | b"ri" => 4,
            _ => {
                return Err(Error::corrupt(
                    "subkey list signature is not lf, lh, li or ri",
                    at,
                ))
            }
        };
        if 4 + count as usize * stride > body.len() {
            return Err(Error::corrupt(
                format!("subkey list of {count} entries runs past its cell"),
                at,
            ));
        }
        let entries = (0..count as usize).map(|i| header::u32_at(body, 4 + i * stride).unwrap_or(NO_CELL));
        if sig == b"ri" {
            if depth >= MAX_LIST_DEPTH {
                return Err(Error::LimitExceeded {
                    what: "subkey index-root nesting",
                    value: u64::from(depth) + 1,
                    max: u64::from(MAX_LIST_DEPTH),
                });
            }
            for sub in entries {
                self.subkey_cells(sub, depth + 1, visits, out)?;
            }
        } else {
            check_limit("subkeys of one key", out.len() as u64 + count, MAX_SUBKEYS)?;
            out.extend(entries);
        }
        Ok(())
    }

    fn value_data(&self, vk: &header::ValueKey, at: u64) -> Result<Vec<u8>> {
        let len = vk.data_len as usize;
        check_limit("registry value size", len as u64, MAX_VALUE_SIZE)?;
        if vk.inline {
            if len > 4 {
                return Err(Error::corrupt(format!("inline value data of {len} bytes"), at));
            }
            return Ok(vk.data_cell.to_le_bytes()[..len].to_vec());
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let body = self.cell(vk.data_cell, "value data")?;
        if len > BIG_DATA_SEGMENT && self.base.minor >= 4 && body.starts_with(b"db") {
            return self.big_data(body, len, Self::file_offset(vk.data_cell));
        }
        body.get(..len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::corrupt(format!("value data of {len} bytes runs past its cell"), at))
    }

    /// Joins the segments of a big-data (`db`) record.
    fn big_data(&self, db: &[u8], len: usize, at: u64) -> Result<Vec<u8>> {
        let count = usize::from(header::u16_at(db, 2).unwrap_or(0));
        let list_cell = header::u32_at(db, 4).unwrap_or(NO_CELL);
        if count.saturating_mul(BIG_DATA_SEGMENT) < len {
            return Err(Error::corrupt(
                format!("big data of {len} bytes has only {count} segments"),
                at,
            ));
        }
        let list = self.cell(list_cell, "big data segment list")?;
        if list.len() < count * 4 {
            return Err(Error::corrupt("big data segment list runs past its cell", at));
        }
        let mut out = Vec::with_capacity(len);
        for i in 0..count {
            let want = (len - out.len()).min(BIG_DATA_SEGMENT);
            if want == 0 {
                break;
            }
            let seg_cell = header::u32_at(list, i * 4).unwrap_or(NO_CELL);
            let seg = self.cell(seg_cell, "big data segment")?;
            let part = seg.get(..want).ok_or_else(|| {
                Error::corrupt(
                    "big data segment shorter than its share",
                    Self::file_offset(seg_cell),
                )
            })?;
            out.extend_from_slice(part);
        }
        Ok(out)
    }
}

/// One key of a hive.
#[derive(Clone)]
pub struct Key<'h> {
    hive: &'h Hive,
    cell: u32,
    node: KeyNode,
}

impl<'h> Key<'h> {
    /// The key's name as stored (the root's name is whatever the hive says).
    pub fn name(&self) -> &str {
        &self.node.name
    }

    /// The key's cell offset (stable identity within the hive).
    pub fn cell_offset(&self) -> u32 {
        self.cell
    }

    fn file_offset(&self) -> u64 {
        Hive::file_offset(self.cell)
    }

    /// The subkeys, in stored order.
    pub fn subkeys(&self) -> Result<Vec<Key<'h>>> {
        let n = &self.node;
        check_limit("subkeys of one key", u64::from(n.subkey_count), MAX_SUBKEYS)?;
        if n.subkey_count == 0 || n.subkey_list == NO_CELL {
            return Ok(Vec::new());
        }
        let mut cells = Vec::new();
        self.hive.subkey_cells(n.subkey_list, 0, &mut 0, &mut cells)?;
        cells.into_iter().map(|c| self.hive.key(c)).collect()
    }

    /// The subkey called `name`, compared case-insensitively as Windows does.
    pub fn subkey(&self, name: &str) -> Result<Option<Key<'h>>> {
        Ok(self.subkeys()?.into_iter().find(|k| names_equal(k.name(), name)))
    }

    fn value_cells(&self) -> Result<Vec<u32>> {
        let n = &self.node;
        check_limit("values of one key", u64::from(n.value_count), MAX_VALUES)?;
        if n.value_count == 0 || n.value_list == NO_CELL {
            return Ok(Vec::new());
        }
        let list = self.hive.cell(n.value_list, "value list")?;
        let count = n.value_count as usize;
        if list.len() < count * 4 {
            return Err(Error::corrupt(
                format!("value list of {count} entries runs past its cell"),
                Hive::file_offset(n.value_list),
            ));
        }
        Ok((0..count)
            .map(|i| header::u32_at(list, i * 4).unwrap_or(NO_CELL))
            .collect())
    }

    fn load_value(&self, cell: u32, want: Option<&str>) -> Result<Option<Value>> {
        let at = Hive::file_offset(cell);
        let vk = header::parse_value_key(self.hive.cell(cell, "value")?, at)?;
        if want.is_some_and(|w| !names_equal(&vk.name, w)) {
            return Ok(None);
        }
        let data = self.hive.value_data(&vk, at)?;
        Ok(Some(Value::new(vk.name, vk.data_type, data)))
    }

    /// All values of the key, in stored order.
    pub fn values(&self) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for c in self.value_cells()? {
            out.extend(self.load_value(c, None)?);
        }
        Ok(out)
    }

    /// The value called `name` (case-insensitive; "" is the default value).
    pub fn value(&self, name: &str) -> Result<Option<Value>> {
        for c in self.value_cells()? {
            if let Some(v) = self.load_value(c, Some(name))? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}

/// Registry name comparison: case-insensitive over Unicode uppercase.
pub fn names_equal(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_uppercase)
        .eq(b.chars().flat_map(char::to_uppercase))
}
