//! OVF manifests (`.mf`): one `ALGO(name)= hex` line per file, checked by
//! hashing each listed tar member in place.
//!
//! Writers differ in spacing: ovftool writes `SHA1(a.ovf)= ab..`, others
//! `SHA256 (a.ovf) = ab..`; both parse. SHA-1, SHA-256 and SHA-512 are
//! understood.

use super::tar::{MemberKind, TarMember};
use rayon::prelude::*;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use std::path::Path;
use v2x_formats::error::check_limit;
use v2x_formats::file::HostFile;
use v2x_formats::{Error, Result};

/// Most lines a manifest may list.
pub const MAX_MANIFEST_ENTRIES: usize = super::tar::MAX_TAR_MEMBERS;
/// Bytes read per `pread` while hashing a member.
pub const HASH_CHUNK: usize = 4 << 20;

/// A digest algorithm a manifest line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgo {
    /// SHA-1 (OVF 1.x, ovftool's default).
    Sha1,
    /// SHA-256 (OVF 2.0, VirtualBox).
    Sha256,
    /// SHA-512.
    Sha512,
}

impl DigestAlgo {
    /// The name as manifests write it.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgo::Sha1 => "SHA1",
            DigestAlgo::Sha256 => "SHA256",
            DigestAlgo::Sha512 => "SHA512",
        }
    }

    /// Digest length, bytes.
    fn len(self) -> usize {
        match self {
            DigestAlgo::Sha1 => 20,
            DigestAlgo::Sha256 => 32,
            DigestAlgo::Sha512 => 64,
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().replace('-', "").as_str() {
            "SHA1" => Some(DigestAlgo::Sha1),
            "SHA256" => Some(DigestAlgo::Sha256),
            "SHA512" => Some(DigestAlgo::Sha512),
            _ => None,
        }
    }
}

/// One manifest line: `algo(name)= digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The algorithm.
    pub algo: DigestAlgo,
    /// The file it names (a tar member name).
    pub name: String,
    /// The expected digest, lowercase hex.
    pub digest: String,
    /// 1-based line number, for messages.
    pub line: usize,
}

/// Parses manifest text. Blank lines are skipped; a line that is not
/// `ALGO(name)= hex` is corrupt; an unknown algorithm is unsupported.
pub fn parse(text: &str) -> Result<Vec<ManifestEntry>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| Error::corrupt(format!("manifest line {}: {why}", i + 1), 0);
        let (lhs, hex) = line.rsplit_once('=').ok_or_else(|| bad("no '='"))?;
        let (algo, rest) = lhs
            .split_once('(')
            .ok_or_else(|| bad("no '(' after the algorithm"))?;
        let (name, tail) = rest
            .rsplit_once(')')
            .ok_or_else(|| bad("no ')' after the file name"))?;
        if !tail.trim().is_empty() {
            return Err(bad("text between ')' and '='"));
        }
        let algo_name = algo.trim();
        let algo = DigestAlgo::from_name(algo_name).ok_or_else(|| {
            Error::unsupported(format!("manifest line {}: digest algorithm '{algo_name}'", i + 1))
        })?;
        let name = name.trim();
        let hex = hex.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(bad("empty file name"));
        }
        if hex.len() != algo.len() * 2 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(&format!(
                "not a {}-digit hex {} digest",
                algo.len() * 2,
                algo.name()
            )));
        }
        check_limit(
            "manifest entries",
            out.len() as u64 + 1,
            MAX_MANIFEST_ENTRIES as u64,
        )?;
        out.push(ManifestEntry {
            algo,
            name: name.to_string(),
            digest: hex,
            line: i + 1,
        });
    }
    Ok(out)
}

