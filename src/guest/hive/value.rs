//! Registry values: their types and typed views of their data.

use super::header::utf16le;

/// The registry data type of a value (`REG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// REG_NONE (0).
    None,
    /// REG_SZ (1): a UTF-16LE string.
    Sz,
    /// REG_EXPAND_SZ (2): a UTF-16LE string with `%VARIABLES%`.
    ExpandSz,
    /// REG_BINARY (3).
    Binary,
    /// REG_DWORD (4): little-endian u32.
    Dword,
    /// REG_DWORD_BIG_ENDIAN (5).
    DwordBe,
    /// REG_LINK (6): a UTF-16LE symbolic link target.
    Link,
    /// REG_MULTI_SZ (7): NUL-separated UTF-16LE strings.
    MultiSz,
    /// REG_QWORD (11): little-endian u64.
    Qword,
    /// Any other type number (resource lists, application-defined types).
    Other(u32),
}

impl From<u32> for ValueType {
    fn from(t: u32) -> Self {
        match t {
            0 => ValueType::None,
            1 => ValueType::Sz,
            2 => ValueType::ExpandSz,
            3 => ValueType::Binary,
            4 => ValueType::Dword,
            5 => ValueType::DwordBe,
            6 => ValueType::Link,
            7 => ValueType::MultiSz,
            11 => ValueType::Qword,
            other => ValueType::Other(other),
        }
    }
}

/// One value of a key, with its data read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    name: String,
    raw_type: u32,
    data: Vec<u8>,
}

impl Value {
    pub(super) fn new(name: String, raw_type: u32, data: Vec<u8>) -> Self {
        Self { name, raw_type, data }
    }

    /// The value name ("" for the key's default value).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The data type.
    pub fn value_type(&self) -> ValueType {
        ValueType::from(self.raw_type)
    }

    /// The data type number as stored.
    pub fn raw_type(&self) -> u32 {
        self.raw_type
    }

    /// The data bytes as stored.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// A REG_SZ, REG_EXPAND_SZ or REG_LINK value as text, cut at the first
    /// NUL (Windows strings often carry a terminator and sometimes garbage after it).
    pub fn as_string(&self) -> Option<String> {
        match self.value_type() {
            ValueType::Sz | ValueType::ExpandSz | ValueType::Link => {
                let s = utf16le(&self.data);
                Some(match s.find('\0') {
                    Some(i) => s[..i].to_string(),
                    None => s,
                })
            }
            _ => None,
        }
    }

    /// A REG_MULTI_SZ value as its list of strings (ends at the first empty string).
    pub fn as_multi_string(&self) -> Option<Vec<String>> {
        if self.value_type() != ValueType::MultiSz {
            return None;
        }
        Some(
            utf16le(&self.data)
                .split('\0')
                .take_while(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    /// A 4-byte REG_DWORD or REG_DWORD_BIG_ENDIAN value.
    pub fn as_u32(&self) -> Option<u32> {
        let b: [u8; 4] = self.data.as_slice().try_into().ok()?;
        match self.value_type() {
            ValueType::Dword => Some(u32::from_le_bytes(b)),
            ValueType::DwordBe => Some(u32::from_be_bytes(b)),
            _ => None,
        }
    }

    /// An 8-byte REG_QWORD value, or a DWORD widened.
    pub fn as_u64(&self) -> Option<u64> {
        if self.value_type() == ValueType::Qword {
            let b: [u8; 8] = self.data.as_slice().try_into().ok()?;
            return Some(u64::from_le_bytes(b));
        }
        self.as_u32().map(u64::from)
    }
}
