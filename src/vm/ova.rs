//! OVA archives: a tar holding an OVF descriptor, an optional `.mf`
//! manifest, and the disks, all read in place (nothing is extracted).
//!
//! Loading walks the tar headers ([`super::tar`]), refuses any member whose
//! name escapes the archive, checks the manifest if asked, then hands the
//! OVF to [`super::ovf::parse`] with a resolver that maps each `ovf:href`
//! to the tar member of that exact name.

use super::manifest::{self, ManifestEntry};
use super::tar::{self, MemberKind, TarMember};
use super::{DiskLocation, SourceKind, VmSpec, MAX_DESCRIPTOR_BYTES};
use std::path::{Path, PathBuf};
use v2x_formats::error::check_limit;
use v2x_formats::file::HostFile;
use v2x_formats::{Error, Result};

/// Reads the OVA at `path`: its OVF, with disks located as tar members.
/// With `verify_manifest`, the `.mf` digests are checked first.
pub fn load(path: &Path, verify_manifest: bool) -> Result<VmSpec> {
    let ova = OvaArchive::open(path)?;
    let mut notes = Vec::new();
    let ovf = ova.ovf_member(&mut notes)?;
    let entries = match ova.manifest_member(ovf)? {
        Some(mf) => {
            let entries = manifest::parse(&ova.read_text(mf, "manifest")?)
                .map_err(|e| e.context_msg(&format!("{}!{}", path.display(), mf.name)))?;
            if verify_manifest {
                manifest::verify(path, &ova.members, &entries)?;
            } else {
                notes.push(format!("manifest {} not checked (verification off)", mf.name));
            }
            Some(entries)
        }
        None => {
            if verify_manifest {
                notes.push("the OVA has no manifest (.mf): nothing was verified".to_string());
            }
            None
        }
    };
    let xml = ova.read_text(ovf, "OVF descriptor")?;
    let mut referenced = Vec::new();
    let mut spec = super::ovf::parse(&xml, path, &mut |href, gzip| {
        let loc = ova.resolve(href, gzip)?;
        if let DiskLocation::Member { member, .. } = &loc {
            referenced.push(member.clone());
        }
        Ok(loc)
    })?;
    spec.source_kind = SourceKind::Ova;
    spec.source_path = path.to_path_buf();
    if let Some(entries) = &entries {
        notes.extend(unlisted_notes(&ovf.name, &referenced, entries));
    }
    for m in &ova.members {
        let known = m.name == ovf.name
            || referenced.contains(&m.name)
            || has_ext(&m.name, ".mf")
            || has_ext(&m.name, ".cert");
        if m.kind == MemberKind::File && has_ext(&m.name, ".cert") {
            notes.push(format!("certificate {} not checked", m.name));
        }
        // The OVF parser already notes files it names but does not convert.
        let noted = spec.notes.iter().any(|n| n.contains(&format!("'{}'", m.name)));
        if m.kind == MemberKind::File && !known && !noted {
            notes.push(format!("member {} is not referenced by the OVF; ignored", m.name));
        }
    }
    spec.notes.extend(notes);
    Ok(spec)
}

/// Notes for the OVF and the referenced members the manifest does not list.
pub fn unlisted_notes(ovf: &str, referenced: &[String], entries: &[ManifestEntry]) -> Vec<String> {
    std::iter::once(ovf)
        .chain(referenced.iter().map(String::as_str))
        .filter(|name| !entries.iter().any(|e| e.name.trim_start_matches("./") == *name))
        .map(|name| format!("member {name} is not listed in the manifest; not verified"))
        .collect()
}

/// An OVA whose tar headers have been walked.
#[derive(Debug)]
pub struct OvaArchive {
    /// The archive's path.
    pub path: PathBuf,
    /// Its members in archive order (names cleaned, escapes refused).
    pub members: Vec<TarMember>,
    file: HostFile,
}