/// Hashes every member `entries` list (read in place from the tar at
/// `tar`, in parallel) and compares. A mismatch or a listed member that is
/// missing is an error naming the member.
pub fn verify(tar: &Path, members: &[TarMember], entries: &[ManifestEntry]) -> Result<()> {
    let jobs: Vec<(&ManifestEntry, &TarMember)> = entries
        .iter()
        .map(|e| {
            // Member names lost any leading "./" in the walk.
            let name = e.name.trim_start_matches("./");
            let mut found = members.iter().filter(|m| m.name == name);
            match (found.next(), found.next()) {
                (Some(m), None) if m.kind == MemberKind::File => Ok((e, m)),
                (Some(_), None) => Err(Error::unsupported(format!(
                    "manifest lists '{}', which is not a regular file in {}",
                    e.name,
                    tar.display()
                ))),
                (Some(_), Some(_)) => Err(Error::corrupt(
                    format!(
                        "manifest lists '{}', which appears twice in {}",
                        e.name,
                        tar.display()
                    ),
                    0,
                )),
                (None, _) => Err(Error::not_found(format!(
                    "manifest lists '{}' (line {}), which is not in {}",
                    e.name,
                    e.line,
                    tar.display()
                ))),
            }
        })
        .collect::<Result<_>>()?;
    // Largest first, so one big disk does not start last.
    let mut jobs = jobs;
    jobs.sort_by_key(|(_, m)| std::cmp::Reverse(m.len));
    jobs.par_iter().with_max_len(1).try_for_each(|(e, m)| {
        let file = HostFile::open_range(tar, &m.name, m.offset, m.len)?;
        let got = hash_file(&file, e.algo)?;
        if got != e.digest {
            return Err(Error::corrupt(
                format!(
                    "{}: {} digest is {got}, the manifest (line {}) says {}",
                    file.path().display(),
                    e.algo.name(),
                    e.line,
                    e.digest
                ),
                m.offset,
            ));
        }
        Ok(())
    })
}

/// The digest of all of `file`, lowercase hex, read in [`HASH_CHUNK`] pieces.
pub fn hash_file(file: &HostFile, algo: DigestAlgo) -> Result<String> {
    match algo {
        DigestAlgo::Sha1 => hash_with::<Sha1>(file),
        DigestAlgo::Sha256 => hash_with::<Sha256>(file),
        DigestAlgo::Sha512 => hash_with::<Sha512>(file),
    }
}

fn hash_with<D: Digest>(file: &HostFile) -> Result<String> {
    let mut h = D::new();
    let mut buf = vec![0u8; HASH_CHUNK.min(file.len() as usize)];
    let mut pos = 0u64;
    while pos < file.len() {
        let n = (file.len() - pos).min(buf.len() as u64) as usize;
        file.read_exact_at(pos, &mut buf[..n])?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_variants_parse() {
        let text = "SHA1(a.ovf)= C3BD2579c2edc76ea35b5bde7d4f4e41eab08963\r\n\
                    \n\
                    SHA256 (disk 1.vmdk) = 4a218c15a1e8aed26cb0a2a533562e85a9f28956a6666181d0c9bb7ba58b5b06\n\
                    sha512(x)=\t"
            .to_string()
            + &"ab".repeat(64)
            + "\n";
        let e = parse(&text).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].algo, e[0].name.as_str(), e[0].line),
            (DigestAlgo::Sha1, "a.ovf", 1)
        );
        assert_eq!(e[0].digest, "c3bd2579c2edc76ea35b5bde7d4f4e41eab08963");
        assert_eq!(
            (e[1].algo, e[1].name.as_str()),
            (DigestAlgo::Sha256, "disk 1.vmdk")
        );
        assert_eq!((e[2].algo, e[2].line), (DigestAlgo::Sha512, 4));
    }

    #[test]
    fn bad_lines() {
        for l in [
            "SHA1 a.ovf= 00",
            "SHA1(a.ovf) 00",
            "SHA1(a.ovf)x= c3bd2579c2edc76ea35b5bde7d4f4e41eab08963",
            "SHA1()= c3bd2579c2edc76ea35b5bde7d4f4e41eab08963",
            "SHA1(a)= c3bd2579c2edc76ea35b5bde7d4f4e41eab0896",
            "SHA1(a)= g3bd2579c2edc76ea35b5bde7d4f4e41eab08963",
        ] {
            assert!(matches!(parse(l), Err(Error::Corrupt { .. })), "{l}");
        }
        assert!(matches!(parse("MD5(a)= 00"), Err(Error::Unsupported(_))));
    }

    #[test]
    fn entries_are_capped() {
        let line = format!("SHA1(a)= {}\n", "0".repeat(40));
        let text = line.repeat(MAX_MANIFEST_ENTRIES + 1);
        assert!(matches!(
            parse(&text),
            Err(Error::LimitExceeded {
                what: "manifest entries",
                ..
            })
        ));
    }

    #[test]
    fn known_digests() {
        let f = HostFile::from_bytes("abc", b"abc".to_vec());
        assert_eq!(
            hash_file(&f, DigestAlgo::Sha1).unwrap(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hash_file(&f, DigestAlgo::Sha256).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let empty = HostFile::from_bytes("e", Vec::new());
        assert_eq!(
            hash_file(&empty, DigestAlgo::Sha1).unwrap(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }
}