impl OvaArchive {
    /// Opens the tar at `path` and walks its headers.
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_host_file(HostFile::open(path)?)
    }

    /// Walks the headers of an already open archive (a memory-backed one
    /// for fuzzing).
    pub fn from_host_file(file: HostFile) -> Result<Self> {
        let members = tar::walk(&file)?;
        Ok(OvaArchive {
            path: file.path().to_path_buf(),
            members,
            file,
        })
    }

    /// The OVF descriptor member: the only `.ovf` member. The OVF standard
    /// puts it first; elsewhere it is accepted with a note.
    pub fn ovf_member(&self, notes: &mut Vec<String>) -> Result<&TarMember> {
        let mut ovfs = self
            .members
            .iter()
            .filter(|m| m.kind == MemberKind::File && has_ext(&m.name, ".ovf"));
        let first = ovfs
            .next()
            .ok_or_else(|| Error::not_found(format!("{} holds no .ovf descriptor", self.path.display())))?;
        if let Some(second) = ovfs.next() {
            return Err(Error::corrupt(
                format!(
                    "{} holds several .ovf descriptors ({}, {})",
                    self.path.display(),
                    first.name,
                    second.name
                ),
                second.header_offset,
            ));
        }
        if self.members.first().map(|m| &m.name) != Some(&first.name) {
            notes.push(format!(
                "the OVF descriptor {} is not the OVA's first member",
                first.name
            ));
        }
        Ok(first)
    }

    /// The manifest member: the `.mf` named like the OVF, else the only `.mf`.
    pub fn manifest_member(&self, ovf: &TarMember) -> Result<Option<&TarMember>> {
        let mfs: Vec<&TarMember> = self
            .members
            .iter()
            .filter(|m| m.kind == MemberKind::File && has_ext(&m.name, ".mf"))
            .collect();
        let stem = &ovf.name[..ovf.name.len() - ".ovf".len()];
        if let Some(m) = mfs.iter().find(|m| m.name[..m.name.len() - ".mf".len()] == *stem) {
            return Ok(Some(m));
        }
        match mfs.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            [a, b, ..] => Err(Error::corrupt(
                format!(
                    "{} holds several manifests ({}, {}) and none is named after {}",
                    self.path.display(),
                    a.name,
                    b.name,
                    ovf.name
                ),
                b.header_offset,
            )),
        }
    }

    /// A small text member (OVF, manifest), capped at [`MAX_DESCRIPTOR_BYTES`].
    pub fn read_text(&self, m: &TarMember, what: &'static str) -> Result<String> {
        check_limit(what, m.len, MAX_DESCRIPTOR_BYTES)?;
        let bytes = self.file.read_vec(m.offset, m.len as usize)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::corrupt(
                format!("{}!{}: {what} is not UTF-8", self.path.display(), m.name),
                m.offset + e.utf8_error().valid_up_to() as u64,
            )
        })?;
        Ok(text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text))
    }

    /// Maps an OVF `ovf:href` to the member of exactly that name.
    pub fn resolve(&self, href: &str, gzip: bool) -> Result<DiskLocation> {
        if href.contains("://") {
            return Err(Error::unsupported(format!(
                "{}: file '{href}' is a URL; only files inside the OVA are read",
                self.path.display()
            )));
        }
        if tar::escapes(href) {
            return Err(Error::Denied(format!(
                "{}: the OVF names file '{href}', which escapes the archive",
                self.path.display()
            )));
        }
        // Member names lose a leading "./" in the walk; so does the href.
        let name = tar::clean_name(href, 0)?;
        let mut found = self.members.iter().filter(|m| m.name == name);
        let m = match (found.next(), found.next()) {
            (Some(m), None) => m,
            (None, _) => {
                return Err(Error::not_found(format!(
                    "the OVF names file '{href}', which is not a member of {}",
                    self.path.display()
                )))
            }
            (Some(_), Some(b)) => {
                return Err(Error::corrupt(
                    format!("{}: member '{href}' appears twice", self.path.display()),
                    b.header_offset,
                ))
            }
        };
        if m.kind != MemberKind::File {
            return Err(Error::unsupported(format!(
                "{}: member '{href}' is a {:?}, not a regular file",
                self.path.display(),
                m.kind
            )));
        }
        Ok(DiskLocation::Member {
            tar: self.path.clone(),
            member: m.name.clone(),
            offset: m.offset,
            len: m.len,
            gzip,
        })
    }
}

/// Whether `name` ends with `ext` (ASCII case-insensitive), with a stem before it.
fn has_ext(name: &str, ext: &str) -> bool {
    name.len() > ext.len()
        && name.is_char_boundary(name.len() - ext.len())
        && name[name.len() - ext.len()..].eq_ignore_ascii_case(ext)
}

/// Walks `data` as an OVA and parses its manifest: the fuzz target `ova`.
pub fn fuzz(data: &[u8]) {
    let Ok(ova) = OvaArchive::from_host_file(HostFile::from_bytes("fuzz.ova", data.to_vec())) else {
        return;
    };
    let mut notes = Vec::new();
    let Ok(ovf) = ova.ovf_member(&mut notes) else {
        return;
    };
    if let Ok(Some(mf)) = ova.manifest_member(ovf) {
        if let Ok(text) = ova.read_text(mf, "manifest") {
            if let Ok(entries) = manifest::parse(&text) {
                let _ = unlisted_notes(&ovf.name, &[], &entries);
                for e in entries.iter().take(16) {
                    let _ = ova.resolve(&e.name, false);
                }
            }
        }
    }
    let _ = ova.read_text(ovf, "OVF descriptor");
}

#[cfg(test)]
#[path = "ova_tests.rs"]
mod tests;
